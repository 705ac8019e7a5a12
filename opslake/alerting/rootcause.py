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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from opslake.alerting.convergence import Graph, Incident, MaintenanceWindow

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
        return {"entity_id": self.entity_id, "score": round(self.score, 4),
                "coverage": round(self.coverage, 4), "precedence": round(self.precedence, 4),
                "anomaly": round(self.anomaly, 4), "change": self.change, "hops": self.hops,
                "first_alert": self.first_alert, "change_ticket": self.change_ticket}


@dataclass(frozen=True)
class AnomalyPeak:
    """An anomaly score of a CI at a time (from gold/anomalies)."""

    entity_id: str
    ts: datetime
    score: float


def rank(incident: Incident, graph: Graph, *, anomalies: Sequence[AnomalyPeak] = (),
         changes: Sequence[MaintenanceWindow] = (), top: int = TOP) -> list[Candidate]:
    """The ``top`` candidates for ``incident``, best first (ties by CI id)."""
    members = incident.entities
    if not members:
        return []
    start = incident.started_at
    first: dict[str, tuple[datetime, str]] = {}
    for a in incident.alerts:
        if a.entity_id and (a.entity_id not in first or a.starts_at < first[a.entity_id][0]):
            first[a.entity_id] = (a.starts_at, a.alertname)
    reach: dict[str, list[int]] = {}
    for m in members:
        for cand, hops in graph.upstream(m).items():
            reach.setdefault(cand, []).append(hops)
    lo, hi = start - timedelta(seconds=ANOMALY_BEFORE_S), start + timedelta(seconds=ANOMALY_AFTER_S)
    peak: dict[str, float] = {}
    for p in anomalies:
        if p.entity_id in reach and lo <= p.ts <= hi:
            peak[p.entity_id] = max(peak.get(p.entity_id, 0.0), p.score)
    changed: dict[str, str] = {}
    for w in changes:
        if w.entity_id in reach and start - timedelta(seconds=CHANGE_LOOKBACK_S) <= w.start <= start:
            changed.setdefault(w.entity_id, w.ticket_id)
    out = []
    for cand, hops in reach.items():
        seen = first.get(cand)
        prec = math.exp(-(seen[0] - start).total_seconds() / PRECEDENCE_TAU_S) if seen else 0.0
        coverage, anomaly = len(hops) / len(members), peak.get(cand, 0.0)
        change = 1.0 if cand in changed else 0.0
        evidence = 1.0 - (1.0 - prec) * (1.0 - anomaly) * (1.0 - change)
        out.append(Candidate(cand, coverage * (BASE + (1.0 - BASE) * evidence), coverage, prec,
                             anomaly, change, max(hops), seen[1] if seen else None,
                             changed.get(cand)))
    # Equal scores: the closest common upstream CI (the most specific explanation) first.
    out.sort(key=lambda c: (-round(c.score, 9), c.hops, c.entity_id))
    return out[:top]


def anomaly_peaks(rows: Sequence[Mapping[str, object]]) -> list[AnomalyPeak]:
    """Peaks from gold/anomalies rows (``entity_id``, ``ts``, ``score``)."""
    return [AnomalyPeak(str(r["entity_id"]), r["ts"], float(r["score"]))  # type: ignore[arg-type]
            for r in rows if r.get("entity_id")]
