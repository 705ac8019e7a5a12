"""A pipeline run that fails for good raises a platform alert, and a later success resolves it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from opslake.alerting import live, platform
from opslake.assets.resources import LakeResource
from opslake.assets.retries import STEP_RETRY
from opslake.ingest.parsers import alertmanager
from opslake.lake.landing import LandingZone
from opslake.orchestration import jobs, runner
from opslake.settings import Settings

DAY = "2026-03-02"
LINE = b"<13>1 2026-03-02T10:00:00Z web-01 nginx - - - upstream timed out\n"


def _alerts(zone: LandingZone, day: str) -> list[dict]:
    """Platform alerts landed on ``day`` or the day after (a test may cross midnight UTC)."""
    rows = []
    after = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    for batch in zone.batches(platform.SOURCE, day) + zone.batches(platform.SOURCE, after):
        parsed = alertmanager.parse(zone.read(batch), batch)
        assert not parsed.rejects, parsed.rejects
        rows += [
            r | {"labels": dict(r["labels"]), "annotations": dict(r["annotations"])}
            for r in parsed.table.to_pylist()
        ]
    return sorted(rows, key=lambda r: r["received_at"])


def test_every_watched_job_retries_its_steps() -> None:
    defs = runner.definitions()
    for job in jobs.WATCHED:
        assert defs.resolve_job_def(job.name).op_retry_policy == STEP_RETRY, job.name


def test_a_failed_day_alerts_once_and_a_good_rerun_resolves_it(settings: Settings) -> None:
    zone = LandingZone.from_settings(settings)
    batch = zone.write(
        "syslog", LINE, fmt="log", dt=DAY, received_at=datetime(2026, 3, 2, 10, 1, tzinfo=UTC)
    )
    Path(batch.path).write_bytes(LINE[:20])  # truncated: the landing asset refuses the day
    today = datetime.now(UTC).date().isoformat()

    for _ in range(2):  # failing again while the alert is open lands nothing new
        with pytest.raises(runner.PipelineError, match="missing or truncated"):
            runner.materialize(settings, [DAY], ["landing/syslog"])
    [firing] = _alerts(zone, today)
    labels = firing["labels"]
    assert firing["status"] == "firing" and labels["alertname"] == platform.ALERTNAME
    assert (labels["job"], labels["partition"], labels["severity"]) == (
        "daily_pipeline",
        DAY,
        "critical",
    )
    assert labels["step"].startswith("landing__syslog")
    assert firing["fingerprint"] == platform.fingerprint("daily_pipeline", DAY)
    # A deterministic failure is not retried: the run has no step-up-for-retry event.
    inst = runner.instance(settings)
    failed_runs = inst.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert len(failed_runs) == 2
    retried = inst.get_records_for_run(
        failed_runs[0].run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
    ).records
    assert retried == []
    # The live path picks the alert up on the day it landed, as an Alertmanager notification.
    landed_on = firing["received_at"].date().isoformat()
    assert [b.source for b in live.pending_batches(zone.lake, landed_on)] == [platform.SOURCE]

    Path(batch.path).write_bytes(LINE)  # restored
    runner.materialize(settings, [DAY], ["landing/syslog"])
    states = _alerts(zone, today)
    assert [s["status"] for s in states] == ["firing", "resolved"]
    assert states[1]["fingerprint"] == firing["fingerprint"]
    assert states[1]["starts_at"] == firing["starts_at"]


def test_the_sensor_alerts_for_a_run_the_daemon_launched(settings: Settings) -> None:
    zone = LandingZone.from_settings(settings)
    batch = zone.write("syslog", LINE, fmt="log", dt=DAY)
    Path(batch.path).unlink()
    result = (
        runner.definitions()
        .resolve_job_def("daily_pipeline")
        .execute_in_process(
            partition_key=DAY,
            instance=runner.instance(settings),
            raise_on_error=False,
            asset_selection=[dg.AssetKey(["landing", "syslog"])],
        )
    )
    assert not result.success
    failure = next(
        e for e in result.all_events if e.event_type == dg.DagsterEventType.PIPELINE_FAILURE
    )
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_failed_run",
        dagster_instance=runner.instance(settings),
        dagster_run=result.dagster_run,
        dagster_event=failure,
    ).for_run_failure()
    for _ in range(2):  # a sensor evaluated twice lands one alert
        jobs.alert_on_failed_run(context, lake=LakeResource())
    today = datetime.now(UTC).date().isoformat()
    [alert] = _alerts(zone, today)
    assert alert["labels"]["run_id"] == result.run_id
    assert "missing or truncated" in alert["annotations"]["description"]


def test_a_crash_is_reported_even_when_a_blocking_check_stopped_another_step(
    settings: Settings,
) -> None:
    zone = LandingZone.from_settings(settings)
    # Lines of the morning only: silver/logs' freshness check blocks the day.
    zone.write("syslog", LINE, fmt="log", dt=DAY)
    broken = zone.write("alertmanager", b'{"alerts": []}\n', fmt="json", dt=DAY)
    Path(broken.path).unlink()
    with pytest.raises(runner.PipelineError, match="landing__alertmanager") as failed:
        runner.materialize(
            settings,
            [DAY],
            ["landing/syslog", "bronze/syslog_lines", "silver/logs", "landing/alertmanager"],
        )
    assert not isinstance(failed.value, runner.QualityBlocked)
