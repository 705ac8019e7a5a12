"""Quality domain: the daily check-up report and quality scores (S6.2e).

The checks themselves run inside each table's asset (opslake.assets.keys). The report has no
upstream dependency on purpose: it must be written exactly when checks fail and block the
partition, so it runs in its own job, ``quality_followup``, after the day's pipeline, with the
landed quality alerts going into silver events.
"""

from datetime import date, timedelta

import dagster as dg

from opslake.assets.keys import OWNER, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.assets.retries import STEP_RETRY
from opslake.quality.report import score_table, write_report

#: Asset keys of the follow-up after a day's pipeline: quality alerts into silver events,
#: then the report.
FOLLOWUP = ("landing/quality", "bronze/quality_alerts", "silver/events", "gold/quality_report")


@dg.asset(
    key=key("gold", "quality_report"),
    group_name="quality",
    kinds={"html", "parquet"},
    owners=[OWNER],
    partitions_def=DAILY,
    description=(
        "数据质量体检报告 / the data-quality check-up of the day: a self-contained HTML page "
        "(gold/quality_report/dt=D/report.html) with scores per table and source, failed "
        "checks with sample rows, 30-day trends, per-metric completeness and per-source "
        "freshness; and the day's scores in gold/quality_scores (overall, table, source, metric)."
    ),
)
def quality_report(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Write the day's report and scores."""
    lk, day = lake.lake(), date.fromisoformat(context.partition_key)
    path = write_report(lk, day)
    scores = score_table(lk, day)
    lk.write_table(scores, "gold", "quality_scores", {"dt": day.isoformat()})
    overall = scores.filter([k == "overall" for k in scores.column("subject_kind").to_pylist()])
    value = overall.column("score")[0].as_py() if overall.num_rows else None
    return dg.MaterializeResult(
        metadata={
            "path": path,
            "scores": scores.num_rows,
            "overall_score": value if value is not None else -1,
        }
    )


quality_followup = dg.define_asset_job(
    "quality_followup",
    selection=[dg.AssetKey.from_user_string(k) for k in FOLLOWUP],
    description="After a day's pipeline: quality alerts into silver events, then the report.",
    op_retry_policy=STEP_RETRY,
)


@dg.schedule(
    cron_schedule="50 0 * * *",
    job=quality_followup,
    execution_timezone="UTC",
    description="Yesterday's quality follow-up, after the daily pipeline (00:30).",
)
def quality_followup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Yesterday's partition."""
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=yesterday, partition_key=yesterday)


defs = dg.Definitions(
    assets=[quality_report], jobs=[quality_followup], schedules=[quality_followup_schedule]
)
