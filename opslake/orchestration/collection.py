"""Collection tasks in Dagster: one job and one schedule per task file (S6.1e).

Jobs are named ``collect__<task>`` ('-' → '_'); each runs ``opslake.ingest.collect.run_task``
once. Schedules are on by default but collect only when the task is enabled and its breaker
closed *per the collection state* at evaluation time, so ``opslake tasks enable/disable/reset``
take effect on the next tick without touching Dagster; otherwise the tick is skipped with
the reason. Cron is derived from ``every_seconds``, rounded to whole minutes (sub-minute →
every minute), to hours from an hour up and to a day from a day up.
"""

from datetime import UTC, datetime

import dagster as dg

from opslake.ingest import collect
from opslake.ingest.tasks import CollectionTask, load_tasks, tasks_dir
from opslake.settings import Settings


def cron_for(every_seconds: int) -> str:
    """The cron schedule closest to ``every_seconds`` (at least once a minute)."""
    minutes = max(1, round(every_seconds / 60))
    if minutes == 1:
        return "* * * * *"
    if minutes < 60:
        return f"*/{minutes} * * * *"
    hours = max(1, round(minutes / 60))
    if hours == 1:
        return "0 * * * *"
    if hours < 24:
        return f"0 */{hours} * * *"
    return "0 0 * * *"


def job_name(task: CollectionTask | str) -> str:
    """``collect__<task name>`` with '-' as '_' (Dagster names allow no '-')."""
    name = task if isinstance(task, str) else task.name
    return "collect__" + name.replace("-", "_")


@dg.op(
    config_schema={"task": str},
    tags={"kind": "collection"},
    description="Run one collection task once: land what its connector collects, its cost "
    "as opslake_collection_* metrics, and a CollectionTaskPaused alert when "
    "its circuit breaker trips.",
)
def run_collection_task(context: dg.OpExecutionContext) -> None:
    name = context.op_config["task"]
    [task] = collect.select(load_tasks(tasks_dir()), [name])
    result = collect.run_task(task, Settings.from_env(), datetime.now(UTC))
    if result.skipped:
        context.log.warning(f"{name} skipped: {result.skipped}")
        return
    record = result.record
    for batch in result.landed:
        context.log.info(
            f"landed {batch.source}/{batch.batch_id} ({batch.bytes:,} bytes, {batch.connector})"
        )
    if result.paused_reason:
        context.log.error(f"{name} paused: {result.paused_reason}")
    if record is not None and not record.ok:
        raise dg.Failure(
            f"collection task {name} failed: {record.error}",
            metadata={"wall_s": record.wall_s, "cpu_s": record.cpu_s},
        )


def _job(task: CollectionTask) -> dg.JobDefinition:
    @dg.job(
        name=job_name(task),
        tags={"opslake/collection_task": task.name},
        description=(task.description or f"Collection task {task.name}")
        + f" (connector {task.connector}, every {task.every_seconds} s; "
        f"file {task.path.name if task.path else '-'})",
        config={"ops": {"run_collection_task": {"config": {"task": task.name}}}},
        # One op: a step process of its own would only add its start-up (seconds on a busy
        # host) to every collection, and to how late the platform's own alerts come.
        executor_def=dg.in_process_executor,
    )
    def collection_job() -> None:
        run_collection_task()

    return collection_job


def _schedule(task: CollectionTask, job: dg.JobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"{job.name}_schedule",
        cron_schedule=cron_for(task.every_seconds),
        job=job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Every {task.every_seconds} s (rounded to cron); skipped while "
        f"the task is disabled or paused (`opslake tasks list`).",
    )
    def collection_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        state = collect.read_state(Settings.from_env())
        if not collect.is_enabled(task, state):
            return dg.SkipReason(f"{task.name} is disabled; `opslake tasks enable {task.name}`")
        if (reason := collect.paused_reason(task, state)) is not None:
            return dg.SkipReason(
                f"{task.name} is paused ({reason}); `opslake tasks reset {task.name}` once fixed"
            )
        tick = context.scheduled_execution_time
        return dg.RunRequest(run_key=tick.isoformat() if tick else None)

    return collection_schedule


def build_defs(tasks: list[CollectionTask]) -> dg.Definitions:
    """Jobs and schedules for ``tasks``."""
    jobs = [_job(t) for t in tasks]
    return dg.Definitions(
        jobs=jobs, schedules=[_schedule(t, j) for t, j in zip(tasks, jobs, strict=True)]
    )


defs = build_defs(load_tasks(tasks_dir(), missing_ok=True))
