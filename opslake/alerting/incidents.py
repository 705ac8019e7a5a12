"""One day of convergence end to end: events → alerts → incidents with root cause and context.

Incidents of day D are those that started on D. Alerts are read from D's events and the day
before, so an incident that was still open at midnight is carried on: it is written again in
D's partition with everything known by then, and readers take the newest partition of each
incident (the serving view ``incidents`` does). ``gold/incident_stats`` keeps the day's
compression ratio (alert episodes per incident).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import pandas as pd
import pyarrow as pa

from opslake.alerting import rootcause
from opslake.alerting.convergence import (
    Graph,
    Incident,
    alert_episodes,
    group,
    maintenance_windows,
    mute,
)
from opslake.alerting.enrich import Enricher, RunbookIndex
from opslake.alerting.rules import ConvergenceRules
from opslake.lake.schemas import TS

LABELS = pa.map_(pa.string(), pa.string())
INCIDENTS = pa.schema(
    [
        ("incident_id", pa.string()),
        ("title", pa.string()),
        ("status", pa.string()),
        ("muted", pa.bool_()),
        ("severity", pa.string()),
        ("correlation", pa.string()),
        ("reopened", pa.int32()),
        ("started_at", TS),
        ("ended_at", TS),
        ("updated_at", TS),
        ("alert_count", pa.int32()),
        ("fingerprint_count", pa.int32()),
        ("muted_alert_count", pa.int32()),
        ("entity_count", pa.int32()),
        ("entities", pa.list_(pa.string())),
        ("root_cause", pa.string()),
        ("root_cause_score", pa.float64()),
        ("root_causes", pa.string()),
        ("businesses", pa.list_(pa.string())),
        ("departments", pa.list_(pa.string())),
        ("enrichment", pa.string()),
    ]
)
INCIDENT_ALERTS = pa.schema(
    [
        ("incident_id", pa.string()),
        ("alert_id", pa.string()),
        ("fingerprint", pa.string()),
        ("source", pa.string()),
        ("alertname", pa.string()),
        ("severity", pa.string()),
        ("title", pa.string()),
        ("entity_id", pa.string()),
        ("labels", LABELS),
        ("starts_at", TS),
        ("ends_at", TS),
        ("occurrence", pa.int32()),
        ("muted_by", pa.string()),
        ("is_root_cause", pa.bool_()),
    ]
)
INCIDENT_STATS = pa.schema(
    [
        ("dt", pa.string()),
        ("alerts", pa.int64()),
        ("incidents", pa.int64()),
        ("compression_ratio", pa.float64()),
        ("muted_alerts", pa.int64()),
        ("muted_incidents", pa.int64()),
        ("by_correlation", pa.string()),
    ]
)


@dataclass
class Converged:
    """A day's incidents, their alerts and the day's figures."""

    incidents: pa.Table
    incident_alerts: pa.Table
    stats: pa.Table
    ranked: dict[str, list[rootcause.Candidate]]

    @property
    def compression_ratio(self) -> float:
        return float(self.stats["compression_ratio"][0].as_py()) if self.stats.num_rows else 0.0


@dataclass
class Inputs:
    """Silver (and gold) tables convergence reads for a day."""

    events: pa.Table
    tickets: pa.Table
    assets: pa.Table
    relations: pa.Table
    cmdb: pa.Table
    anomalies: Sequence[rootcause.AnomalyPeak] = ()


def converge(
    inputs: Inputs, day: str, as_of: datetime, rules: ConvergenceRules, runbooks: RunbookIndex
) -> Converged:
    """Incidents that started on ``day`` or were open at its start, as known at ``as_of``."""
    alerts = alert_episodes(inputs.events)
    graph = Graph.at(
        inputs.assets.to_pandas(),
        inputs.relations.to_pandas(),
        pd.Timestamp(as_of),
        rules.max_hops,
        rules.max_shared_fraction,
    )
    windows = maintenance_windows(inputs.tickets)
    mute(alerts, rules, graph, windows, as_of)
    incidents = [i for i in group(alerts, rules, graph) if _belongs(i, day)]
    enricher = Enricher(inputs.cmdb, inputs.tickets, runbooks)
    rows, alert_rows, ranked = [], [], {}
    for inc in incidents:
        ranking = (
            rootcause.rank(inc, graph, anomalies=inputs.anomalies, changes=windows)
            if inc.correlation == "topology"
            else []
        )
        ranked[inc.incident_id] = ranking
        cause = ranking[0].entity_id if ranking else None
        rows.append(_incident_row(inc, rules, ranking, enricher.incident(inc, cause)))
        alert_rows += [
            {
                "incident_id": inc.incident_id,
                "alert_id": a.alert_id,
                "fingerprint": a.fingerprint,
                "source": a.source,
                "alertname": a.alertname,
                "severity": a.severity,
                "title": a.title,
                "entity_id": a.entity_id,
                "labels": sorted(a.labels.items()),
                "starts_at": a.starts_at,
                "ends_at": a.ends_at,
                "occurrence": a.occurrence,
                "muted_by": a.muted_by,
                "is_root_cause": bool(cause) and a.entity_id == cause,
            }
            for a in inc.alerts
        ]
    table = pa.Table.from_pylist(rows, schema=INCIDENTS)
    members = pa.Table.from_pylist(alert_rows, schema=INCIDENT_ALERTS)
    return Converged(table, members, _stats(day, incidents), ranked)


def _belongs(incident: Incident, day: str) -> bool:
    """Started on ``day``, or started before and still open or changed on it."""
    start = incident.started_at.date().isoformat()
    if start == day:
        return True
    if start > day:
        return False
    return any(
        a.starts_at.date().isoformat() >= day
        or a.ends_at is None
        or a.ends_at.date().isoformat() >= day
        for a in incident.alerts
    )


def _title(inc: Incident, rules: ConvergenceRules, cause: str | None) -> str:
    first = inc.alerts[0]
    if inc.correlation.startswith("rule:"):
        rule = next((r for r in rules.correlation if f"rule:{r.name}" == inc.correlation), None)
        lead = f"{rule.title}：" if rule and rule.title else ""
        return f"{lead}{first.alertname}（{len(inc.alerts)} 条告警，{len(inc.entities)} 个配置项）"
    where = cause or first.entity_id or "?"
    return f"{where} {first.title}（{len(inc.alerts)} 条告警，{len(inc.entities)} 个配置项）"


def _incident_row(
    inc: Incident,
    rules: ConvergenceRules,
    ranking: list[rootcause.Candidate],
    enrichment: dict[str, object],
) -> dict[str, object]:
    cause = ranking[0] if ranking else None
    ended = inc.ended_at
    updated = max(
        [a.starts_at for a in inc.alerts] + [a.ends_at for a in inc.alerts if a.ends_at is not None]
    )
    return {
        "incident_id": inc.incident_id,
        "title": _title(inc, rules, cause.entity_id if cause else None),
        "status": "firing" if ended is None else "resolved",
        "muted": inc.muted,
        "severity": inc.severity,
        "correlation": inc.correlation,
        "reopened": inc.reopened,
        "started_at": inc.started_at,
        "ended_at": ended,
        "updated_at": updated,
        "alert_count": len(inc.alerts),
        "fingerprint_count": inc.fingerprints,
        "muted_alert_count": sum(1 for a in inc.alerts if a.muted_by),
        "entity_count": len(inc.entities),
        "entities": inc.entities,
        "root_cause": cause.entity_id if cause else None,
        "root_cause_score": cause.score if cause else None,
        "root_causes": json.dumps([c.as_dict() for c in ranking], ensure_ascii=False),
        "businesses": enrichment["businesses"],
        "departments": enrichment["departments"],
        "enrichment": json.dumps(enrichment, ensure_ascii=False, sort_keys=True, default=str),
    }


def _stats(day: str, incidents: list[Incident]) -> pa.Table:
    """Alert episodes that started on ``day`` (in any incident) per incident opened on it."""
    on = date.fromisoformat(day)
    todays = [i for i in incidents if i.started_at.date() == on]
    n_alerts = sum(1 for i in incidents for a in i.alerts if a.starts_at.date() == on)
    by: dict[str, int] = {}
    for i in todays:
        kind = i.correlation.split(":")[0]
        by[kind] = by.get(kind, 0) + 1
    return pa.Table.from_pylist(
        [
            {
                "dt": day,
                "alerts": n_alerts,
                "incidents": len(todays),
                "compression_ratio": n_alerts / len(todays) if todays else 0.0,
                "muted_alerts": sum(
                    1
                    for i in incidents
                    for a in i.alerts
                    if a.muted_by and a.starts_at.date() == on
                ),
                "muted_incidents": sum(1 for i in todays if i.muted),
                "by_correlation": json.dumps(by, sort_keys=True),
            }
        ],
        schema=INCIDENT_STATS,
    )
