"""Prometheus text exposition (0.0.4, explicit millisecond timestamps), built vectorised.

A line is ``prefix + integer part + fraction + " " + timestamp + "\\n"``; the per-series
prefix (name and label set), the fraction ("." and zero-padded digits) and the timestamp
each come from a small lookup table, so one polars ``concat_str`` builds an hour of lines
and the bytes are Arrow's string buffer, sliced per family to put the ``# HELP`` and
``# TYPE`` lines in front. No Python code runs per sample.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from opslake.simulate.cmdb import CmdbHistory
from opslake.simulate.config import HOUR_S, rng_for
from opslake.simulate.estate import Estate
from opslake.simulate.metrics import FAMILIES, DayValues, MetricModel

_MAX_DECIMALS = 5
#: "" for integers, ".0".."9" for one decimal, ".00".."99" for two, and so on.
_FRACTIONS = pl.Series(
    "frac", [""] + [f".{i:0{k}d}" for k in range(1, _MAX_DECIMALS + 1) for i in range(10**k)]
)
_FRACTION_BASE = {
    0: 0,
    **{k: 1 + sum(10**j for j in range(1, k)) for k in range(1, _MAX_DECIMALS + 1)},
}
#: Hours of the day whose batch carries one deliberately malformed line each.
MALFORMED_HOURS = (3, 11, 19)


def series_prefix(family: str, entity_id: str, instance: str, job: str) -> str:
    """Metric name and label set of one series, with the separating space."""
    return f'{family}{{entity_id="{entity_id}",instance="{instance}",job="{job}"}} '


class Exposition:
    """Formats one hour of all families as the bytes of one landing batch."""

    def __init__(self, model: MetricModel, estate: Estate, hist: CmdbHistory) -> None:
        self.model, self.estate, self.hist = model, estate, hist
        self.per_hour = HOUR_S // model.cfg.step_seconds
        self._cache_key: frozenset[str] | None = None
        self._cache: list[list[str]] = []

    def prefixes(self, at: int) -> list[list[str]]:
        """Per family, the series prefixes with the addresses in effect at ``at``."""
        # Addresses change rarely (in the maintenance window): rebuild only when they do.
        key = frozenset(e for e, (t, _, _) in self.hist.ip_changes.items() if at >= t)
        if key != self._cache_key:
            self._cache_key, self._cache = key, self._build_prefixes(at)
        return self._cache

    def _build_prefixes(self, at: int) -> list[list[str]]:
        out = []
        for fi, ids in enumerate(self.model.series):
            name = FAMILIES[fi].name
            rows = []
            for eid in ids:
                e = self.estate.entities[eid]
                rows.append(series_prefix(name, eid, f"{self.hist.ip_at(e, at)}:{e.port}", e.job))
            out.append(rows)
        return out

    def hour(self, day: int, hour: int, values: list[DayValues]) -> tuple[list[object], int, int]:
        """Chunks of the hour's batch, its well-formed sample count, and malformed count."""
        cfg = self.model.cfg
        h0 = cfg.day_start(day) + hour * HOUR_S
        c0, n_cols = hour * self.per_hour, self.per_hour
        prefixes = self.prefixes(h0)
        flat_prefix: list[str] = []
        sid_parts, hi_parts, frac_parts, col_parts, rows = [], [], [], [], []
        for fi, dv in enumerate(values):
            n_series = dv.q.shape[0]
            block = dv.q[:, c0 : c0 + n_cols]
            sid = np.repeat(np.arange(n_series, dtype=np.uint32) + len(flat_prefix), n_cols)
            col = np.tile(np.arange(n_cols, dtype=np.uint32), n_series)
            q = block.ravel()
            if (dv.valid_cols < c0 + n_cols).any():  # a retired CI stops reporting
                keep = (np.arange(c0, c0 + n_cols)[None, :] < dv.valid_cols[:, None]).ravel()
                sid, col, q = sid[keep], col[keep], q[keep]
            flat_prefix.extend(prefixes[fi])
            scale = dv.scale
            sid_parts.append(sid)
            col_parts.append(col)
            hi_parts.append(q // scale)
            frac_parts.append((q % scale + _FRACTION_BASE[dv.family.decimals]).astype(np.uint32))
            rows.append(len(q))
        ts_text = pl.Series([f" {(h0 + c * cfg.step_seconds) * 1000}\n" for c in range(n_cols)])
        frame = pl.DataFrame(
            {
                "p": pl.Series(flat_prefix).gather(pl.Series(np.concatenate(sid_parts))),
                "hi": np.concatenate(hi_parts),
                "frac": _FRACTIONS.gather(pl.Series(np.concatenate(frac_parts))),
                "ts": ts_text.gather(pl.Series(np.concatenate(col_parts))),
            }
        )
        lines = frame.select(
            pl.concat_str([pl.col("p"), pl.col("hi").cast(pl.String), pl.col("frac"), pl.col("ts")])
        ).to_series()
        arr = lines.to_arrow()
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        arr = arr.cast(pa.large_string())
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
            arr.offset : arr.offset + len(arr) + 1
        ]
        data = memoryview(arr.buffers()[2])
        chunks: list[object] = []
        start = 0
        for fi, n in enumerate(rows):
            if n == 0:
                continue
            fam = values[fi].family
            chunks.append(f"# HELP {fam.name} {fam.help}\n# TYPE {fam.name} gauge\n".encode())
            chunks.append(data[offsets[start] : offsets[start + n]])
            start += n
        bad = self._malformed(day, hour, h0, prefixes, values) if hour in MALFORMED_HOURS else []
        if bad:
            chunks.append("".join(bad).encode())
        return chunks, sum(rows), len(bad)

    def _malformed(
        self, day: int, hour: int, h0: int, prefixes: list[list[str]], values: list[DayValues]
    ) -> list[str]:
        """One broken line: an unquoted label value, a non-numeric value, or a comma decimal."""
        rng = rng_for(self.model.cfg.seed, "prom-malformed", day, hour)
        candidates = [fi for fi, p in enumerate(prefixes) if p]
        fi = candidates[int(rng.integers(len(candidates)))]
        row = int(rng.integers(len(prefixes[fi])))
        prefix = prefixes[fi][row]
        ts = f"{h0 * 1000}"
        variant = MALFORMED_HOURS.index(hour) % 3
        if variant == 0:
            job = self.estate.entities[self.model.series[fi][row]].job
            return [prefix.replace(f'job="{job}"', f"job={job}") + f"1 {ts}\n"]
        if variant == 1:
            return [f"{prefix}N/A {ts}\n"]
        q = int(values[fi].q[row, hour * self.per_hour])
        scale = values[fi].scale
        return [f"{prefix}{q // scale},{q % scale:0{max(1, values[fi].family.decimals)}d} {ts}\n"]
