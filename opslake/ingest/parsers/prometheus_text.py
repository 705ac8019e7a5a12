"""Prometheus text exposition format (0.0.4) → bronze samples, vectorised with numpy and polars.

Lines and their space-separated fields are found by byte scans in numpy and sliced out of
the batch as Arrow strings without a copy; only lines of another shape (label values with
spaces, tabs, comments after whitespace, junk) take the regular-expression path. Label sets
repeat for every sample of a series, so each distinct ``name{labels}`` is parsed in Python
once per process (``series_cache.SeriesCache``): a scrape of known series runs no Python per line.
"""

from __future__ import annotations

import re
from datetime import UTC

import numpy as np
import polars as pl
import pyarrow as pa

from opslake.ingest.parsers import ParseResult, Reject
from opslake.ingest.parsers.series_cache import SeriesCache
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import TS

BRONZE_SCHEMA = pa.schema(
    [
        ("ts", TS),
        ("metric", pa.string()),
        ("label_set", pa.string()),
        ("value", pa.float64()),
        ("batch_id", pa.string()),
        ("received_at", TS),
    ]
)

_SAMPLE = r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
# Bytes a metric name starts with: a line starting with one is no comment or blank line.
_NAME_START = np.zeros(256, bool)
_NAME_START[[ord(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:"]] = True
# Bytes of whitespace other than space and newline (\t \v \f \r), and every non-ASCII byte
# (Unicode spaces are multi-byte): a timestamp holding one is left to the regex path.
_ODD = bytes(1 if b in (9, 11, 12, 13) or b >= 0x80 else 0 for b in range(256))


def parse_label_set(text: str) -> dict[str, str]:
    """Parse ``{a="1",b="x"}`` into a dict; raises ``ValueError`` saying what is wrong."""
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError("label set must be enclosed in braces")
    body, pos, labels = text[1:-1], 0, {}
    while pos < len(body):
        m = _LABEL.match(body, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad label syntax at {body[pos : pos + 30]!r}")
        name, value = m.group(1), m.group(2)
        if "\\" in value:
            value = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group()], value)
        if name in labels:
            raise ValueError(f"duplicate label {name!r}")
        labels[name] = value
        pos = m.end()
        if m.group(3) == "" and pos < len(body):
            raise ValueError(f"missing comma before {body[pos : pos + 30]!r}")
    return labels


def canonical(labels: dict[str, str]) -> str:
    """A label set as one string with sorted names: the series identity."""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _parse_series(text: str) -> tuple[str | None, str | None, str | None]:
    """Metric name, canonical label set and error of one ``name{labels}`` string."""
    name, brace, rest = text.partition("{")
    if not _NAME.match(name):
        return None, None, f"bad metric name {name!r}"
    try:
        return name, canonical(parse_label_set(brace + rest) if brace else {}), None
    except ValueError as exc:
        return None, None, f"bad label set: {exc}"


_SERIES = SeriesCache(
    lambda texts: [_parse_series(t) for t in texts],
    pl.String,
    {"metric": pl.String, "label_set": pl.String, "series_error": pl.String},
)


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one batch of exposition text; samples without a timestamp take the batch time."""
    try:
        # ASCII is UTF-8, and checking that copies nothing, where decoding built a str of
        # the whole batch only to drop it.
        data.isascii() or data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParseResult(
            BRONZE_SCHEMA.empty_table(),
            [Reject(0, repr(data[:200]), f"batch is not UTF-8 text: {exc}")],
        )
    lines = _Lines(data)
    rows = lines.samples()
    matched = rows.get_column("series").is_not_null()
    if matched.all():
        rows = rows.hstack(_SERIES.lookup(rows.get_column("series")))
    else:  # lines no pattern matched: rejected below, with no series to look up
        known = rows.filter(matched)
        rows = pl.concat(
            [known.hstack(_SERIES.lookup(known.get_column("series"))), rows.filter(~matched)],
            how="diagonal",
        ).sort("line_no")
    value = pl.col("value_raw").cast(pl.Float64, strict=False)
    ts_ms = pl.col("ts_raw").cast(pl.Int64, strict=False)
    good = (
        pl.col("series_error").is_null()
        & value.is_not_null()
        & (pl.col("ts_raw").is_null() | ts_ms.is_not_null())
    )
    # One pass for the casts and the test (polars computes each cast once); series is
    # null only where series_error is set.
    rows = rows.with_columns(value.alias("value"), ts_ms.alias("ts_ms"), good.alias("good"))
    reason = (
        pl.when(pl.col("series").is_null())
        .then(pl.lit("not a sample line: expected 'name{labels} value [timestamp_ms]'"))
        .when(pl.col("series_error").is_not_null())
        .then(pl.col("series_error"))
        .when(pl.col("value").is_null())
        .then(pl.lit("value is not a number: ") + pl.col("value_raw"))
        .when(pl.col("ts_raw").is_not_null() & pl.col("ts_ms").is_null())
        .then(pl.lit("timestamp is not an integer of milliseconds: ") + pl.col("ts_raw"))
    )
    rejects: list[Reject] = []
    if not rows.get_column("good").all():
        bad = rows.filter(~pl.col("good")).select("line_no", reason)
        raw = lines.text(bad.get_column("line_no").to_numpy() - 1).to_list()
        rejects = [
            Reject(int(n), line, why) for (n, why), line in zip(bad.iter_rows(), raw, strict=True)
        ]
        rows = rows.filter("good")

    received = batch.received.astimezone(UTC)
    default_ms = int(received.timestamp() * 1000)
    table = rows.select(
        pl.from_epoch(pl.col("ts_ms").fill_null(default_ms), time_unit="ms")
        .dt.cast_time_unit("us")
        .dt.replace_time_zone("UTC")
        .alias("ts"),
        pl.col("metric"),
        pl.col("label_set"),
        pl.col("value"),
        pl.lit(batch.batch_id).alias("batch_id"),
        pl.lit(received).cast(pl.Datetime("us", "UTC")).alias("received_at"),
    )
    # Newest compat level: strings leave polars as views, without a copy before the cast.
    return ParseResult(
        table.to_arrow(compat_level=pl.CompatLevel.newest()).cast(BRONZE_SCHEMA), rejects
    )


class _Lines:
    """Every line of a batch, and the fields of the plain ones, found by byte scans.

    A plain line starts with a metric name and splits on one or two single spaces into
    series, value and (optional) timestamp, exactly as ``str.splitn(" ", 3)`` would, with
    no other whitespace in the timestamp: every scraped sample whose label values hold no
    space. Lines are split on ``\n`` with one trailing ``\r`` dropped.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        buf = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(buf == 0x0A)
        if data and data[-1] != 0x0A:
            ends = np.append(ends, len(data))
        starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else ends
        self.starts = starts
        self.ends = ends - ((ends > starts) & (buf[ends - 1] == 0x0D))
        spaces = np.flatnonzero(buf == 0x20)
        first = np.searchsorted(spaces, starts)
        n_spaces = np.searchsorted(spaces, self.ends) - first
        nonempty = self.ends > starts
        lead = buf[np.where(nonempty, starts, 0)] if len(buf) else starts
        plain = nonempty & _NAME_START[lead] & ((n_spaces == 1) | (n_spaces == 2))
        top = max(len(spaces) - 1, 0)
        self.sp1 = spaces[np.minimum(first, top)] if len(spaces) else starts
        self.sp2 = spaces[np.minimum(first + 1, top)] if len(spaces) else starts
        self.has_ts = n_spaces == 2
        # What splitting on spaces takes as a sample (so the regex never sees it): a series
        # ending in "}" or holding no "{" at all.
        unclosed = plain & (buf[np.maximum(self.sp1 - 1, 0)] != 0x7D)
        if unclosed.any():
            braces = np.flatnonzero(buf == 0x7B)
            plain &= ~unclosed | (
                np.searchsorted(braces, self.sp1) == np.searchsorted(braces, starts)
            )
        if not data.isascii() or any(c in data for c in (b"\t", b"\v", b"\f", b"\r")):
            odd = np.flatnonzero(np.frombuffer(data.translate(_ODD), np.uint8))
            odd_in_ts = np.searchsorted(odd, self.ends) > np.searchsorted(odd, self.sp2 + 1)
            plain &= ~(self.has_ts & odd_in_ts)
        self.plain = plain
        # Lines for the regex path: not plain, and not a comment or empty line on their face.
        self.other = ~plain & nonempty & (lead != 0x23)

    def text(self, index: np.ndarray) -> pl.Series:
        """The lines at ``index`` (ascending), as read."""
        return slices(self.data, self.starts[index], self.ends[index])

    def samples(self) -> pl.DataFrame:
        """(line_no, series, value_raw, ts_raw) of every line that is no comment or blank."""
        at = np.flatnonzero(self.plain)
        starts, ends, sp1, sp2, has_ts = (
            a[at] for a in (self.starts, self.ends, self.sp1, self.sp2, self.has_ts)
        )
        rows = pl.DataFrame(
            {
                "line_no": at + 1,
                "series": slices(self.data, starts, sp1),
                "value_raw": slices(self.data, sp1 + 1, np.where(has_ts, sp2, ends)),
                "ts_raw": slices(self.data, np.where(has_ts, sp2 + 1, ends), ends),
            }
        )
        if not has_ts.all():
            rows = rows.with_columns(
                pl.when(pl.Series(has_ts)).then(pl.col("ts_raw")).alias("ts_raw")
            )
        if not self.other.any():
            return rows
        other = np.flatnonzero(self.other)
        odd = pl.DataFrame({"line_no": other + 1, "raw": self.text(other)})
        return pl.concat([rows, _regex_samples(odd)]).sort("line_no")


def _regex_samples(lines: pl.DataFrame) -> pl.DataFrame:
    """(line_no, series, value_raw, ts_raw) of lines of any shape; series is null for junk."""
    lines = lines.filter(~pl.col("raw").str.contains(r"^\s*(#|$)"))
    # Splitting on single spaces is right for every line whose label values hold no
    # spaces; the rest goes through the full regular expression.
    split = lines.with_columns(pl.col("raw").str.splitn(" ", 3).alias("f")).unnest("f")
    series, value, ts = pl.col("field_0"), pl.col("field_1"), pl.col("field_2")
    simple = (
        (~series.str.contains("{", literal=True) | series.str.ends_with("}"))
        & value.is_not_null()
        & (ts.is_null() | ~ts.str.contains(r"\s"))
    )
    split = split.with_columns(simple.fill_null(False).alias("simple"))
    fast = split.filter("simple").select(
        "line_no", series.alias("series"), value.alias("value_raw"), ts.alias("ts_raw")
    )
    matched = (
        split.filter(~pl.col("simple"))
        .with_columns(pl.col("raw").str.strip_chars().str.extract_groups(_SAMPLE).alias("m"))
        .unnest("m")
    )
    slow = matched.select(
        "line_no",
        (pl.col("1") + pl.col("2").fill_null("")).alias("series"),
        pl.col("3").alias("value_raw"),
        pl.col("4").alias("ts_raw"),
    )
    return pl.concat([fast, slow])


def slices(data: bytes, starts: np.ndarray, ends: np.ndarray, *, binary: bool = False) -> pl.Series:
    """``data[starts[i]:ends[i]]`` of ascending, disjoint ranges as strings (or bytes).

    Arrow offsets alternate range and gap, so the array is a view of ``data``; keeping
    every other element (the ranges) is the one copy. Strings need UTF-8 ``data`` cut at
    character boundaries.
    """
    if not len(starts):
        return pl.Series(dtype=pl.Binary if binary else pl.String)
    offsets = np.empty(2 * len(starts), np.int64)
    offsets[0::2], offsets[1::2] = starts, ends
    pieces = pa.Array.from_buffers(
        pa.large_binary() if binary else pa.large_string(),
        len(offsets) - 1,
        [None, pa.py_buffer(offsets), pa.py_buffer(data)],
    )
    # Indexing with a numpy array, not gather_every: no trip through the expression engine.
    return pl.from_arrow(pieces)[np.arange(0, len(offsets) - 1, 2, dtype=np.uint32)]
