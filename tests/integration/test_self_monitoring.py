"""The platform watches itself (S6.10a, issue 21 must-show 4): a real failed pipeline run and a
real burst of 5xx answers from a running ``opslake serve`` each become an incident of alert
management within two minutes, and the self-monitoring figures land as ordinary metrics.

The real parts: ``opslake serve`` in a subprocess (its ``/metrics``), a Dagster run that fails
on a truncated landed batch, the ``opslake-self`` collection task run as its schedule runs it
(``collect.run_task``), and the ``alerts_live_refresh`` job its sensor starts.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from opslake.alerting import live, platform
from opslake.ingest import collect
from opslake.ingest.parsers import prometheus
from opslake.ingest.tasks import load_tasks
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.lake.warehouse import build_warehouse
from opslake.orchestration import runner
from opslake.settings import Settings
from tests.integration.services import free_port, running
from tests.keys import bearer, ingest_key

DAY = "2026-03-02"
LINE = b"<13>1 2026-03-02T10:00:00Z web-01 nginx - - - upstream timed out\n"
REPO = Path(__file__).resolve().parents[2]


def _live_alerts(lake: Lake, day: str) -> dict[str, dict]:
    """Today's live incident alerts by alert name (the table the API and notifications read)."""
    if day not in lake.partitions("gold", live.LIVE_INCIDENT_ALERTS):
        return {}
    rows = lake.read_table("gold", live.LIVE_INCIDENT_ALERTS, dts=[day]).to_pylist()
    return {r["alertname"]: r for r in rows}


def test_a_failed_run_and_an_api_error_burst_become_incidents_within_two_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSLAKE_HOME", str(tmp_path / "lake"))
    monkeypatch.delenv("OPSLAKE_STATE_DIR", raising=False)
    settings = Settings.from_env()
    scraper = ingest_key(settings, "self-watch", "data_engineer", ["platform:read"])
    sender = ingest_key(settings)  # push only: may not read /metrics
    reader = ingest_key(settings, "ops", "ops_engineer")
    monkeypatch.setenv("OPSLAKE_SELF_API_KEY", scraper)
    zone = LandingZone.from_settings(settings)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {**os.environ}
    with (
        running(
            [sys.executable, "-m", "opslake", "serve", "--port", str(port)],
            f"{api}/healthz",
            tmp_path / "serve.log",
            env=env,
        ),
        httpx.Client(base_url=api, timeout=30, trust_env=False) as http,
    ):
        # Who may read /metrics: platform:read, not a push-only key, not anonymous.
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers=bearer(sender)).status_code == 403
        task = next(
            t for t in load_tasks(REPO / "collection" / "tasks") if t.name == "opslake-self"
        )
        # The task as shipped, pointed at this service and at a port where no Superset runs.
        nothing = f"http://127.0.0.1:{free_port()}"
        params = {**task.params, "api_url": api, "superset_url": nothing}
        task = dataclasses.replace(task, params=params)

        # 1. A pipeline run that fails for good (a landed batch truncated under it).
        batch = zone.write("syslog", LINE, fmt="log", dt=DAY)
        Path(batch.path).write_bytes(LINE[:20])
        with pytest.raises(runner.PipelineError, match="missing or truncated"):
            runner.materialize(settings, [DAY], ["landing/syslog"])
        failed_at = time.monotonic()
        # A collection (the schedule's minute): the baseline the next one counts answers from.
        first = collect.run_task(task, settings)
        assert first.record is not None and first.record.ok, first.record

        # 2. A burst of 5xx: the serving warehouse is unreadable, every read answers 503.
        settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
        settings.warehouse_path.write_bytes(b"not a DuckDB file")
        burst = [http.get("/v1/incidents", headers=bearer(reader)) for _ in range(8)]
        assert {a.status_code for a in burst} == {503}, burst[0].text
        burst_at = time.monotonic()
        exposed = {
            (s.labels["route"], s.labels["status_class"]): s.value
            for family in text_string_to_metric_families(
                http.get("/metrics", headers=bearer(scraper)).text
            )
            for s in family.samples
            if s.name == "opslake_http_requests_total"
        }
        assert exposed[("/v1/incidents", "5xx")] == 8
        assert exposed[("/metrics", "4xx")] == 2  # the anonymous and the push-only refusals

        # 3. The next collection (the schedule's next minute) and the live alert path.
        second = collect.run_task(task, settings)
        assert second.record is not None and second.record.ok, second.record
        result = (
            runner.definitions()
            .resolve_job_def("alerts_live_refresh")
            .execute_in_process(instance=runner.instance(settings))
        )
        assert result.success
        today = datetime.now(UTC).date().isoformat()
        alerts = _live_alerts(zone.lake, today)
        # The API lists them: the warehouse (rebuilt over the broken file) serves the live
        # incidents as views over their Parquet files, so no later rebuild is needed.
        build_warehouse(zone.lake, settings.warehouse_path)
        listed = http.get("/v1/incidents", params={"live": "true"}, headers=bearer(reader))
        assert listed.status_code == 200, listed.text
        by_incident = {
            row["incident_id"]: http.get(
                f"/v1/incidents/{row['incident_id']}/alerts", headers=bearer(reader)
            )
            .json()
            .get("rows", [])
            for row in listed.json()["rows"]
        }
        done = time.monotonic()

    # Both are incidents of alert management, within two minutes of what caused them.
    run_failed, burst_alert = alerts["PipelineRunFailed"], alerts["ApiErrorBurst"]
    assert run_failed["source"] == burst_alert["source"] == platform.EVENT_SOURCE
    assert run_failed["incident_id"].startswith("INC-")
    assert burst_alert["incident_id"].startswith("INC-")
    assert burst_alert["entity_id"] == "opslake-api" or burst_alert["entity_id"] is None
    listed_alerts = {a["alertname"]: i for i, rows in by_incident.items() for a in rows}
    assert listed_alerts["PipelineRunFailed"] == run_failed["incident_id"]
    assert listed_alerts["ApiErrorBurst"] == burst_alert["incident_id"]
    assert "SupersetDown" in listed_alerts  # and a Superset that does not answer
    # Processing time; the schedule adds at most a minute (collection) and 5 s (the sensor).
    print(
        f"failure → listed by the API {done - failed_at:.1f} s, burst → listed "
        f"{done - burst_at:.1f} s "
        "(+ ≤ 60 s collection interval + ≤ 5 s sensor interval)"
    )
    assert done - failed_at + 65 < 120 and done - burst_at + 65 < 120

    # The self-monitoring figures landed as an ordinary Prometheus batch that bronze parses.
    metrics_batch = second.landed[0]
    assert metrics_batch.connector == "opslake-self/1"
    parsed = prometheus.parse(zone.read(metrics_batch), metrics_batch)
    assert not parsed.rejects
    figures = {(r["metric"], r["label_set"]): r["value"] for r in parsed.table.to_pylist()}
    by_metric = {m: v for (m, _), v in figures.items()}
    assert by_metric["opslake_api_up"] == 1.0
    assert by_metric["opslake_api_errors_5xx"] == 8.0
    assert by_metric["opslake_pipeline_failed_runs"] == 0.0  # counted by the run before
    assert "opslake_lake_bytes" not in by_metric  # the lake is measured once an hour: the first run
    baseline = first.landed[0]
    rows = prometheus.parse(zone.read(baseline), baseline).table.to_pylist()
    assert [r["value"] for r in rows if r["metric"] == "opslake_pipeline_failed_runs"] == [1.0]
    # Today's landing holds the failed run's alert: the lake's own size per layer and day.
    assert any(
        r["metric"] == "opslake_lake_bytes" and 'layer="landing"' in r["label_set"] and r["value"]
        for r in rows
    )
    assert all('job="opslake-self"' in labels for _, labels in figures)
