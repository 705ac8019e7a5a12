"""Jobs and schedules: the daily pipeline over every partitioned asset, then serving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from opslake.alerting import platform
from opslake.assets.alerting import alerts_live_job
from opslake.assets.metric_catalog import metrics_live_job
from opslake.assets.models import ml_training
from opslake.assets.quality import quality_followup
from opslake.assets.reports import service_reports_job
from opslake.assets.resources import LakeResource
from opslake.assets.retries import STEP_RETRY
from opslake.orchestration.backup import backup_job
from opslake.orchestration.retention import landing_purge_job

daily_pipeline = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.groups("landing", "bronze", "silver", "gold"),
    description="Landing → bronze → silver → gold for one UTC day.",
    op_retry_policy=STEP_RETRY,
)

serving_refresh = dg.define_asset_job(
    "serving_refresh",
    selection=dg.AssetSelection.groups("catalog", "serving"),
    description="Rebuild the catalog tables and the read-only serving warehouse from gold, "
    "and swap it in.",
    op_retry_policy=STEP_RETRY,
)


@dg.schedule(
    cron_schedule="30 0 * * *",
    job=daily_pipeline,
    execution_timezone="UTC",
    description="Materialize yesterday (UTC) once its last batches have landed.",
)
def daily_pipeline_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Yesterday's partition, shortly after midnight UTC."""
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=yesterday, partition_key=yesterday)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[daily_pipeline],
    request_job=serving_refresh,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="The warehouse is a snapshot of gold: rebuild and swap it in after each "
    "successful daily pipeline run, so screens and the API see the new day.",
)
def serving_after_daily_pipeline(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """One warehouse rebuild per successful daily run."""
    return dg.RunRequest(run_key=context.dagster_run.run_id)


#: Jobs whose failure is the platform's (collection jobs raise their own breaker alerts).
WATCHED = [
    daily_pipeline,
    serving_refresh,
    quality_followup,
    ml_training,
    service_reports_job,
    alerts_live_job,
    metrics_live_job,
    backup_job,
    landing_purge_job,
]


@dg.run_failure_sensor(
    monitored_jobs=WATCHED,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A run that failed for good (its steps' retries spent) raises a critical "
    "alert through alert management (opslake.alerting.platform).",
)
def alert_on_failed_run(context: dg.RunFailureSensorContext, lake: LakeResource) -> None:
    """Land the platform alert of a failed run (once per run, however often evaluated)."""
    run = context.dagster_run
    steps = context.get_step_failure_events()
    error = steps[0].step_failure_data.error if steps else None
    platform.land_run_failure(
        lake.landing(),
        job=run.job_name,
        partition=run.tags.get("dagster/partition"),
        run_id=run.run_id,
        step=steps[0].step_key if steps else "",
        error=error.message if error else context.failure_event.message or "see the run",
        at=datetime.now(UTC),
    )


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=WATCHED,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A successful run resolves the platform alert of the same job and day.",
)
def resolve_on_successful_run(context: dg.RunStatusSensorContext, lake: LakeResource) -> None:
    """Land ``resolved`` for the job's open failure alert, if there is one."""
    run = context.dagster_run
    platform.land_run_recovered(
        lake.landing(),
        job=run.job_name,
        partition=run.tags.get("dagster/partition"),
        run_id=run.run_id,
        at=datetime.now(UTC),
    )


defs = dg.Definitions(
    jobs=[daily_pipeline, serving_refresh],
    schedules=[daily_pipeline_schedule],
    sensors=[serving_after_daily_pipeline, alert_on_failed_run, resolve_on_successful_run],
)
