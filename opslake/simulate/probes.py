"""Synthetic probes (拨测): HTTP checks of applications and TCP checks of databases.

Every target is checked every 5 minutes, each probe at its own second within the slot.
During a fault a reached application or database answers slower and sometimes not at all.
"""

from __future__ import annotations

import numpy as np

from opslake.simulate.cmdb import CmdbHistory
from opslake.simulate.config import DAY_S, SimulationConfig, iso_ms_many, rng_for
from opslake.simulate.estate import Estate
from opslake.simulate.faults import Impact
from opslake.simulate.truth import Tally

INTERVAL_S = 300
DB_PORTS = {"Dameng": 5236, "Kingbase": 54321, "Oracle": 3306, "OceanBase": 2881}


class ProbeWriter:
    """Probe targets and their baseline latency, fixed for the run."""

    def __init__(
        self, cfg: SimulationConfig, estate: Estate, hist: CmdbHistory, impacts: list[Impact]
    ) -> None:
        self.cfg, self.estate, self.hist = cfg, estate, hist
        rng = rng_for(cfg.seed, "probe-targets")
        self.targets: list[tuple[str, str, str, str]] = []  # probe_id, kind, target, entity
        for eid in estate.ids("app"):
            self.targets.append(
                (f"http-{eid}", "http", f"https://{estate.entities[eid].name}/healthz", eid)
            )
        for eid in estate.ids("db"):
            e = estate.entities[eid]
            self.targets.append(
                (f"tcp-{eid}", "tcp", f"{e.ip}:{DB_PORTS.get(e.vendor, 3306)}", eid)
            )
        n = len(self.targets)
        self.offset = rng.integers(0, 60, n)
        self.base_ms = np.array(
            [rng.uniform(80, 400) if t[1] == "http" else rng.uniform(1, 8) for t in self.targets]
        )
        self.impacts: dict[str, list[Impact]] = {}
        for imp in impacts:
            self.impacts.setdefault(imp.entity_id, []).append(imp)

    def day(self, day: int, probes: Tally, malformed: Tally) -> bytes:
        """The day's results, ordered by time then probe id; one line is cut short."""
        rng = rng_for(self.cfg.seed, "probes", day)
        slots = self.cfg.day_start(day) + np.arange(0, DAY_S, INTERVAL_S)
        n_t, n_s = len(self.targets), len(slots)
        ts = slots[None, :] + self.offset[:, None]  # (targets, slots)
        severity = np.zeros((n_t, n_s))
        for i, (_, _, _, eid) in enumerate(self.targets):
            for imp in self.impacts.get(eid, []):
                hit = (ts[i] >= imp.start) & (ts[i] < imp.end)
                severity[i] = np.where(hit, np.maximum(severity[i], imp.severity), severity[i])
        latency = (
            self.base_ms[:, None] * rng.lognormal(0.0, 0.25, (n_t, n_s)) * (1.0 + 6.0 * severity)
        )
        failed = rng.random((n_t, n_s)) < 0.5 * severity + 0.0005
        kind_pick = rng.integers(0, 3, (n_t, n_s))
        stamps = iso_ms_many(ts.ravel() * 1000)
        latency = np.round(latency, 1).tolist()
        rows: list[tuple[int, str, str]] = []
        for i, (probe_id, kind, target, eid) in enumerate(self.targets):
            if not self.hist.alive(eid, int(slots[0])):
                continue
            head = (
                f'"probe_id": "{probe_id}", "target": "{target}", "entity_id": "{eid}", '
                f'"kind": "{kind}"'
            )
            for j in range(n_s):
                lat, code, error = latency[i][j], "200" if kind == "http" else "null", "null"
                ok = "true"
                if failed[i, j]:
                    ok = "false"
                    pick = int(kind_pick[i, j])
                    if kind == "http" and pick < 2:
                        code = ("503", "504")[pick]
                        error = f'"HTTP {code}"'
                    else:
                        code, lat = "null", 10_000.0
                        error = (
                            '"connection refused"' if kind == "tcp" and pick == 1 else '"timeout"'
                        )
                line = (
                    f'{{"ts": "{stamps[i * n_s + j]}", {head}, "ok": {ok}, '
                    f'"latency_ms": {lat!r}, "status_code": {code}, "error": {error}}}'
                )
                rows.append((int(ts[i, j]), probe_id, line))
        rows.sort(key=lambda r: (r[0], r[1]))
        ymd = self.cfg.day(day)
        probes.add(ymd, len(rows))
        lines = [r[2] for r in rows]
        if lines:  # a result cut off mid-write by the probe agent
            cut = lines[len(lines) // 2]
            lines.insert(len(lines) // 2 + 1, cut[: len(cut) // 2])
        else:
            lines.append('{"ts": ')
        malformed.add(ymd)
        return ("\n".join(lines) + "\n").encode()
