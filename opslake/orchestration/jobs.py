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


defs = dg.Definitions(jobs=[daily_pipeline, serving_refresh],
                      schedules=[daily_pipeline_schedule])
