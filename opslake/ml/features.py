"""Features and labels for event prediction (S6.7a): one row per entity and hour.

A row ``(entity_id, ts)`` describes what was known at the hour boundary ``ts``: metrics
and alerts that started before it, tickets opened before it (with the change windows they
announce, which are legitimately known in advance), and the CMDB topology. Fields a ticket
only gets later (``resolved_at``, ``change_result``) and alerts that start at or after
``ts`` are never read, so a row does not change when anything after ``ts`` changes.

Its label says whether a fault impact on the entity (as the cause, or reached through the
topology) starts in ``(ts, ts + horizon]``: from the simulator's ground truth where the lake
has one, else from the incident tickets in silver (:func:`load_incidents`), so the same code
serves a real estate.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from opslake.errors import InputError, NotFoundError
from opslake.lake import duck, schemas
from opslake.lake.storage import Lake

HOUR_S = 3600
#: Hours of history before the first row: a week for incident counts.
LOOKBACK_H = 7 * 24
#: Hours of a metric's own past that define its normal range.
BASELINE_H = 24
#: A point this many standard deviations from its baseline counts as anomalous.
Z_LIMIT = 3.0
#: Series are never more precise than this share of their level, so that near-constant
#: series (battery charge, slowly filling disks) do not count every wobble as an anomaly.
MIN_REL_STD = 0.02
#: Relations along which a failure reaches the source from the target it needs.
PROPAGATING = ("runs_on", "depends_on", "powered_by")
SEVERE = ("critical", "major")
KINDS = ("facility", "cloud", "application", "platform", "security")
#: Model inputs besides the categorical ``type``, in column order.
NUMERIC_FEATURES = (
    "alerts_1h",
    "alerts_24h",
    "severe_alerts_24h",
    "anomaly_rate_1h",
    "anomaly_rate_6h",
    "metric_z_1h",
    "metric_trend_6h",
    "change_upcoming",
    "change_active",
    "change_recent",
    "incidents_7d",
    "n_dependants",
    "n_direct_dependants",
    "n_upstream",
    *(f"upstream_{k}" for k in KINDS),
    "upstream_alerts_1h",
    "upstream_anomaly_rate_1h",
    "upstream_change_upcoming",
    "upstream_change_active",
    "upstream_incidents_7d",
)
SCORE_FEATURES = ("anomaly_score_1h", "anomaly_score_6h", "upstream_anomaly_score_1h")
#: What the model uses by default: exposure through the topology and announced changes.
#: Alert, metric and incident features are built too, but on the simulated estate faults
#: have no precursor in them, and adding them lowered the walk-forward ROC AUC (0.71 to
#: 0.64): the trees learn which entities happened to fail. Pass them to ``train`` where
#: the data does have precursors.
MODEL_FEATURES = (
    "change_upcoming",
    "change_active",
    "change_recent",
    "n_dependants",
    "n_direct_dependants",
    "n_upstream",
    *(f"upstream_{k}" for k in KINDS),
    "upstream_change_upcoming",
    "upstream_change_active",
)
#: Features computed from metric points (the costly part of building features).
METRIC_FEATURES = (
    "anomaly_rate_1h",
    "anomaly_rate_6h",
    "metric_z_1h",
    "metric_trend_6h",
    "upstream_anomaly_rate_1h",
)
GROUND_TRUTH = ("simulator", "ground_truth.json")

MetricSource = pa.Table | ds.Dataset | pd.DataFrame


@dataclass
class RiskInputs:
    """The silver tables the features come from; ``metrics`` may be a lazy dataset.

    ``metrics`` has entity_id, metric, ts, value; ``events`` entity_id, fingerprint,
    severity, starts_at; ``tickets`` type, entity_id, opened_at, change_window_start,
    change_window_end; ``assets`` and ``relations`` are the silver SCD-2 histories.
    """

    metrics: MetricSource
    events: pd.DataFrame
    tickets: pd.DataFrame
    assets: pd.DataFrame
    relations: pd.DataFrame


def as_utc(when: date | datetime) -> datetime:
    """A date as its 00:00 UTC, a naive datetime as UTC."""
    if not isinstance(when, datetime):
        return datetime(when.year, when.month, when.day, tzinfo=UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _days(first: datetime, last: datetime) -> list[str]:
    return [
        (first.date() + timedelta(days=i)).isoformat()
        for i in range((last.date() - first.date()).days + 1)
    ]


def load_inputs(lake: Lake, start: date | datetime, end: date | datetime) -> RiskInputs:
    """The silver data needed for rows from ``start`` to ``end`` (exclusive)."""
    t0, t1 = as_utc(start), as_utc(end)
    wanted = set(_days(t0 - timedelta(hours=LOOKBACK_H), t1))
    cmdb = [d for d in sorted(lake.partitions("silver", "assets")) if d <= t1.date().isoformat()]
    if not cmdb:
        raise NotFoundError(
            f"silver/assets has no partition up to {t1.date()}; "
            "materialize silver for those days first"
        )
    metric_days = set(_days(t0 - timedelta(hours=BASELINE_H + 6), t1))
    metrics = lake.dataset(
        "silver", "metric_points", schema=schemas.METRIC_POINTS, dts=sorted(metric_days)
    )

    def table(name: str, columns: list[str], dts: Sequence[str]) -> pd.DataFrame:
        return lake.read_table(
            "silver", name, schema=schemas.SILVER[name], dts=dts, columns=columns
        ).to_pandas()

    return RiskInputs(
        metrics=schemas.METRIC_POINTS.empty_table() if metrics is None else metrics,
        events=table(
            "events", ["entity_id", "fingerprint", "severity", "starts_at"], sorted(wanted)
        ),
        tickets=table(
            "tickets",
            ["type", "entity_id", "opened_at", "change_window_start", "change_window_end"],
            sorted(wanted),
        ),
        assets=table(
            "assets",
            [
                "entity_id",
                "kind",
                "type",
                "department",
                "business",
                "lifecycle_state",
                "valid_from",
                "valid_to",
            ],
            cmdb[-1:],
        ),
        relations=table(
            "relations",
            ["src_entity_id", "relation", "dst_entity_id", "valid_from", "valid_to"],
            cmdb[-1:],
        ),
    )


def load_faults(lake: Lake) -> list[dict[str, Any]]:
    """The simulator's ground-truth faults stored in the lake."""
    path = lake.path(*GROUND_TRUTH)
    if not lake.exists(path):
        raise NotFoundError(
            f"no ground truth at {path}; it exists only for a lake filled by `opslake simulate`"
        )
    return json.loads(lake.read_bytes(path))["faults"]


def load_incidents(
    lake: Lake, start: date | datetime, end: date | datetime
) -> list[dict[str, Any]]:
    """Incident tickets opened in ``[start, end)`` as fault records :func:`label` reads.

    The labels of a real estate: an incident's ``opened_at`` stands for the impact's start
    (later than the true start by the time it took to notice, which only shifts the horizon).
    """
    t0, t1 = as_utc(start), as_utc(end)
    # A ticket lands in the partition of the batch that carried it, which may be a day
    # later than it was opened; an update may carry it again.
    tickets = (
        lake.read_table(
            "silver",
            "tickets",
            schema=schemas.TICKETS,
            dts=_days(t0 - timedelta(days=1), t1),
            columns=["ticket_id", "type", "entity_id", "opened_at"],
        )
        .to_pandas()
        .drop_duplicates("ticket_id", keep="last")
    )
    opened = pd.to_datetime(tickets["opened_at"], utc=True)
    keep = (
        (tickets["type"] == "incident")
        & tickets["entity_id"].notna()
        & (opened >= pd.Timestamp(t0))
        & (opened < pd.Timestamp(t1))
    )
    return [
        {"fault_id": tid, "fault_type": "incident", "cause_entity": eid, "start": when.isoformat()}
        for tid, eid, when in zip(
            tickets.loc[keep, "ticket_id"],
            tickets.loc[keep, "entity_id"],
            opened[keep],
            strict=True,
        )
    ]


def in_fault(
    entity_ids: Sequence[str], ts: Sequence[Any], faults: Sequence[Mapping[str, Any]]
) -> np.ndarray:
    """True where ``ts`` lies in a fault's impact on the entity (its start there to the end).

    The cause's window opens at the fault's start, a reached entity's when the fault got to
    it (``affected_from``); faults without an ``end`` (incident tickets) cover nothing.
    """
    windows: dict[str, list[tuple[float, float]]] = {}
    for fault in faults:
        if not fault.get("end"):
            continue
        end = datetime.fromisoformat(fault["end"]).timestamp()
        hits = {fault["cause_entity"]: fault["start"], **(fault.get("affected_from") or {})}
        for eid, when in hits.items():
            windows.setdefault(eid, []).append((datetime.fromisoformat(when).timestamp(), end))
    frame = pd.DataFrame({"entity_id": list(entity_ids), "ts": list(ts)})
    t = _seconds(frame["ts"])
    out = np.zeros(len(frame), dtype=bool)
    for eid, idx in frame.groupby("entity_id", sort=False).indices.items():
        for lo, hi in windows.get(eid, ()):
            out[idx] |= (t[idx] >= lo) & (t[idx] <= hi)
    return out


def _seconds(values: pd.Series) -> np.ndarray:
    """Epoch seconds as floats, NaN where missing."""
    stamps = pd.to_datetime(values, utc=True)
    out = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return out.to_numpy(dtype=float, na_value=np.nan)


@dataclass(frozen=True)
class Topology:
    """The CIs (type, kind, business, department) and who needs whom at one moment."""

    attrs: pd.DataFrame
    needs: Mapping[str, tuple[str, ...]]
    needed_by: Mapping[str, tuple[str, ...]]

    @classmethod
    def at(cls, assets: pd.DataFrame, relations: pd.DataFrame, when: date | datetime) -> Topology:
        """The versions valid at ``when``; before the first export, the first versions."""

        def valid(frame: pd.DataFrame) -> pd.DataFrame:
            if frame.empty:
                return frame
            frm, to = _seconds(frame["valid_from"]), _seconds(frame["valid_to"])
            t = max(as_utc(when).timestamp(), float(np.nanmin(frm)))
            return frame[(frm <= t) & ~(to <= t)]

        live = valid(assets)
        live = live[live["lifecycle_state"] != "retired"]
        attrs = (
            live.drop_duplicates("entity_id", keep="last")
            .set_index("entity_id")[["kind", "type", "business", "department"]]
            .sort_index()
        )
        rels = valid(relations)
        rels = rels[
            rels["relation"].isin(PROPAGATING)
            & rels["src_entity_id"].isin(attrs.index)
            & rels["dst_entity_id"].isin(attrs.index)
        ]
        needs: dict[str, list[str]] = {}
        needed_by: dict[str, list[str]] = {}
        for src, dst in sorted(set(zip(rels["src_entity_id"], rels["dst_entity_id"], strict=True))):
            needs.setdefault(src, []).append(dst)
            needed_by.setdefault(dst, []).append(src)
        return cls(
            attrs,
            {k: tuple(v) for k, v in needs.items()},
            {k: tuple(v) for k, v in needed_by.items()},
        )

    @staticmethod
    def _walk(start: str, edges: Mapping[str, tuple[str, ...]]) -> set[str]:
        seen: set[str] = set()
        queue = deque([start])
        while queue:
            for nxt in edges.get(queue.popleft(), ()):
                if nxt not in seen and nxt != start:
                    seen.add(nxt)
                    queue.append(nxt)
        return seen

    def downstream(self, entity_id: str) -> set[str]:
        """Every CI that needs ``entity_id``, directly or through others."""
        return self._walk(entity_id, self.needed_by)

    def upstream(self, entity_id: str) -> set[str]:
        """Every CI that ``entity_id`` needs, directly or through others."""
        return self._walk(entity_id, self.needs)

    def impact(self, entity_id: str) -> tuple[list[str], list[str]]:
        """Businesses and departments hit if ``entity_id`` fails (itself included)."""
        reached = sorted(self.downstream(entity_id) | {entity_id})
        rows = self.attrs.reindex(reached)

        def names(col: str) -> list[str]:
            return sorted({v for v in rows[col].dropna() if v})

        return names("business"), names("department")


class _Grid:
    """Hourly buckets from ``LOOKBACK_H`` before the first row to the end, per entity."""

    def __init__(self, entities: list[str], t0: float, t1: float) -> None:
        self.entities = entities
        self.pos = {e: i for i, e in enumerate(entities)}
        self.g0 = t0 - LOOKBACK_H * HOUR_S
        self.n = int((t1 - self.g0) // HOUR_S)
        self.first_row = LOOKBACK_H

    def counts(self, entity_ids: pd.Series, seconds: np.ndarray) -> np.ndarray:
        """Count per (bucket, entity) of things that happened at ``seconds``."""
        out = np.zeros((self.n, len(self.entities)))
        col = entity_ids.map(self.pos).to_numpy(dtype=float, na_value=np.nan)
        k = np.floor((seconds - self.g0) / HOUR_S)
        keep = ~np.isnan(col) & ~np.isnan(k) & (k >= 0) & (k < self.n)
        np.add.at(out, (k[keep].astype(int), col[keep].astype(int)), 1.0)
        return out

    def trailing(self, buckets: np.ndarray, hours: int, how: str = "sum") -> np.ndarray:
        """At each row time, the sum (or mean) of the ``hours`` buckets just before it."""
        cum = np.vstack([np.zeros((1, buckets.shape[1])), np.cumsum(buckets, axis=0)])
        rows = np.arange(self.first_row, self.n)
        total = cum[rows] - cum[np.maximum(rows - hours, 0)]
        return total / hours if how == "mean" else total

    def row_times(self) -> np.ndarray:
        """Epoch seconds of each row time."""
        return self.g0 + np.arange(self.first_row, self.n) * HOUR_S


_METRIC_SQL = f"""
WITH pts AS (
    SELECT entity_id, metric, value, floor(epoch(ts) / 3600)::BIGINT AS hour
    FROM points
    WHERE ts >= $lo AND ts < $hi AND isfinite(value) AND entity_id IS NOT NULL
), hourly AS (
    SELECT entity_id, metric, hour, count(*) AS n, sum(value) AS s,
           sum(value * value) AS ss, avg(value) AS mean
    FROM pts GROUP BY ALL
), base AS (
    SELECT *,
        sum(n) OVER w AS bn, sum(s) OVER w AS bs, sum(ss) OVER w AS bss,
        count(*) OVER w AS bh,
        max(mean) OVER (PARTITION BY entity_id, metric ORDER BY hour
            RANGE BETWEEN 5 PRECEDING AND 5 PRECEDING) AS mean_5h_ago
    FROM hourly
    WINDOW w AS (PARTITION BY entity_id, metric ORDER BY hour
                 RANGE BETWEEN {BASELINE_H} PRECEDING AND 1 PRECEDING)
), scaled AS (
    SELECT entity_id, metric, hour, mean, mean_5h_ago, bs / bn AS bmean,
        greatest(sqrt(greatest(bss / bn - (bs / bn) * (bs / bn), 0)),
                 {MIN_REL_STD} * abs(bs / bn), 1e-9) AS scale
    FROM base WHERE bh >= 3
)
SELECT p.entity_id, p.hour,
    avg((abs(p.value - b.bmean) > {Z_LIMIT} * b.scale)::INT) AS anomaly_rate,
    max(abs(b.mean - b.bmean) / b.scale) AS metric_z,
    coalesce(max(abs(b.mean - b.mean_5h_ago) / b.scale), 0) AS metric_trend
FROM pts p JOIN scaled b USING (entity_id, metric, hour)
GROUP BY ALL
"""


def metric_behaviour(metrics: MetricSource, start: datetime, end: datetime) -> pd.DataFrame:
    """Per entity and hour bucket: share of anomalous points, hour-mean z and 6 h trend.

    Each metric is compared with its own previous ``BASELINE_H`` hours, never the bucket
    itself or anything later, so a bucket's figures depend only on points up to its end.
    """
    con = duck.connect()
    try:
        con.execute("SET threads TO 1")
        con.register("points", metrics)
        lo = start - timedelta(hours=BASELINE_H + 6)
        return con.execute(_METRIC_SQL, {"lo": lo, "hi": end}).df()
    finally:
        con.close()


def _changes(
    grid: _Grid, tickets: pd.DataFrame, horizon_h: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: change windows announced before it that open soon, are open, or just opened."""
    shape = (grid.n - grid.first_row, len(grid.entities))
    upcoming, active, recent = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    t = grid.row_times()
    changes = tickets[tickets["type"] == "change"]
    opened = _seconds(changes["opened_at"])
    ws, we = _seconds(changes["change_window_start"]), _seconds(changes["change_window_end"])
    for eid, o, s, e in zip(changes["entity_id"], opened, ws, we, strict=True):
        col = grid.pos.get(eid)
        if col is None or np.isnan(o) or np.isnan(s):
            continue
        known = o <= t
        upcoming[:, col] += known & (t < s) & (s <= t + horizon_h * HOUR_S)
        active[:, col] += known & (s <= t) & (t < (e if not np.isnan(e) else s + HOUR_S))
        recent[:, col] += known & (s <= t) & (t < s + 6 * HOUR_S)
    return upcoming, active, recent


def _alert_buckets(grid: _Grid, events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Alerts per bucket by start time, all and severe; firing and resolved rows count once."""
    alerts = events.dropna(subset=["entity_id", "starts_at"]).drop_duplicates(
        ["entity_id", "fingerprint", "starts_at"]
    )
    starts = _seconds(alerts["starts_at"])
    severe = alerts["severity"].isin(SEVERE).to_numpy()
    return (
        grid.counts(alerts["entity_id"], starts),
        grid.counts(alerts["entity_id"][severe], starts[severe]),
    )


def _score_buckets(grid: _Grid, scores: pd.DataFrame) -> np.ndarray:
    """Highest detector score per bucket (0 where the detector said nothing)."""
    out = np.zeros((grid.n, len(grid.entities)))
    col = scores["entity_id"].map(grid.pos).to_numpy(dtype=float, na_value=np.nan)
    k = np.floor((_seconds(scores["ts"]) - grid.g0) / HOUR_S)
    val = scores["score"].to_numpy(dtype=float)
    keep = ~np.isnan(col) & ~np.isnan(k) & (k >= 0) & (k < grid.n) & ~np.isnan(val)
    np.maximum.at(out, (k[keep].astype(int), col[keep].astype(int)), val[keep])
    return out


def _upstream(values: np.ndarray, ancestors: list[list[int]], how: str) -> np.ndarray:
    """Sum or max of each entity's ancestors' values (0 with no ancestors)."""
    out = np.zeros_like(values)
    for i, anc in enumerate(ancestors):
        if anc:
            out[:, i] = values[:, anc].sum(1) if how == "sum" else values[:, anc].max(1)
    return out


def build_features(
    inputs: RiskInputs,
    start: date | datetime,
    end: date | datetime,
    horizon_h: int = 4,
    anomalies: pd.DataFrame | None = None,
    *,
    metrics: bool = True,
) -> pd.DataFrame:
    """One row per live entity and hour in ``[start, end)``, from data before each hour.

    ``anomalies`` (entity_id, ts, score) from a detector adds ``SCORE_FEATURES``; without
    it the rolling-z anomaly rate computed here is the only anomaly signal. With
    ``metrics=False`` the metric points are not read and ``METRIC_FEATURES`` are NaN: for a
    model that does not use them (the default one), since they take nearly all the time.
    """
    t0, t1 = as_utc(start), as_utc(end)
    if t1 <= t0 or horizon_h < 1:
        raise InputError(
            f"need start < end and horizon_h >= 1 (got {t0}..{t1}, "
            f"horizon_h={horizon_h}); pass a later end or a positive horizon"
        )
    entities = sorted(set(inputs.assets["entity_id"].dropna()))
    grid = _Grid(entities, t0.timestamp(), t1.timestamp())
    times = grid.row_times()

    alerts, severe = _alert_buckets(grid, inputs.events)
    incidents = inputs.tickets[inputs.tickets["type"] == "incident"]
    incident_buckets = grid.counts(incidents["entity_id"], _seconds(incidents["opened_at"]))
    behaviour = (
        metric_behaviour(inputs.metrics, t0, t1)
        if metrics
        else pd.DataFrame(
            {
                "entity_id": pd.Series(dtype=str),
                "hour": pd.Series(dtype="int64"),
                **{c: pd.Series(dtype=float) for c in ("anomaly_rate", "metric_z", "metric_trend")},
            }
        )
    )
    rate, z, trend = (np.zeros((grid.n, len(entities))) for _ in range(3))
    col = behaviour["entity_id"].map(grid.pos).to_numpy(dtype=float, na_value=np.nan)
    k = behaviour["hour"].to_numpy() - int(grid.g0 // HOUR_S)
    keep = ~np.isnan(col) & (k >= 0) & (k < grid.n)
    at = (k[keep], col[keep].astype(int))
    for target, name in ((rate, "anomaly_rate"), (z, "metric_z"), (trend, "metric_trend")):
        target[at] = behaviour[name].to_numpy(dtype=float)[keep]
    upcoming, active, recent = _changes(grid, inputs.tickets, horizon_h)

    own = {
        "alerts_1h": grid.trailing(alerts, 1),
        "alerts_24h": grid.trailing(alerts, 24),
        "severe_alerts_24h": grid.trailing(severe, 24),
        "anomaly_rate_1h": grid.trailing(rate, 1),
        "anomaly_rate_6h": grid.trailing(rate, 6, "mean"),
        "metric_z_1h": grid.trailing(z, 1),
        "metric_trend_6h": grid.trailing(trend, 1),
        "change_upcoming": upcoming,
        "change_active": active,
        "change_recent": recent,
        "incidents_7d": grid.trailing(incident_buckets, LOOKBACK_H),
    }
    if anomalies is not None:
        scores = _score_buckets(grid, anomalies)
        own["anomaly_score_1h"] = grid.trailing(scores, 1)
        own["anomaly_score_6h"] = grid.trailing(scores, 6, "mean")

    frames = []
    day_starts = np.floor(times / 86_400) * 86_400
    for day in np.unique(day_starts):
        rows = np.flatnonzero(day_starts == day)
        topo = Topology.at(inputs.assets, inputs.relations, datetime.fromtimestamp(day, UTC))
        live = [grid.pos[e] for e in topo.attrs.index if e in grid.pos]
        ancestors = [
            [grid.pos[a] for a in topo.upstream(e) if a in grid.pos]
            if e in topo.attrs.index
            else []
            for e in entities
        ]
        cols: dict[str, np.ndarray] = {k: v[rows] for k, v in own.items()}
        for name, source, how in (
            ("upstream_alerts_1h", "alerts_1h", "sum"),
            ("upstream_anomaly_rate_1h", "anomaly_rate_1h", "max"),
            ("upstream_change_upcoming", "change_upcoming", "sum"),
            ("upstream_change_active", "change_active", "sum"),
            ("upstream_incidents_7d", "incidents_7d", "sum"),
            ("upstream_anomaly_score_1h", "anomaly_score_1h", "max"),
        ):
            if source in cols:
                cols[name] = _upstream(cols[source], ancestors, how)
        kinds = topo.attrs["kind"].reindex(entities).to_numpy()
        static = {
            "n_dependants": [len(topo.downstream(e)) for e in entities],
            "n_direct_dependants": [len(topo.needed_by.get(e, ())) for e in entities],
            "n_upstream": [len(a) for a in ancestors],
            **{
                f"upstream_{kind}": [int(sum(kinds[j] == kind for j in a)) for a in ancestors]
                for kind in KINDS
            },
        }
        n = len(rows)
        block = pd.DataFrame(
            {
                "entity_id": np.repeat(np.array(entities)[live], n),
                "ts": pd.to_datetime(np.tile(times[rows], len(live)), unit="s", utc=True),
                "type": np.repeat(topo.attrs["type"].reindex(entities).to_numpy()[live], n),
                **{k: np.repeat(np.asarray(v, dtype=float)[live], n) for k, v in static.items()},
                **{k: v[:, live].T.reshape(-1) for k, v in cols.items()},
            }
        )
        frames.append(block)
    out = pd.concat(frames, ignore_index=True)
    order = [
        "entity_id",
        "ts",
        "type",
        *NUMERIC_FEATURES,
        *(SCORE_FEATURES if anomalies is not None else ()),
    ]
    out = out[order].sort_values(["ts", "entity_id"], ignore_index=True)
    if not metrics:  # not computed, which zeros would hide
        out[list(METRIC_FEATURES)] = np.nan
    out["horizon_h"] = horizon_h
    return out


def label(rows: pd.DataFrame, faults: Sequence[Mapping[str, Any]], horizon_h: int) -> np.ndarray:
    """True where an impact on the row's entity starts in ``(ts, ts + horizon_h]``."""
    starts: dict[str, list[float]] = {}
    for fault in faults:
        hits = {fault["cause_entity"]: fault["start"], **(fault.get("affected_from") or {})}
        for eid, when in hits.items():
            starts.setdefault(eid, []).append(datetime.fromisoformat(when).timestamp())
    t = _seconds(rows["ts"])
    out = np.zeros(len(rows), dtype=bool)
    for eid, idx in rows.groupby("entity_id", sort=False).indices.items():
        if eid not in starts:
            continue
        s = np.sort(np.asarray(starts[eid]))
        nxt = np.searchsorted(s, t[idx], side="right")  # first start strictly after ts
        ok = nxt < len(s)
        out[idx[ok]] = s[nxt[ok]] <= t[idx[ok]] + horizon_h * HOUR_S
    return out
