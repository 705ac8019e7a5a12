"""Hand-off to automation (S5.5e): which incidents launch a runbook job, and its first step.

A runbook in ``config/alerting/runbooks.yaml`` may name a Dagster job. An incident that fires,
is not muted and whose probable cause raised that alert name launches the job once
(``runbook_sensor`` keys the run by incident and job). The job shipped here collects the
cause CI's last hour of metrics, logs and alerts into ``alerting/actions/<incident>/`` so the
person (or the automation) taking the incident starts from the evidence; site-specific
remediation jobs are added the same way. Ticket creation in the ITSM (S5.5f) is a notification
receiver of kind ``ticket`` (see opslake.alerting.dispatch).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from opslake.alerting.enrich import RunbookIndex
from opslake.lake.schemas import LOGS, METRIC_POINTS
from opslake.lake.storage import Lake
from opslake.metrics_catalog.live import LIVE_POINTS

ACTIONS_DIR = "alerting/actions"
LOOKBACK = timedelta(hours=1)


@dataclass(frozen=True)
class RunbookRequest:
    """One job launch for one incident."""

    incident_id: str
    entity_id: str
    alertname: str
    job: str


def runbook_requests(
    incidents: Sequence[Mapping[str, object]],
    alerts: Sequence[Mapping[str, object]],
    runbooks: RunbookIndex,
    known_jobs: Iterable[str],
) -> list[RunbookRequest]:
    """The launches due for firing, unmuted incidents (jobs not defined are skipped)."""
    jobs = set(known_jobs)
    first: dict[str, Mapping[str, object]] = {}
    for a in sorted(alerts, key=lambda r: (r["starts_at"], r["alert_id"])):
        if a["is_root_cause"]:
            first.setdefault(str(a["incident_id"]), a)
    out = []
    for inc in incidents:
        a = first.get(str(inc["incident_id"]))
        if inc["status"] != "firing" or inc["muted"] or a is None:
            continue
        rb = runbooks.for_alert(str(a["alertname"]))
        if rb is not None and rb.job in jobs:
            out.append(
                RunbookRequest(
                    str(inc["incident_id"]), str(a["entity_id"]), str(a["alertname"]), rb.job
                )
            )
    return out


def _window(
    lake: Lake,
    layer: str,
    name: str,
    schema: pa.Schema,
    days: list[str],
    entity_id: str,
    ts: str,
    since: datetime,
) -> pa.Table:
    known = set(lake.partitions(layer, name))
    table = lake.read_table(layer, name, schema=schema, dts=[d for d in days if d in known])
    return table.filter(
        pc.and_(
            pc.equal(table["entity_id"], entity_id),
            pc.greater_equal(table[ts], pa.scalar(since, table[ts].type)),
        )
    )


def collect_diagnostics(
    lake: Lake, incident_id: str, entity_id: str, runbook: str, now: datetime, *, run_id: str
) -> str:
    """Write the CI's last hour of evidence for an incident; returns the file's lake path."""
    since = now - LOOKBACK
    days = sorted({since.date().isoformat(), now.date().isoformat()})
    points = pa.concat_tables(
        [
            _window(lake, "silver", "metric_points", METRIC_POINTS, days, entity_id, "ts", since),
            _window(lake, "silver", LIVE_POINTS, METRIC_POINTS, days, entity_id, "ts", since),
        ]
    )
    logs = _window(lake, "silver", "logs", LOGS, days, entity_id, "ts", since)
    latest: dict[str, dict[str, object]] = {}
    for row in points.sort_by("ts").to_pylist():
        latest[row["metric"]] = {"ts": row["ts"].isoformat(), "value": row["value"]}
    doc = {
        "incident_id": incident_id,
        "entity_id": entity_id,
        "runbook": runbook,
        "run_id": run_id,
        "collected_at": now.isoformat(),
        "since": since.isoformat(),
        "metric_points": points.num_rows,
        "latest": latest,
        "log_lines": logs.num_rows,
        "worst_logs": [
            {"ts": r["ts"].isoformat(), "severity": r["severity"], "message": r["message"]}
            for r in sorted(logs.to_pylist(), key=lambda r: (r["severity"], r["ts"]))[:20]
        ],
        "action": "diagnostics collected; no change made to the CI",
    }
    path = lake.path(ACTIONS_DIR, incident_id, f"{runbook}-{run_id}.json")
    lake.put_atomic(path, [json.dumps(doc, ensure_ascii=False, indent=1).encode()])
    return path
