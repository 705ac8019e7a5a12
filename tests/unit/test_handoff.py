"""Hand-off to automation: which incidents launch a runbook job, and what the job collects."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import pyarrow as pa

from opslake.alerting.enrich import Runbook, RunbookIndex
from opslake.alerting.handoff import collect_diagnostics, runbook_requests
from opslake.alerting.live import LIVE_INCIDENT_ALERTS, LIVE_INCIDENTS
from opslake.assets.alerting import runbook_sensor
from opslake.lake.schemas import LOGS, METRIC_POINTS
from opslake.lake.storage import Lake
from opslake.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)
RUNBOOKS = RunbookIndex(
    "https://wiki/{alertname}",
    {
        "NodeCpuHigh": Runbook("https://wiki/cpu", "CPU", "runbook_collect_diagnostics"),
        "DbQuerySlow": Runbook("https://wiki/db", "DB", "no_such_job"),
    },
)


def _rows(status: str = "firing", muted: bool = False, name: str = "NodeCpuHigh"):
    incident = {"incident_id": "INC-1", "status": status, "muted": muted}
    alerts = [
        {
            "incident_id": "INC-1",
            "alert_id": "a2",
            "alertname": "HttpErrorRatioHigh",
            "entity_id": "svc-a",
            "starts_at": NOW,
            "is_root_cause": False,
        },
        {
            "incident_id": "INC-1",
            "alert_id": "a1",
            "alertname": name,
            "entity_id": "host-1",
            "starts_at": NOW - timedelta(minutes=2),
            "is_root_cause": True,
        },
    ]
    return [incident], alerts


def test_a_firing_incident_launches_the_job_its_causes_runbook_names_once() -> None:
    jobs = {"runbook_collect_diagnostics"}
    [req] = runbook_requests(*_rows(), RUNBOOKS, jobs)
    assert (req.incident_id, req.entity_id, req.alertname, req.job) == (
        "INC-1",
        "host-1",
        "NodeCpuHigh",
        "runbook_collect_diagnostics",
    )
    assert runbook_requests(*_rows(status="resolved"), RUNBOOKS, jobs) == []
    assert runbook_requests(*_rows(muted=True), RUNBOOKS, jobs) == []
    assert runbook_requests(*_rows(name="DbQuerySlow"), RUNBOOKS, jobs) == []  # unknown job
    assert runbook_requests(*_rows(name="NtpClockSkew"), RUNBOOKS, jobs) == []  # no job


def test_diagnostics_hold_the_last_hour_of_the_cis_metrics_and_logs(lake: Lake) -> None:
    day = NOW.date().isoformat()
    ts = [NOW - timedelta(minutes=m) for m in (90, 30, 5)]
    lake.write_table(
        pa.Table.from_pylist(
            [
                {
                    "ts": t,
                    "metric": "node_cpu_utilisation_ratio",
                    "entity_id": e,
                    "value": v,
                    "labels": [],
                    "source": "prometheus",
                    "batch_id": "b",
                }
                for t, v in zip(ts, (0.2, 0.7, 0.97), strict=True)
                for e in ("host-1", "host-2")
            ],
            schema=METRIC_POINTS,
        ),
        "silver",
        "metric_points",
        {"dt": day},
    )
    lake.write_table(
        pa.Table.from_pylist(
            [
                {
                    "ts": NOW - timedelta(minutes=3),
                    "entity_id": "host-1",
                    "app": "kernel",
                    "severity": 2,
                    "facility": 0,
                    "message": "CPU soft lockup",
                    "structured_data": None,
                    "source": "syslog",
                    "batch_id": "b",
                }
            ],
            schema=LOGS,
        ),
        "silver",
        "logs",
        {"dt": day},
    )
    path = collect_diagnostics(lake, "INC-1", "host-1", "NodeCpuHigh", NOW, run_id="r1")
    doc = json.loads(lake.read_bytes(path))
    assert doc["metric_points"] == 2  # the 90-minute-old point and host-2 are left out
    assert doc["latest"]["node_cpu_utilisation_ratio"]["value"] == 0.97
    assert doc["log_lines"] == 1 and doc["worst_logs"][0]["message"] == "CPU soft lockup"


def test_runbook_sensor_requests_one_keyed_run_per_incident_and_job(
    lake: Lake, settings: Settings
) -> None:
    """The sensor reads the lake named by the environment, as ``settings`` sets it."""
    day = NOW.date().isoformat()
    incidents, alerts = _rows()
    lake.write_table(pa.Table.from_pylist(incidents), "gold", LIVE_INCIDENTS, {"dt": day})
    lake.write_table(pa.Table.from_pylist(alerts), "gold", LIVE_INCIDENT_ALERTS, {"dt": day})
    result = runbook_sensor(dg.build_sensor_context())
    [request] = result.run_requests
    assert request.run_key == "INC-1:runbook_collect_diagnostics"
    assert request.job_name == "runbook_collect_diagnostics"
    config = request.run_config["ops"]["collect_diagnostics"]["config"]
    assert config == {"incident_id": "INC-1", "entity_id": "host-1", "runbook": "NodeCpuHigh"}
