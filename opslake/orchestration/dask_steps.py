"""A Dagster executor that runs each step as a task on an existing Dask scheduler."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import DagsterEvent
from dagster._core.execution.api import create_execution_plan, execute_plan_iterator
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.retries import RetryMode
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.dagster_run import DagsterRun
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster_dask.executor import get_dask_resource_requirements

from opslake.errors import ConfigError
from opslake.orchestration import runner
from opslake.settings import Settings

if TYPE_CHECKING:
    from distributed import Future

#: Dask task keys of steps: ``opslake-step/<run id>/<step key>/<attempt>``.
TASK_PREFIX = "opslake-step"


class _StepTask:
    """One step, run on a Dask worker: the arguments stay opaque to Dask.

    ``dagster_dask.dask_executor`` hands them to ``client.submit`` as they are, and Dask
    2026 walks into every tuple argument, which Dagster's records (a partitioned job's
    ``DagsterRun``, repository load data) refuse: so the step travels as one object.
    """

    def __init__(
        self,
        recon_job: ReconstructableJob,
        run: DagsterRun,
        run_config: Mapping[str, object],
        step_key: str,
        instance_ref: InstanceRef,
        known_state: KnownExecutionState,
        retry_mode: RetryMode,
    ) -> None:
        self.recon_job, self.run, self.run_config = recon_job, run, run_config
        self.step_key, self.instance_ref = step_key, instance_ref
        self.known_state, self.retry_mode = known_state, retry_mode
        # The graph (how many shard steps a day has) is read from the environment when the
        # definitions load: a worker started with another count has other steps.
        self.shards = Settings.from_env().day_shards

    def __call__(self) -> list[DagsterEvent]:
        """Execute the step against the shared instance; its events, already logged there."""
        here = Settings.from_env().day_shards
        if here != self.shards:
            raise ConfigError(
                f"this worker was started with OPSLAKE_SHARDS={here}, the run "
                f"uses {self.shards}: `opslake cluster down`, then `cluster up` "
                "with the same OPSLAKE_SHARDS as `materialize --cluster`"
            )
        with dg.DagsterInstance.from_ref(self.instance_ref) as instance:
            job = self.recon_job.get_subset(op_selection=self.run.resolved_op_selection)
            plan = create_execution_plan(
                job,
                run_config=self.run_config,
                step_keys_to_execute=[self.step_key],
                known_state=self.known_state,
            )
            return list(
                execute_plan_iterator(
                    plan,
                    job,
                    self.run,
                    instance,
                    retry_mode=self.retry_mode,
                    run_config=self.run_config,
                )
            )


class DaskStepExecutor(dg.Executor):
    """Each step a Dask task on an existing scheduler, ordered by Dagster's own plan.

    Like the multiprocess and Celery executors (and unlike ``dagster_dask.dask_executor``,
    which submits every step up front), a step starts only once its upstream steps
    succeeded: a failed blocking check skips what it blocks, and retry policies apply. A
    worker that dies mid-step costs a rerun elsewhere (Dask's ``allowed-failures``); past
    that the step fails, or is retried by its policy.
    """

    def __init__(self, address: str) -> None:
        self.address = address

    @property
    def retries(self) -> RetryMode:
        """Retry policies are honoured."""
        return RetryMode.ENABLED

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        """Submit ready steps, hand back their events, until the plan is complete."""
        from distributed import Client

        run = plan_context.dagster_run
        attempts: dict[str, int] = {}
        with (
            Client(self.address, set_as_default=False) as client,
            execution_plan.start(retry_mode=self.retries) as active,
        ):
            running: dict[str, Future] = {}
            while not active.is_complete or running:
                if active.check_for_interrupts():
                    client.cancel(list(running.values()))
                    active.mark_interrupted()
                    raise DagsterExecutionInterruptedError()
                for step in active.get_steps_to_execute():
                    attempts[step.key] = attempts.get(step.key, 0) + 1
                    task = _StepTask(
                        plan_context.reconstructable_job,
                        run,
                        plan_context.run_config,
                        step.key,
                        plan_context.instance.get_ref(),
                        active.get_known_state(),
                        self.retries,
                    )
                    running[step.key] = client.submit(
                        task,
                        key=f"{TASK_PREFIX}/{run.run_id}/{step.key}/{attempts[step.key]}",
                        resources=get_dask_resource_requirements(step.tags),
                        pure=False,
                    )
                finished = [key for key, future in running.items() if future.done()]
                for key in finished:
                    yield from self._finish(plan_context, active, key, running.pop(key))
                yield from active.plan_events_iterator(plan_context)
                if not finished:
                    time.sleep(0.1)

    def _finish(
        self,
        plan_context: PlanOrchestrationContext,
        active: ActiveExecution,
        key: str,
        future: Future,
    ) -> Iterator[DagsterEvent]:
        try:
            events = future.result()
        except Exception:  # noqa: BLE001 - the task's own error, e.g. KilledWorker
            context = plan_context.for_step(active.get_step_by_key(key))
            events = [
                self.log_failure_or_retry_event_after_error(
                    context,
                    serializable_error_info_from_exc_info(sys.exc_info()),
                    active.get_known_state(),
                )
            ]
        for event in events:
            yield event
            active.handle_event(event)
        active.verify_complete(plan_context, key)


@dg.executor(
    name="opslake_dask",
    config_schema={"address": dg.Field(str)},
    requirements=dg.multiple_process_executor_requirements(),
)
def dask_step_executor(init_context: dg.InitExecutorContext) -> DaskStepExecutor:
    """:class:`DaskStepExecutor` on the scheduler at ``address``."""
    return DaskStepExecutor(init_context.executor_config["address"])


@functools.cache
def _cluster_definitions() -> dg.Definitions:
    return dg.Definitions.merge(runner.definitions(), dg.Definitions(executor=dask_step_executor))


def cluster_job(name: str) -> dg.JobDefinition:
    """Job ``name`` of the code location with the Dask executor; each worker rebuilds it."""
    return _cluster_definitions().resolve_job_def(name)
