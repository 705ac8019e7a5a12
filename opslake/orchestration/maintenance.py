"""Maintenance jobs (backup, landing retention): one op, retried like the assets, run daily."""

# No `from __future__ import annotations`: Dagster reads the job function's annotations.
import dagster as dg

from opslake.assets.retries import STEP_RETRY


def daily_op_job(
    op: dg.OpDefinition, *, name: str, kind: str, cron: str, when: str
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """The job ``name`` running ``op`` alone (described as it), and its schedule (UTC ``cron``)."""

    @dg.job(name=name, tags={"kind": kind}, op_retry_policy=STEP_RETRY, description=op.description)
    def one_op_job() -> None:
        op()

    return one_op_job, dg.ScheduleDefinition(
        name=f"{name}_schedule",
        job=one_op_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=when,
    )
