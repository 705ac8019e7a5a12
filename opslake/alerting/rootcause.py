"""Root-cause ranking for an incident: topology first, then time, anomalies and changes (S5.5g-h).

Candidates are the incident's CIs and everything upstream of them (runs-on, depends-on,
powered-by, within the grouping's hop limit), so a CI that raised no alert of its own (a PDU
without a load alert, a switch without a port rule) can still be named. Each candidate gets:

- ``coverage``: the share of the incident's CIs that are it or depend on it;
- ``precedence``: 1 when its own first alert opened the incident, decaying with every
  minute it came later (``PRECEDENCE_TAU_S``), 0 without an alert;
- ``anomaly``: its highest anomaly score from ``ANOMALY_BEFORE_S`` before the incident to
  ``ANOMALY_AFTER_S`` after it started;
- ``change``: 1 when an announced change window on it opened within ``CHANGE_LOOKBACK_S``
  before the incident (S5.5h: changes are the usual cause).

The evidence of the candidate itself is their noisy-or, ``1 - (1-precedence)(1-anomaly)
(1-change)``, and the score is ``coverage × (BASE + (1 - BASE) × evidence)``: what explains
more of the incident ranks first, and among equal explanations the one with evidence of its
own. A candidate nothing of which alerted, moved or changed can still win on coverage, as it
should when two hosts on one PDU alert together and the PDU has no alert rule. The top candidates are kept with every figure as evidence.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from opslake.alerting.convergence import Alert, Graph, Incident, MaintenanceWindow
from opslake.ml import detect
from opslake.ml.features import Topology

BASE = 0.6
PRECEDENCE_TAU_S = 300.0
ANOMALY_BEFORE_S = 1800
ANOMALY_AFTER_S = 600
CHANGE_LOOKBACK_S = 4 * 3600
TOP = 5


@dataclass(frozen=True)
class Candidate:
    """One ranked root-cause candidate and the evidence behind its score."""

    entity_id: str
    score: float
    coverage: float
    precedence: float
    anomaly: float
    change: float
    hops: int
    first_alert: str | None
    change_ticket: str | None

    def as_dict(self) -> dict[str, object]:
        """The evidence as stored on the incident."""
        return {
            "entity_id": self.entity_id,
            "score": round(self.score, 4),
            "coverage": round(self.coverage, 4),
            "precedence": round(self.precedence, 4),
            "anomaly": round(self.anomaly, 4),
            "change": self.change,
            "hops": self.hops,
            "first_alert": self.first_alert,
            "change_ticket": self.change_ticket,
        }


@dataclass(frozen=True)
class AnomalyPeak:
    """An anomaly score of a CI at a time (from gold/anomalies)."""

    entity_id: str
    ts: datetime
    score: float


def rank(
    incident: Incident,
    graph: Graph,
    *,
    anomalies: Sequence[AnomalyPeak] = (),
    changes: Sequence[MaintenanceWindow] = (),
    top: int = TOP,
    within: Collection[str] | None = None,
    base: float = BASE,
    precedence_tau_s: float = PRECEDENCE_TAU_S,
    anomaly_window_s: tuple[int, int] = (ANOMALY_BEFORE_S, ANOMALY_AFTER_S),
    start: datetime | None = None,
    weights: Mapping[str, float] | None = None,
    coverage_power: float = 1.0,
    dominance: float = 0.0,
) -> list[Candidate]:
    """The ``top`` candidates for ``incident``, best first (ties by CI id).

    ``within`` limits the candidates (a symptom's path: only what can explain the symptom);
    ``start`` is when the incident counts as started (default: its first alert);
    ``weights`` weigh the members in the coverage (default 1 each: the share of members);
    the score is ``coverage ** coverage_power × (base + (1 - base) × evidence)``, times
    ``(1 - d) ** dominance`` where ``d`` is how much more anomalous than the candidate the
    most anomalous member depending on it is (a CI less anomalous than what needs it is
    more likely its victim's neighbour than its cause). The defaults are the module's
    constants, which the estate's incidents use.
    """
    members = incident.entities
    if not members:
        return []
    start = start or incident.started_at
    first: dict[str, tuple[datetime, str]] = {}
    for a in incident.alerts:
        if a.entity_id and (a.entity_id not in first or a.starts_at < first[a.entity_id][0]):
            first[a.entity_id] = (a.starts_at, a.alertname)
    reach: dict[str, list[int]] = {}
    for m in members:
        for cand, hops in graph.upstream(m).items():
            if within is None or cand in within:
                reach.setdefault(cand, []).append(hops)
    lo = start - timedelta(seconds=anomaly_window_s[0])
    hi = start + timedelta(seconds=anomaly_window_s[1])
    peak: dict[str, float] = {}
    for p in anomalies:
        if lo <= p.ts <= hi:
            peak[p.entity_id] = max(peak.get(p.entity_id, 0.0), p.score)
    weight = {m: 1.0 if weights is None else float(weights.get(m, 1.0)) for m in members}
    total = sum(weight.values()) or 1.0
    needers: dict[str, list[str]] = {}
    for m in members:
        for cand in graph.upstream(m):
            needers.setdefault(cand, []).append(m)
    changed: dict[str, str] = {}
    for w in changes:
        if (
            w.entity_id in reach
            and start - timedelta(seconds=CHANGE_LOOKBACK_S) <= w.start <= start
        ):
            changed.setdefault(w.entity_id, w.ticket_id)
    out = []
    for cand, hops in reach.items():
        seen = first.get(cand)
        lag = max((seen[0] - start).total_seconds(), 0.0) if seen else math.inf
        prec = math.exp(-lag / precedence_tau_s) if seen and precedence_tau_s > 0 else 0.0
        coverage = sum(weight[m] for m in needers.get(cand, ())) / total
        anomaly = peak.get(cand, 0.0)
        change = 1.0 if cand in changed else 0.0
        evidence = 1.0 - (1.0 - prec) * (1.0 - anomaly) * (1.0 - change)
        score = coverage**coverage_power * (base + (1.0 - base) * evidence)
        if dominance:
            over = max(
                (peak.get(m, 0.0) - anomaly for m in needers.get(cand, ()) if m != cand),
                default=0.0,
            )
            score *= (1.0 - max(over, 0.0)) ** dominance
        out.append(
            Candidate(
                cand,
                score,
                coverage,
                prec,
                anomaly,
                change,
                max(hops),
                seen[1] if seen else None,
                changed.get(cand),
            )
        )
    # Equal scores: the closest common upstream CI (the most specific explanation) first.
    out.sort(key=lambda c: (-round(c.score, 9), c.hops, c.entity_id))
    return out[:top]


def anomaly_peaks(rows: Sequence[Mapping[str, object]]) -> list[AnomalyPeak]:
    """Peaks from gold/anomalies rows (``entity_id``, ``ts``, ``score``)."""
    return [
        AnomalyPeak(str(r["entity_id"]), r["ts"], float(r["score"]))  # type: ignore[arg-type]
        for r in rows
        if r.get("entity_id")
    ]


# --- A symptom, the dependency graph and the metric history (with or without alerts) -------
#
# The same ranking, fed differently: the symptom (an entity whose metric went bad at a time)
# becomes the incident's first alert; the production detector (``opslake.ml.detect``) scores
# every series causally, warmed up on the normal history, and its scores around the symptom
# are the anomaly evidence; a series whose score crosses ``alert_at`` in the symptom's
# direction raises a detector alert on its entity, which joins the incident when the graph
# relates it to the symptom (as convergence groups alerts). Candidates are what the symptom
# needs (it and everything upstream of it); alerts that exist join as they are.

#: Series keys: (entity, metric, statistic); statistic "" where a metric has only one.
SeriesKey = tuple[str, str, str]


@dataclass(frozen=True)
class Symptom:
    """An entity's metric that went bad at a time (``statistic`` optional)."""

    entity_id: str
    metric: str
    at: datetime
    statistic: str | None = None


@dataclass(frozen=True)
class SymptomKnobs:
    """How a symptom's evidence is read; chosen by leave-one-scenario-out on PetShop."""

    #: A candidate's series that count: "symptom" (the symptom's metric and statistic),
    #: "metric" (every statistic of the symptom's metric) or "all" (every series).
    series: str = "symptom"
    #: The window of evidence around the symptom: (before, after) in seconds.
    window_s: tuple[int, int] = (300, 900)
    #: A direction-matched detector score at least this high raises a detector alert; the
    #: alert's entity joins the incident, weighed by that score (the symptom weighs 1).
    alert_at: float = 0.3
    #: ``alert_at`` is a share of the strongest evidence around the symptom, not a score
    #: (the detector's scores run lower on a short or shifted history).
    alert_relative: bool = True
    #: Discount a series by how anomalous it already was before the window (a state the
    #: series was already in does not explain a new symptom).
    onset: bool = True
    base: float = 0.3
    #: 0 leaves timing out: on five-minute rows the symptom's own alert would always be first.
    precedence_tau_s: float = 0.0
    coverage_power: float = 1.0
    dominance: float = 2.0
    #: History rows before the window whose median is the series' usual level (direction).
    reference_rows: int = 24


@dataclass(frozen=True)
class SeriesScores:
    """Detector scores of every series over the rows around a symptom, and their history."""

    keys: list[SeriesKey]
    ts: np.ndarray  # epoch seconds of the scored rows
    values: np.ndarray  # [series, row]
    scores: np.ndarray  # [series, row], causal, warmed up on the history
    history: np.ndarray  # [series, row] the last ``HISTORY_KEEP`` history rows (levels)


HISTORY_KEEP = 288


def wide(points: pd.DataFrame) -> pd.DataFrame:
    """Metric points (``ts``, ``entity_id``, ``metric``, ``value``, optional ``statistic``) as
    one column per series (entity, metric, statistic), one row per epoch second, mean per cell."""
    if points.empty:
        return pd.DataFrame(
            columns=pd.MultiIndex.from_tuples([], names=["entity_id", "metric", "statistic"])
        )
    ts = points["ts"]
    if pd.api.types.is_datetime64_any_dtype(ts):
        ts = pd.to_datetime(ts, utc=True)
        secs = (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    else:
        secs = ts.astype("int64")
    stat = points["statistic"].fillna("") if "statistic" in points else ""
    frame = pd.DataFrame(
        {
            "ts": secs,
            "entity_id": points["entity_id"],
            "metric": points["metric"],
            "statistic": stat,
            "value": points["value"].astype(float),
        }
    )
    out = frame.groupby(["ts", "entity_id", "metric", "statistic"])["value"].mean()
    return out.unstack(["entity_id", "metric", "statistic"]).sort_index()


def score_series(
    points: pd.DataFrame,
    normal: pd.DataFrame | None = None,
    config: detect.DetectorConfig | None = None,
) -> SeriesScores:
    """Score every series of ``points`` (wide, see :func:`wide`) with the production
    detector, each warmed up on its ``normal`` history (may be empty).

    Normal data recorded at another time (after the case, or on other days) is moved by
    whole days to end before the case's first row, so the time of day is kept.
    """
    normal = normal if normal is not None else points.iloc[:0]
    if len(normal) and len(points) and normal.index.max() >= points.index.min():
        days = (normal.index.max() - points.index.min()) // detect.DAY_S + 1
        normal = normal.set_axis(normal.index - days * detect.DAY_S)
    keys = list(dict.fromkeys([*points.columns, *normal.columns]))
    full = pd.concat([normal.reindex(columns=keys), points.reindex(columns=keys)])
    full = full.apply(pd.to_numeric, errors="coerce")
    stamps = (full.index.to_numpy(dtype=np.int64) * 10**9).astype("datetime64[ns]")
    values = full.to_numpy(dtype=float).T
    state = detect.DetectorState.new(len(keys), detect.infer_step(stamps), config)
    scores = detect.score_matrix(state, stamps, values) if len(keys) else values
    n = len(normal)
    return SeriesScores(
        [tuple(k) for k in keys],
        points.index.to_numpy(dtype=np.int64),
        values[:, n:],
        scores[:, n:],
        values[:, max(0, n - HISTORY_KEEP) : n],
    )


def symptom_evidence(
    symptom: Symptom, series: SeriesScores, knobs: SymptomKnobs
) -> tuple[list[AnomalyPeak], dict[str, datetime]]:
    """Per entity, its peak detector score around the symptom (direction-matched, discounted
    by what it already showed before), and when its detector alert opened (if it did)."""
    at = symptom.at.timestamp()
    before, after = knobs.window_s
    win = (series.ts > at - before) & (series.ts <= at + after)
    pre = series.ts <= at - before
    hist = np.concatenate([series.history, series.values[:, pre]], axis=1)
    hist = hist[:, -knobs.reference_rows :]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level = np.nanmedian(hist, axis=1) if hist.shape[1] else np.full(len(hist), np.nan)
    deviation = series.values - level[:, None]
    # The symptom's direction: where its metric went (up for latency, down for availability)
    # in the step that holds the symptom's time and the next one.
    step = float(np.median(np.diff(series.ts))) if len(series.ts) > 1 else float(before)
    onset_rows = (series.ts > at - step) & (series.ts <= at + step)
    sym = [
        i
        for i, k in enumerate(series.keys)
        if k[0] == symptom.entity_id
        and k[1] == symptom.metric
        and (symptom.statistic in (None, k[2]))
    ]
    sign = np.sign(np.nansum(deviation[sym][:, onset_rows])) if sym else 0.0
    metric_rows = np.array([k[1] == symptom.metric for k in series.keys], dtype=bool)
    if knobs.series == "symptom":
        use = metric_rows & np.array(
            [symptom.statistic in (None, k[2]) for k in series.keys], dtype=bool
        )
    elif knobs.series == "metric":
        use = metric_rows
    else:
        use = np.ones(len(series.keys), dtype=bool)
    same_way = np.where(
        metric_rows[:, None] & (sign != 0), np.nan_to_num(deviation) * sign > 0, True
    )
    ev = np.where(same_way & np.isfinite(series.values), series.scores, 0.0)
    if knobs.onset:
        # The state before: the rows before the window, or, for a series with no sample
        # there, its first sample (an anomaly there cannot be told from an old state).
        seen = np.isfinite(series.values)
        had_pre = (seen & pre[None, :]).any(axis=1)
        first = np.argmax(seen, axis=1)
        state = np.where(
            had_pre,
            np.where(pre[None, :], series.scores, 0.0).max(axis=1),
            series.scores[np.arange(len(first)), first],
        )
        ev = ev * (1.0 - state)[:, None]
    ev = np.where(win[None, :] & use[:, None], ev, 0.0)
    peaks: dict[str, AnomalyPeak] = {}
    opened: dict[str, datetime] = {}
    threshold = knobs.alert_at * (float(ev.max()) if knobs.alert_relative and ev.size else 1.0)
    for i, key in enumerate(series.keys):
        if not use[i] or not win.any():
            continue
        j = int(np.argmax(ev[i]))
        if ev[i, j] > 0 and (key[0] not in peaks or ev[i, j] > peaks[key[0]].score):
            peaks[key[0]] = AnomalyPeak(key[0], _utc(series.ts[j]), float(ev[i, j]))
        crossed = np.flatnonzero(ev[i] >= threshold)
        if len(crossed):
            when = _utc(series.ts[crossed[0]])
            opened[key[0]] = min(opened.get(key[0], when), when)
    return sorted(peaks.values(), key=lambda p: p.entity_id), opened


def rank_symptom(
    symptom: Symptom,
    graph: Graph,
    series: SeriesScores | None = None,
    *,
    alerts: Sequence[Alert] = (),
    changes: Sequence[MaintenanceWindow] = (),
    knobs: SymptomKnobs | None = None,
    top: int | None = None,
) -> list[Candidate]:
    """Rank what can explain ``symptom``: it and everything upstream of it in ``graph``.

    ``series`` (from :func:`score_series`) gives the detector's evidence; ``alerts`` that
    exist join the incident where the graph relates them to the symptom, as in convergence.
    """
    knobs = knobs or SymptomKnobs()
    peaks, opened = symptom_evidence(symptom, series, knobs) if series is not None else ([], {})
    members = [
        Alert(
            f"symptom:{symptom.entity_id}",
            f"symptom/{symptom.entity_id}",
            "symptom",
            f"{symptom.metric}:{symptom.statistic or ''}",
            "major",
            "symptom",
            symptom.entity_id,
            {},
            symptom.at,
            None,
        )
    ]
    score = {p.entity_id: p.score for p in peaks}
    weights = {symptom.entity_id: 1.0}
    for entity, when in sorted(opened.items()):
        if entity != symptom.entity_id and graph.related(entity, symptom.entity_id):
            members.append(
                Alert(
                    f"detector:{entity}",
                    f"opslake-ml/{entity}",
                    "opslake-ml",
                    "AnomalyDetected",
                    "minor",
                    "anomaly",
                    entity,
                    {},
                    when,
                    None,
                )
            )
            weights[entity] = score.get(entity, knobs.alert_at)
    for a in alerts:  # alerts that exist are evidence in full
        if graph.related(a.entity_id, symptom.entity_id):
            members.append(a)
            weights[a.entity_id] = 1.0  # type: ignore[index]
    incident = Incident(f"symptom:{symptom.entity_id}@{symptom.at.isoformat()}", "symptom", members)
    within = graph.upstream(symptom.entity_id)
    return rank(
        incident,
        graph,
        anomalies=peaks,
        changes=changes,
        top=top if top is not None else len(within),
        within=within,
        base=knobs.base,
        precedence_tau_s=knobs.precedence_tau_s,
        anomaly_window_s=knobs.window_s,
        start=symptom.at,
        weights=weights,
        coverage_power=knobs.coverage_power,
        dominance=knobs.dominance,
    )


def graph_from_relations(
    relations: pd.DataFrame, max_hops: int = 10, max_shared_fraction: float = 1.0
) -> Graph:
    """A graph from dependency pairs (``src_entity_id`` needs ``dst_entity_id``), with every
    entity named in them (no CMDB validity: the relations are the ones that hold now)."""
    needs: dict[str, list[str]] = {}
    needed_by: dict[str, list[str]] = {}
    for src, dst in sorted(
        set(zip(relations["src_entity_id"], relations["dst_entity_id"], strict=True))
    ):
        if src != dst:
            needs.setdefault(src, []).append(dst)
            needed_by.setdefault(dst, []).append(src)
    names = sorted(set(relations["src_entity_id"]) | set(relations["dst_entity_id"]))
    attrs = pd.DataFrame(
        {"kind": None, "type": None, "business": None, "department": None},
        index=pd.Index(names, name="entity_id"),
    )
    topology = Topology(
        attrs, {k: tuple(v) for k, v in needs.items()}, {k: tuple(v) for k, v in needed_by.items()}
    )
    return Graph(topology, max_hops, {}, max_shared_fraction)


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(float(epoch_s), tz=UTC)
