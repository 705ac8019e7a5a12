"""Root cause and anomaly events on a simulated estate, judged by its ground truth beside chance.

The estate is one the simulator landed (best with its realism knobs on: an imperfect CMDB,
faults that leave the recorded topology, unrelated anomalies overlapping faults) and the
pipeline took to gold (``gold/anomalies`` and ``gold/incidents``). Nothing here ranks or
detects: it reads what production wrote and compares it with
``simulator/ground_truth.json``.

**Root cause.** A fault is judged when its own alerts reached an incident: the rule and
detector alerts on its cause or a CI it reached (off the recorded topology too), from 5
minutes before it to 15 minutes after it ended, not a background check, and whose
fingerprint was not already firing in the 2 hours before. Its incident is the one holding
most of them; top-1 / top-3 ask whether the true cause is first / among the first three of
that incident's ranking. Chance is a uniform pick among the incident's candidates as the
ranking sees them (its CIs and everything upstream of them in the recorded CMDB, within the
grouping's hop limit), as an exact expectation: ``1/n`` and ``min(3, n)/n`` when the cause
is a candidate, 0 when the CMDB cannot lead to it. Beside it, a naive operator's top-1: the
CI of the incident's first alert.

**Anomaly events.** Truth episodes are every impact the simulator injected (a fault's cause
and each CI it reached, from when it got there to the fault's end, and the unrelated
anomalies), merged per entity. Detected episodes are ``gold/anomalies`` event runs
(:func:`opslake.ml.anomalies.episodes`), merged per entity. They match when they overlap
within ``tolerance_s``. Precision is the share of detected episodes that match a truth
episode; recall the share of truth episodes some detected one matches. Chance keeps the
detected episodes' count, entities and lengths and places each uniformly at random in the
judged days (``chance``), or also on an entity drawn uniformly from those reporting
metrics (``chance_any_entity``); both are exact expectations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from opslake.lake.storage import Lake
from opslake.settings import Settings
from opslake.simulate.alerts import NOISE
from opslake.simulate.truth import GroundTruth
from opslake.simulate.writer import GROUND_TRUTH

#: A fault's alerts: from this long before it starts to this long after it ends.
BEFORE = timedelta(minutes=5)
AFTER = timedelta(minutes=15)
#: A fingerprint already firing this long before the fault is not the fault's.
ALREADY = timedelta(hours=2)
#: Detected and truth episodes match when they come this close.
TOLERANCE_S = 300
#: Episodes of one entity this close together are one (the detector's own episode gap).
MERGE_GAP_S = 1800
NOISE_NAMES = frozenset(n[0] for n in NOISE)


@dataclass
class RootCauseFigures:
    """Top-1 / top-3 over the judged faults, beside a uniform pick among the candidates."""

    faults: int
    judged: int
    top1: float
    top3: float
    chance_top1: float
    chance_top3: float
    #: Judged faults whose cause is among the candidates at all (the CMDB leads to it).
    reachable: int
    #: A naive operator's top-1: the CI of the incident's first alert.
    first_alert_top1: float
    #: Judged faults where the CMDB is wrong about the cause or a CI the fault reached
    #: (a missing or stale relation, an unknown CI), and how many of them top-1 got right.
    cmdb_wrong: int
    cmdb_wrong_top1: int
    rows: list[dict[str, object]] = field(default_factory=list)


@dataclass
class EventFigures:
    """Event precision / recall, beside randomly placed episodes of the same count and length."""

    days: list[str]
    detected: int
    truth: int
    precision: float
    recall: float
    chance_precision: float
    chance_recall: float
    chance_any_entity_precision: float
    chance_any_entity_recall: float
    tolerance_s: int


@dataclass
class EstateFigures:
    root_cause: RootCauseFigures
    events: EventFigures
    realism: dict[str, object]

    def as_dict(self, rows: bool = False) -> dict[str, object]:
        out = asdict(self)
        if not rows:
            out["root_cause"].pop("rows")
        return out


def load_truth(lake: Lake) -> GroundTruth:
    """The ground truth the simulator stored in the lake."""
    return GroundTruth.from_json(lake.read_bytes(lake.path(*GROUND_TRUTH)))


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(str(text))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _day_start(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)


# --- root cause ---------------------------------------------------------------------------


def _graphs(lake: Lake, settings: Settings):
    """The convergence graph of a day (the CMDB as known at its end), built once per day."""
    from opslake.alerting.convergence import Graph
    from opslake.alerting.rules import ConvergenceRules
    from opslake.lake.cmdb import cmdb_as_of, end_of_day
    from opslake.lake.schemas import RELATIONS_SCHEMA

    rules = ConvergenceRules.load(settings.alerting_dir)
    cache: dict[str, Graph] = {}

    def graph(day: str) -> Graph:
        if day not in cache:
            known = [d for d in lake.partitions("silver", "relations") if d <= day][-1:]
            relations = lake.read_table(
                "silver", "relations", schema=RELATIONS_SCHEMA, dts=known
            ).to_pandas()
            cache[day] = Graph.at(
                cmdb_as_of(lake, day).to_pandas(),
                relations,
                pd.Timestamp(end_of_day(day)),
                rules.max_hops,
                rules.max_shared_fraction,
            )
        return cache[day]

    return graph


def _read(lake: Lake, table: str, days: Sequence[str]) -> list[dict]:
    known = set(lake.partitions("gold", table))
    out = []
    for day in days:
        if day in known:
            out += [{**r, "dt": day} for r in lake.read_table("gold", table, dts=[day]).to_pylist()]
    return out


def root_cause(
    lake: Lake, settings: Settings, truth: GroundTruth, days: Sequence[str]
) -> RootCauseFigures:
    """Top-1 / top-3 of ``gold/incidents``' rankings against the true causes of the faults
    that started on ``days``, beside a uniform pick among each incident's candidates."""
    graph = _graphs(lake, settings)
    after = (date.fromisoformat(max(days)) + timedelta(days=1)).isoformat()
    read_days = [d for d in lake.partitions("gold", "incidents") if min(days) <= d <= after]
    incidents: dict[str, dict] = {}
    for row in sorted(
        _read(lake, "incidents", read_days), key=lambda r: (r["updated_at"], r["dt"])
    ):
        incidents[row["incident_id"]] = row  # the newest partition of each incident
    episodes: dict[str, dict] = {}
    for a in _read(lake, "incident_alerts", read_days):
        episodes.setdefault(a["alert_id"], a)  # the alert once; its home is rechecked below
    home: dict[str, str] = {}
    opener: dict[str, tuple[datetime, str]] = {}
    for a in _read(lake, "incident_alerts", read_days):
        home[a["alert_id"]] = a["incident_id"]
        if a["entity_id"] and (
            a["incident_id"] not in opener
            or (a["starts_at"], a["entity_id"]) < opener[a["incident_id"]]
        ):
            opener[a["incident_id"]] = (a["starts_at"], a["entity_id"])
    alerts = list(episodes.values())
    real = truth.realism
    wrong: set[str] = set(real.get("unknown_cis", []) or [])  # type: ignore[arg-type]
    for src, _, dst in real.get("missing_relations", []) or []:  # type: ignore[union-attr]
        wrong |= {src, dst}
    for (src, _, dst), (_, _, shown) in real.get("stale_relations", []) or []:  # type: ignore[union-attr,misc]
        wrong |= {src, dst, shown}
    first, last = _day_start(min(days)), _day_start(max(days)) + timedelta(days=1)
    faults = [f for f in truth.faults if first <= _utc(f["start"]) < last]
    rows: list[dict[str, object]] = []
    for fault in faults:
        cause = str(fault["cause_entity"])
        cis = {cause, *fault["affected"]}  # type: ignore[misc]
        lo, hi = _utc(fault["start"]) - BEFORE, _utc(fault["end"]) + AFTER
        before = {a["fingerprint"] for a in alerts if lo - ALREADY <= a["starts_at"] < lo}
        theirs = [
            a
            for a in alerts
            if a["entity_id"] in cis
            and lo <= a["starts_at"] <= hi
            and a["alertname"] not in NOISE_NAMES
            and a["fingerprint"] not in before
        ]
        if not theirs:
            rows.append({"fault_id": fault["fault_id"], "cause": cause, "judged": False})
            continue
        counts: dict[str, int] = {}
        for a in theirs:
            counts[home[a["alert_id"]]] = counts.get(home[a["alert_id"]], 0) + 1
        main = incidents[max(sorted(counts), key=lambda k: counts[k])]
        ranked = [str(c["entity_id"]) for c in json.loads(main["root_causes"] or "[]")]
        g = graph(main["dt"])
        candidates: set[str] = set()
        for m in main["entities"] or []:
            candidates |= set(g.upstream(m))
        n = len(candidates)
        reachable = cause in candidates
        rows.append(
            {
                "fault_id": fault["fault_id"],
                "cause": cause,
                "judged": True,
                "incident": main["incident_id"],
                "correlation": main["correlation"],
                "ranked": ranked[:3],
                "top1": ranked[:1] == [cause],
                "top3": cause in ranked[:3],
                "candidates": n,
                "reachable": reachable,
                "chance_top1": 1.0 / n if reachable else 0.0,
                "chance_top3": min(3, n) / n if reachable else 0.0,
                "first_alert": opener.get(main["incident_id"], (None, None))[1] == cause,
                # The CMDB is wrong about the cause or a CI the fault reached.
                "cmdb_wrong_here": bool(cis & wrong),
                "off_topology": list(fault.get("off_topology") or []),  # type: ignore[arg-type]
            }
        )
    judged = [r for r in rows if r["judged"]]
    k = len(judged) or 1

    def mean(name: str) -> float:
        return sum(float(r[name]) for r in judged) / k  # type: ignore[arg-type]

    return RootCauseFigures(
        len(faults),
        len(judged),
        mean("top1"),
        mean("top3"),
        mean("chance_top1"),
        mean("chance_top3"),
        sum(1 for r in judged if r["reachable"]),
        mean("first_alert"),
        sum(1 for r in judged if r["cmdb_wrong_here"]),
        sum(1 for r in judged if r["cmdb_wrong_here"] and r["top1"]),
        rows,
    )


# --- anomaly events -----------------------------------------------------------------------

Interval = tuple[float, float]


def _merge(spans: Sequence[Interval], gap: float) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + gap:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def truth_episodes(
    truth: GroundTruth, t0: float, t1: float, gap: float = 0.0
) -> dict[str, list[Interval]]:
    """Every injected impact per entity (fault causes, reached CIs, unrelated anomalies)
    that overlaps ``[t0, t1)``, merged where they overlap (or come within ``gap``)."""
    spans: dict[str, list[Interval]] = {}
    for fault in truth.faults:
        end = _utc(fault["end"]).timestamp()
        hits = {fault["cause_entity"]: fault["start"], **(fault.get("affected_from") or {})}
        for eid, when in hits.items():  # type: ignore[union-attr]
            spans.setdefault(str(eid), []).append((_utc(when).timestamp(), end))
    for n in truth.realism.get("noise", []) or []:  # type: ignore[union-attr]
        spans.setdefault(n["entity_id"], []).append(
            (_utc(n["start"]).timestamp(), _utc(n["end"]).timestamp())
        )
    out = {}
    for eid, s in spans.items():
        kept = [(lo, hi) for lo, hi in _merge(s, gap) if hi > t0 and lo < t1]
        if kept:
            out[eid] = kept
    return out


def detected_episodes(
    lake: Lake, days: Sequence[str], gap: float = MERGE_GAP_S
) -> dict[str, list[Interval]]:
    """``gold/anomalies`` event runs of ``days`` per entity, merged within ``gap``."""
    from opslake.ml.anomalies import episodes

    known = set(lake.partitions("gold", "anomalies"))
    tables = [lake.read_table("gold", "anomalies", dts=[d]) for d in days if d in known]
    if not tables:
        return {}
    table = pa.concat_tables(tables, promote_options="default")
    table = table.filter(pc.is_valid(table["entity_id"]))
    spans: dict[str, list[Interval]] = {}
    for run in episodes(table):
        start, end = run["start"], run["end"]
        start = start if start.tzinfo else start.replace(tzinfo=UTC)
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
        spans.setdefault(run["entity_id"], []).append((start.timestamp(), end.timestamp()))
    return {e: _merge(s, gap) for e, s in spans.items()}


def _hits(a: Interval, b: Interval, tol: float) -> bool:
    return a[0] <= b[1] + tol and a[1] >= b[0] - tol


def _measure(spans: Sequence[Interval]) -> float:
    return sum(hi - lo for lo, hi in _merge(spans, 0.0))


def _placement_hit(length: float, target: Interval, t0: float, t1: float, tol: float) -> float:
    """Chance that an episode of ``length`` placed uniformly in ``[t0, t1]`` meets ``target``."""
    room = max(t1 - length - t0, 1.0)
    lo, hi = max(target[0] - tol - length, t0), min(target[1] + tol, t1 - length)
    return min(max(hi - lo, 0.0) / room, 1.0)


def _placement_any(
    length: float, targets: Sequence[Interval], t0: float, t1: float, tol: float
) -> float:
    """Chance that it meets any of ``targets`` (the union of the start positions that do)."""
    room = max(t1 - length - t0, 1.0)
    starts = [(max(s - tol - length, t0), min(e + tol, t1 - length)) for s, e in targets]
    return min(_measure([(lo, hi) for lo, hi in starts if hi > lo]) / room, 1.0)


def anomaly_events(
    lake: Lake,
    truth: GroundTruth,
    days: Sequence[str],
    tolerance_s: float = TOLERANCE_S,
    entities: Sequence[str] | None = None,
) -> EventFigures:
    """Event precision / recall on ``days`` beside randomly placed episodes (exact means).

    ``entities``: those that report metrics (the draw of ``chance_any_entity``); default:
    every entity of silver ``metric_points`` on ``days``.
    """
    t0 = _day_start(min(days)).timestamp()
    t1 = (_day_start(max(days)) + timedelta(days=1)).timestamp()
    real = truth_episodes(truth, t0, t1)
    found = {
        e: [(max(lo, t0), min(hi, t1)) for lo, hi in s if hi >= t0 and lo < t1]
        for e, s in detected_episodes(lake, days).items()
    }
    found = {e: s for e, s in found.items() if s}
    if entities is None:
        entities = sorted(
            {
                e
                for d in days
                if d in set(lake.partitions("silver", "metric_points"))
                for e in pc.unique(
                    lake.read_table("silver", "metric_points", dts=[d], columns=["entity_id"])[
                        "entity_id"
                    ]
                ).to_pylist()
                if e
            }
        )
    universe = max(len(set(entities) | set(found)), 1)
    n_found = sum(len(s) for s in found.values())
    n_real = sum(len(s) for s in real.values())
    tol = tolerance_s
    tp = sum(any(_hits(d, r, tol) for r in real.get(e, ())) for e, s in found.items() for d in s)
    seen = sum(any(_hits(d, r, tol) for d in found.get(e, ())) for e, s in real.items() for r in s)
    # Chance, same entities: each detected episode at a uniform start in the days.
    p_same = sum(
        _placement_any(hi - lo, real.get(e, ()), t0, t1, tol)
        for e, s in found.items()
        for lo, hi in s
    )
    r_same = 0.0
    for e, s in real.items():
        for target in s:
            miss = 1.0
            for lo, hi in found.get(e, ()):
                miss *= 1.0 - _placement_hit(hi - lo, target, t0, t1, tol)
            r_same += 1.0 - miss
    # Chance, any entity: also a uniform entity among those reporting metrics.
    lengths = [hi - lo for s in found.values() for lo, hi in s]
    p_any = (
        sum(_placement_any(length, s, t0, t1, tol) for length in lengths for s in real.values())
        / universe
    )
    r_any = 0.0
    for s in real.values():
        for target in s:
            miss = 1.0
            for length in lengths:
                miss *= 1.0 - _placement_hit(length, target, t0, t1, tol) / universe
            r_any += 1.0 - miss
    nf, nr = n_found or 1, n_real or 1
    return EventFigures(
        list(days),
        n_found,
        n_real,
        tp / nf,
        seen / nr,
        p_same / nf,
        r_same / nr,
        p_any / nf,
        r_any / nr,
        int(tol),
    )


def evaluate(
    lake: Lake,
    settings: Settings,
    days: Sequence[str] | None = None,
    event_days: Sequence[str] | None = None,
    truth: GroundTruth | None = None,
) -> EstateFigures:
    """Both evaluations on the lake's simulated estate.

    ``days``: the days whose faults are judged (default: the simulated window);
    ``event_days``: the days whose anomaly events are judged (default: ``days`` less the
    first, on which the detector warms up without history).
    """
    truth = truth or load_truth(lake)
    if days is None:
        first = date.fromisoformat(truth.window["start"])
        n = (date.fromisoformat(truth.window["end"]) - first).days
        days = [(first + timedelta(days=i)).isoformat() for i in range(n)]
    days = list(days)
    event_days = list(event_days) if event_days is not None else (days[1:] or days)
    realism = {k: (len(v) if isinstance(v, list) else v) for k, v in truth.realism.items()}
    realism["off_topology_faults"] = sum(1 for f in truth.faults if f.get("off_topology"))
    return EstateFigures(
        root_cause(lake, settings, truth, days), anomaly_events(lake, truth, event_days), realism
    )
