"""Metric families and their values, generated for all series × timestamps of a day at once.

A value is ``level × business-day cycle + slow trend``, with relative noise, fault effects,
and clipping to the family's range (ratios stay in [0, 1]). The cycle peaks in Asia/Shanghai
working hours and is lower at weekends. Values are rounded to the family's decimals here,
so the numbers alert rules see are exactly the numbers printed in the exposition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from opslake.simulate.cmdb import CmdbHistory
from opslake.simulate.config import DAY_S, LOCAL_OFFSET_S, SimulationConfig, rng_for
from opslake.simulate.estate import Estate
from opslake.simulate.faults import Impact


@dataclass(frozen=True)
class Family:
    """One metric family: which CI types report it and how its values behave."""

    name: str
    help: str
    types: tuple[str, ...]
    decimals: int
    base: tuple[float, float]  # per-series level, drawn uniformly
    swing: float  # relative amplitude of the business-day cycle
    noise: float  # relative standard deviation
    hi: float | None = None  # upper bound (1.0 for ratios)
    trend: tuple[float, float] = (0.0, 0.0)  # absolute change per day (capacity fills up)
    hot: tuple[float, float, float] | None = None  # (share, lo, hi): series near a threshold
    fault: tuple[str, float] | None = None  # ("up", target) | ("mult", k) | ("down", k)


_R = 1.0
FAMILIES: tuple[Family, ...] = (
    # facility
    Family(
        "rack_inlet_temperature_celsius",
        "Rack inlet air temperature.",
        ("rack",),
        2,
        (21.0, 26.0),
        0.04,
        0.01,
        fault=("up", 36.0),
    ),
    Family(
        "rack_humidity_ratio",
        "Rack relative humidity.",
        ("rack",),
        3,
        (0.40, 0.55),
        0.02,
        0.01,
        hi=_R,
    ),
    Family(
        "pdu_power_watts",
        "Active power drawn through the PDU.",
        ("pdu",),
        1,
        (2500.0, 6500.0),
        0.15,
        0.02,
        fault=("mult", 0.35),
    ),
    Family(
        "pdu_load_ratio",
        "PDU load as a share of its rated current.",
        ("pdu",),
        4,
        (0.30, 0.60),
        0.15,
        0.02,
        hi=_R,
        fault=("up", 0.97),
    ),
    Family(
        "ups_load_ratio",
        "UPS output load as a share of capacity.",
        ("ups",),
        4,
        (0.35, 0.60),
        0.10,
        0.01,
        hi=_R,
        fault=("up", 0.95),
    ),
    Family(
        "ups_battery_charge_ratio",
        "UPS battery state of charge.",
        ("ups",),
        4,
        (0.97, 1.0),
        0.0,
        0.002,
        hi=_R,
        fault=("down", 0.6),
    ),
    Family(
        "cooling_supply_temperature_celsius",
        "Supply air temperature of the cooling unit.",
        ("cooling",),
        2,
        (17.0, 20.0),
        0.03,
        0.01,
        fault=("up", 27.0),
    ),
    Family(
        "cooling_load_ratio",
        "Cooling unit load as a share of capacity.",
        ("cooling",),
        4,
        (0.40, 0.70),
        0.10,
        0.02,
        hi=_R,
        fault=("up", 0.98),
    ),
    # government cloud
    Family(
        "node_cpu_utilisation_ratio",
        "CPU busy ratio.",
        ("host", "vm"),
        4,
        (0.08, 0.45),
        0.8,
        0.06,
        hi=_R,
        hot=(0.03, 0.55, 0.62),
        fault=("up", 0.98),
    ),
    Family(
        "node_memory_utilisation_ratio",
        "Memory in use as a share of total.",
        ("host", "vm"),
        4,
        (0.35, 0.75),
        0.10,
        0.01,
        hi=_R,
        fault=("up", 0.95),
    ),
    Family(
        "node_filesystem_used_ratio",
        "Root filesystem used ratio.",
        ("host", "vm"),
        4,
        (0.20, 0.70),
        0.0,
        0.0005,
        hi=_R,
        trend=(0.0005, 0.004),
        hot=(0.04, 0.82, 0.86),
    ),
    Family(
        "node_network_receive_bytes_per_second",
        "Bytes received per second, all NICs.",
        ("host", "vm"),
        0,
        (2e5, 5e7),
        0.9,
        0.10,
        fault=("down", 0.6),
    ),
    Family(
        "container_cpu_utilisation_ratio",
        "Container CPU usage as a share of its limit.",
        ("container",),
        4,
        (0.05, 0.50),
        0.8,
        0.08,
        hi=_R,
        fault=("up", 0.99),
    ),
    Family(
        "container_memory_utilisation_ratio",
        "Container memory as a share of its limit.",
        ("container",),
        4,
        (0.30, 0.80),
        0.05,
        0.01,
        hi=_R,
        fault=("up", 0.97),
    ),
    Family(
        "storage_pool_used_ratio",
        "Storage pool capacity used.",
        ("storage",),
        4,
        (0.40, 0.80),
        0.0,
        0.0005,
        hi=_R,
        trend=(0.001, 0.006),
        hot=(0.2, 0.83, 0.86),
    ),
    Family(
        "storage_pool_latency_seconds",
        "Average I/O latency of the storage pool.",
        ("storage",),
        5,
        (0.0008, 0.004),
        0.5,
        0.10,
        fault=("up", 0.12),
    ),
    Family(
        "switch_interface_utilisation_ratio",
        "Busiest uplink utilisation.",
        ("switch",),
        4,
        (0.10, 0.50),
        0.7,
        0.05,
        hi=_R,
        fault=("up", 0.97),
    ),
    Family(
        "switch_interface_errors_per_second",
        "Interface input and output errors per second.",
        ("switch",),
        2,
        (0.01, 0.30),
        0.2,
        0.30,
        fault=("up", 40.0),
    ),
    # government applications
    Family(
        "http_requests_per_second",
        "HTTP requests served per second.",
        ("app", "svc"),
        2,
        (5.0, 400.0),
        1.2,
        0.08,
        fault=("down", 0.5),
    ),
    Family(
        "http_error_ratio",
        "Share of HTTP responses that are 5xx.",
        ("app", "svc"),
        5,
        (0.001, 0.012),
        0.2,
        0.15,
        hi=_R,
        fault=("up", 0.25),
    ),
    Family(
        "http_request_duration_p95_seconds",
        "95th percentile of HTTP request duration.",
        ("app", "svc"),
        4,
        (0.08, 0.45),
        0.4,
        0.08,
        fault=("up", 3.0),
    ),
    # public support platforms
    Family(
        "db_connections_in_use",
        "Database connections in use.",
        ("db",),
        0,
        (30.0, 220.0),
        0.6,
        0.05,
        fault=("mult", 2.5),
    ),
    Family(
        "db_query_duration_p95_seconds",
        "95th percentile of query duration.",
        ("db",),
        5,
        (0.005, 0.06),
        0.4,
        0.10,
        fault=("up", 2.0),
    ),
    Family(
        "middleware_thread_pool_utilisation_ratio",
        "Busy share of the worker thread pool.",
        ("middleware",),
        4,
        (0.20, 0.50),
        0.6,
        0.05,
        hi=_R,
        fault=("up", 0.99),
    ),
    Family(
        "queue_depth_messages",
        "Messages waiting in the queue.",
        ("queue",),
        0,
        (50.0, 800.0),
        0.8,
        0.10,
        fault=("mult", 20.0),
    ),
    Family(
        "identity_auth_failures_per_second",
        "Failed authentications per second.",
        ("identity",),
        3,
        (0.1, 1.0),
        0.8,
        0.20,
        fault=("mult", 12.0),
    ),
    Family(
        "process_cpu_utilisation_ratio",
        "CPU share used by the platform process.",
        ("db", "middleware", "queue", "identity"),
        4,
        (0.10, 0.40),
        0.6,
        0.05,
        hi=_R,
        fault=("up", 0.95),
    ),
    # security resources
    Family(
        "firewall_sessions_active",
        "Concurrent sessions through the firewall.",
        ("firewall",),
        0,
        (2e4, 4e5),
        0.8,
        0.04,
        fault=("mult", 1.5),
    ),
    Family(
        "waf_blocked_requests_per_second",
        "Requests blocked by the WAF per second.",
        ("waf",),
        3,
        (0.5, 8.0),
        0.5,
        0.30,
        fault=("mult", 10.0),
    ),
    Family(
        "ids_alerts_per_minute",
        "IDS signature hits per minute.",
        ("ids",),
        2,
        (0.5, 6.0),
        0.3,
        0.30,
        fault=("mult", 8.0),
    ),
    Family(
        "bastion_sessions_active",
        "Open operator sessions on the bastion host.",
        ("bastion",),
        0,
        (3.0, 40.0),
        1.5,
        0.10,
    ),
    Family(
        "security_device_cpu_utilisation_ratio",
        "Data-plane CPU of the security device.",
        ("firewall", "waf", "ids", "bastion"),
        4,
        (0.10, 0.40),
        0.5,
        0.04,
        hi=_R,
        fault=("up", 0.96),
    ),
)
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}


def business_cycle(ts: np.ndarray) -> np.ndarray:
    """Load profile in [0, 1]: peaks at 10:00 and 15:00 local time, low at night and weekends."""
    local = ts + LOCAL_OFFSET_S
    hour = (local % DAY_S) / 3600.0
    peak = np.maximum(
        np.exp(-0.5 * ((hour - 10.0) / 1.8) ** 2), np.exp(-0.5 * ((hour - 15.0) / 2.0) ** 2)
    )
    weekday = (local // DAY_S + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return np.where(weekday >= 5, 0.35, 1.0) * (0.08 + 0.92 * peak)


@dataclass
class DayValues:
    """One day of one family: scaled integer values and how many columns each series has."""

    family: Family
    q: np.ndarray  # int64 (series, timestamps): value × 10**decimals
    valid_cols: np.ndarray  # per series: columns before it was retired (T when alive)

    @property
    def scale(self) -> int:
        """Divide ``q`` by this to get the printed value."""
        return 10**self.family.decimals


class MetricModel:
    """Series of every family and their per-series parameters, fixed for the whole run."""

    def __init__(self, cfg: SimulationConfig, estate: Estate, hist: CmdbHistory) -> None:
        self.cfg, self.estate, self.hist = cfg, estate, hist
        self.series: list[list[str]] = []
        self.params: list[dict[str, np.ndarray]] = []
        self.rows_of: dict[str, list[tuple[int, int]]] = {}
        for fi, fam in enumerate(FAMILIES):
            ids = [e for e in estate.ids(*fam.types) if estate.entities[e].monitored]
            rng = rng_for(cfg.seed, "series", fam.name)
            n = len(ids)
            base = rng.uniform(*fam.base, n)
            if fam.hot:
                hot = rng.random(n) < fam.hot[0]
                base = np.where(hot, rng.uniform(fam.hot[1], fam.hot[2], n), base)
            self.params.append(
                {
                    "base": base,
                    "swing": fam.swing * rng.uniform(0.7, 1.3, n),
                    "noise": fam.noise * rng.uniform(0.7, 1.3, n),
                    "trend": rng.uniform(*fam.trend, n),
                }
            )
            self.series.append(ids)
            for row, eid in enumerate(ids):
                self.rows_of.setdefault(eid, []).append((fi, row))

    @property
    def steps_per_day(self) -> int:
        """Scrapes per series per day."""
        return DAY_S // self.cfg.step_seconds

    def timestamps(self, day: int) -> np.ndarray:
        """Epoch seconds of the day's scrapes."""
        return (
            self.cfg.day_start(day)
            + np.arange(self.steps_per_day, dtype=np.int64) * self.cfg.step_seconds
        )

    def day(self, day: int, impacts: list[Impact]) -> list[DayValues]:
        """All families' values for day ``day``, with the fault ``impacts`` applied."""
        ts = self.timestamps(day)
        cycle = business_cycle(ts)
        elapsed = (ts - self.cfg.start_ts) / DAY_S
        values: list[np.ndarray] = []
        for fi, fam in enumerate(FAMILIES):
            p = self.params[fi]
            level = p["base"][:, None] * (1.0 + p["swing"][:, None] * (cycle[None, :] - 0.3))
            if fam.trend != (0.0, 0.0):
                level += p["trend"][:, None] * elapsed[None, :]
            values.append(level)
        # Faults shift the level before noise, so a degraded series still looks measured.
        self._apply(ts, values, impacts)
        out = []
        for fi, fam in enumerate(FAMILIES):
            rng = rng_for(self.cfg.seed, "metrics", day, fi)
            v = values[fi]
            v *= 1.0 + self.params[fi]["noise"][:, None] * rng.standard_normal(
                v.shape, dtype=np.float32
            )
            np.clip(v, 0.0, fam.hi, out=v)
            q = np.rint(v * 10**fam.decimals).astype(np.int64)
            out.append(DayValues(fam, q, self._valid_cols(fi, ts)))
        return out

    def _valid_cols(self, fi: int, ts: np.ndarray) -> np.ndarray:
        """Columns per series before retirement (scrapes stop when a CI is retired)."""
        cols = np.full(len(self.series[fi]), len(ts), dtype=np.int64)
        for row, eid in enumerate(self.series[fi]):
            if eid in self.hist.retired_at:
                cols[row] = int(np.searchsorted(ts, self.hist.retired_at[eid]))
        return cols

    def _apply(self, ts: np.ndarray, values: list[np.ndarray], impacts: list[Impact]) -> None:
        """Shift the affected entities' series during their fault windows."""
        step, t0_day = self.cfg.step_seconds, int(ts[0])
        t_end = t0_day + len(ts) * step
        for imp in impacts:
            if imp.end <= t0_day or imp.start >= t_end:
                continue
            j0 = max(0, -(-(imp.start - t0_day) // step))
            j1 = min(len(ts), -(-(imp.end - t0_day) // step))
            for fi, row in self.rows_of.get(imp.entity_id, []):
                fault = FAMILIES[fi].fault
                if fault is None or j0 >= j1:
                    continue
                seg = values[fi][row, j0:j1]
                mode, size = fault
                if mode == "up":
                    seg += (size - seg) * imp.severity
                elif mode == "mult":
                    seg *= 1.0 + size * imp.severity
                else:
                    seg *= 1.0 - size * imp.severity
