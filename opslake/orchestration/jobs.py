"""Jobs and schedules: the daily pipeline over every partitioned asset, then serving."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

daily_pipeline = dg.define_asset_job(
    "daily_pipeline",
    selection=dg.AssetSelection.groups("landing", "bronze", "silver", "gold"),
    description="Landing → bronze → silver → gold for one UTC day.",
)

serving_refresh = dg.define_asset_job(
    "serving_refresh",
    selection=dg.AssetSelection.groups("catalog", "serving"),
    description="Rebuild the catalog tables and the read-only serving warehouse from gold, "
                "and swap it in.",
)



@dg.schedule(cron_schedule="30 0 * * *", job=daily_pipeline, execution_timezone="UTC",
             description="Materialize yesterday (UTC) once its last batches have landed.")
def daily_pipeline_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Yesterday's partition, shortly after midnight UTC."""
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=yesterday, partition_key=yesterday)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[daily_pipeline],
    request_job=serving_refresh, default_status=dg.DefaultSensorStatus.RUNNING,
    description="The warehouse is a snapshot of gold: rebuild and swap it in after each "
                "successful daily pipeline run, so screens and the API see the new day.")
def serving_after_daily_pipeline(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """One warehouse rebuild per successful daily run."""
    return dg.RunRequest(run_key=context.dagster_run.run_id)


defs = dg.Definitions(jobs=[daily_pipeline, serving_refresh],
                      schedules=[daily_pipeline_schedule],
                      sensors=[serving_after_daily_pipeline])
