"""Runs the Dagster jobs against the persistent instance the UI shows (``state_dir/dagster``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import yaml

from opslake.alerting import platform
from opslake.errors import ConfigError, OpsLakeError, PipelineError, QualityBlocked
from opslake.lake import shared_db
from opslake.lake.landing import LandingZone
from opslake.lake.storage import LAYERS
from opslake.settings import Settings

#: What one run of a job returns, in this process or on the cluster.
RunResult = dg.ExecuteInProcessResult | dg.JobExecutionResult
#: Runs one job for one day: (job name, partition key, asset keys or None for the whole job).
RunDay = Callable[[str, str, Sequence[dg.AssetKey] | None], RunResult]


def dagster_url(settings: Settings, default: str | None = None) -> str | None:
    """The database of Dagster's instance, as SQLAlchemy names it: ``OPSLAKE_POSTGRES_URL`` as
    given (a database of Dagster's own), else schema ``dagster`` of ``OPSLAKE_DATABASE_URL``
    (or of ``default``, the cluster's own PostgreSQL); None: SQLite under ``dagster_home``."""
    if settings.postgres_url:
        return shared_db.sqlalchemy_url(settings.postgres_url)
    base = settings.database_url or default
    return shared_db.schema_url(base, shared_db.DAGSTER) if base else None


def prepare_database(settings: Settings, default: str | None = None) -> str | None:
    """:func:`dagster_url`, its schema created first (Dagster creates its tables in it)."""
    base = None if settings.postgres_url else settings.database_url or default
    if base:
        shared_db.create_schema(base, shared_db.DAGSTER)
    return dagster_url(settings, default)


def write_config(home: Path, storage: str | Mapping[str, str] | None, *, step_logs: bool) -> Path:
    """Write ``home/dagster.yaml`` (0600) when it differs from what the settings ask for.

    ``storage``: the instance's PostgreSQL URL, or ``{"env": NAME}`` for one each process reads
    from its environment; None: SQLite files under ``home``. ``step_logs`` False: no captured
    step output (the cluster's workers share no disk to keep it on). Rewritten, never kept,
    when the settings changed: the instance follows ``OPSLAKE_DATABASE_URL``.
    """
    config: dict[str, object] = {}
    if storage is not None:
        config["storage"] = {"postgres": {"postgres_url": storage}}
    if not step_logs:
        config["compute_logs"] = {
            "module": "dagster._core.storage.noop_compute_log_manager",
            "class": "NoOpComputeLogManager",
        }
    # Queued runs (the live sensors' alert and metric refreshes) are launched within a
    # second, not Dagster's default 5 s: an alert's notification waits on the launch.
    config["run_coordinator"] = {
        "module": "dagster._core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    }
    config["telemetry"] = {"enabled": False}
    where = (
        "SQLite files beside this one"
        if storage is None
        else f"PostgreSQL, the URL from ${storage['env']} in each process"
        if isinstance(storage, Mapping)
        else "PostgreSQL at the URL below (this file is 0600 for it)"
    )
    text = (
        "# Written by opslake from its settings (OPSLAKE_DATABASE_URL, OPSLAKE_POSTGRES_URL) each\n"
        "# time the instance is opened: change those, not this file. Dagster's instance (runs,\n"
        f"# event log, schedules) in {where}.\n" + yaml.safe_dump(config, sort_keys=False)
    )
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if not path.exists() or path.read_text() != text:
        # A file of its own (0600) renamed over the old: a reader never sees half of it.
        fd, staged = tempfile.mkstemp(prefix=".dagster.yaml.", dir=home)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(staged, path)
    return path


def instance(settings: Settings) -> dg.DagsterInstance:
    """The persistent Dagster instance under ``settings.dagster_home``: its runs in SQLite
    there, or in PostgreSQL (:func:`dagster_url`); its dagster.yaml follows the settings."""
    home = settings.dagster_home
    write_config(home, prepare_database(settings), step_logs=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def definitions() -> dg.Definitions:
    """The code location's definitions (imported lazily: Dagster is slow to import)."""
    from opslake.orchestration.definitions import defs

    return defs


def day_range(start: date, end: date) -> list[str]:
    """Every day from ``start`` to ``end`` inclusive, as partition keys."""
    if end < start:
        raise ConfigError(f"the range ends ({end}) before it starts ({start}); swap the dates")
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def parse_selection(terms: Sequence[str]) -> dg.AssetSelection:
    """Selection from CLI terms: a layer (``silver``) or a key (``silver/events``), with ``+``.

    A trailing ``+`` adds everything downstream, a leading ``+`` everything upstream. A key
    of a multi-asset that cannot run alone (``gold/incidents``) brings its siblings.
    """
    if not terms:
        return dg.AssetSelection.groups(*LAYERS)
    selection = None
    for term in terms:
        core = term.strip("+")
        part = (
            dg.AssetSelection.groups(core)
            if core in LAYERS
            else dg.AssetSelection.assets(dg.AssetKey.from_user_string(core))
        )
        if term.startswith("+"):
            part = part.upstream()
        if term.endswith("+"):
            part = part.downstream()
        part = part.required_multi_asset_neighbors()
        selection = part if selection is None else selection | part
    return selection


def selected_keys(defs: dg.Definitions, terms: Sequence[str]) -> list[dg.AssetKey]:
    """Partitioned asset keys a selection names; unknown keys are a clear error."""
    graph = defs.resolve_asset_graph()
    known = {k for k in graph.get_all_asset_keys() if k.path[0] in LAYERS}
    for term in terms:
        core = term.strip("+")
        if core not in LAYERS and dg.AssetKey.from_user_string(core) not in known:
            sample = ", ".join(sorted(k.to_user_string() for k in known)[:6])
            raise ConfigError(
                f"no asset {core!r}; use a layer ({', '.join(LAYERS)}) or a key such as {sample}"
            )
    return sorted(parse_selection(terms).resolve(graph) & known, key=lambda k: k.path)


def _run_config(settings: Settings) -> dict:
    """Point the run's lake resource at ``settings`` (not whatever the environment says)."""
    lake = {"home": settings.home, "state_dir": str(settings.state_dir)}
    # The console shows errors only (OPSLAKE_LOG_LEVEL): a day's DEBUG events are some 1,600
    # lines, kept in the event file (and the instance, for the UI); the steps' starts, ends and
    # warnings go to opslake.orchestration.progress for the CLI's display and summary.
    return {
        "resources": {"lake": {"config": lake}},
        "loggers": {
            "console": {"config": {"log_level": settings.log_level}},
            "steps": {},
            "event_file": {"config": {"path": str(settings.events_log)}},
        },
    }


def _blocked(result: RunResult) -> list[str]:
    """'asset check: observed (threshold)' for each failed blocking (error) check."""
    from opslake.assets.keys import SUITES
    from opslake.quality.results import ROW_KINDS

    out = []
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        suite = SUITES.get(".".join(evaluation.asset_key.path))
        check = (
            next((c for c in suite.checks if c.name == evaluation.check_name), None)
            if suite
            else None
        )
        # The evaluation's severity, not the suite's: a check failed by one sender of
        # several is a warning that blocks nothing.
        if (
            evaluation.passed
            or check is None
            or evaluation.severity != dg.AssetCheckSeverity.ERROR
            or check.kind in ROW_KINDS
        ):
            continue
        meta = evaluation.metadata
        observed = meta["observed"].value if "observed" in meta else "failed"
        threshold = meta["threshold"].value if "threshold" in meta else ""
        out.append(
            f"{evaluation.asset_key.to_user_string()} {evaluation.check_name}: "
            f"{observed} ({threshold})"
        )
    return out


def in_process(settings: Settings) -> RunDay:
    """Run jobs in this process, recorded in the instance under ``state_dir/dagster``."""
    defs = definitions()
    inst = instance(settings)

    def run(job: str, day: str, keys: Sequence[dg.AssetKey] | None) -> RunResult:
        return defs.resolve_job_def(job).execute_in_process(
            partition_key=day,
            instance=inst,
            asset_selection=keys,
            run_config=_run_config(settings),
            raise_on_error=False,
        )

    return run


def materialize(
    settings: Settings,
    days: Sequence[str],
    terms: Sequence[str] = (),
    on_day: Callable[[str, RunResult], None] | None = None,
    run: RunDay | None = None,
) -> None:
    """Materialize the selected assets for each day, in order, recording runs in the instance.

    After each day the ``quality_followup`` job brings the day's quality alerts into silver
    events and writes the check-up report. A day whose quality contracts fail still runs
    everything they do not block; the days go on, and at the end :class:`QualityBlocked`
    names every blocking check that failed. ``run`` runs each job (default: in this
    process; ``opslake.orchestration.cluster`` runs them on Dask workers).
    """
    keys = selected_keys(definitions(), terms)
    run = run or in_process(settings)
    blocked: list[str] = []
    for day in days:
        job, result = "daily_pipeline", run("daily_pipeline", day, keys)
        day_blocked = _blocked(result)
        if any(k.path[0] in ("silver", "gold") for k in keys) and (result.success or day_blocked):
            # Quality alerts into silver events, and the report, even when a blocking
            # check stopped part of the run (not after a failure: it would meet the same).
            after = run("quality_followup", day, None)
            if not after.success:
                job, result = "quality_followup", after
        # A step that crashed is reported even when blocking checks stopped others.
        if not result.success and (crash := _failure(result)) is not None:
            step, detail = crash
            unalerted = _alert_failure(settings, result, job, day, step, detail)
            raise PipelineError(f"materializing {day} failed at {step or '?'}: {detail}{unalerted}")
        if result.success:  # a failure of an earlier run of this day is over
            for done in ("daily_pipeline", "quality_followup"):
                platform.land_run_recovered(
                    LandingZone.from_settings(settings),
                    job=done,
                    partition=day,
                    run_id=result.run_id,
                    at=datetime.now(UTC),
                )
        blocked += [f"{day} {b}" for b in day_blocked]
        if on_day:
            on_day(day, result)
    if blocked:
        raise QualityBlocked(
            "quality contracts failed, so these partitions were not published downstream:\n"
            + "\n".join(f"  {b}" for b in blocked)
            + "\nSee `opslake quality report --date D`; fix the source and materialize again."
        )


def _failure(result: RunResult) -> tuple[str, str] | None:
    """(first failed step or "", its error) of a failed run; None when only blocking quality
    checks failed steps (:class:`QualityBlocked` reports those). A run failing before any
    step (its resources could not start) gives the run's own error."""
    steps = [e for e in result.all_events if e.is_step_failure]
    for event in steps:
        error = event.step_failure_data.error
        if error is None or error.cls_name != "DagsterAssetCheckFailedError":
            return event.step_key or "", error.message.strip() if error else "see the run"
    if steps:
        return None
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            error = getattr(event.event_specific_data, "error", None)
            return "", (error.message.strip() if error else event.message or "see the run")
    return "", "see the run in the Dagster UI"


def _alert_failure(
    settings: Settings, result: RunResult, job: str, partition: str | None, step: str, detail: str
) -> str:
    """Raise the platform alert of a run that failed for good; "" or why it could not be.

    The alert is landed in the lake, so a run that failed because the lake is unreachable
    cannot raise it: the failure is still loud (the error, the exit code, the Dagster UI).
    """
    try:
        platform.land_run_failure(
            LandingZone.from_settings(settings),
            job=job,
            partition=partition,
            run_id=result.run_id,
            step=step,
            error=detail,
            at=datetime.now(UTC),
        )
    except (OpsLakeError, OSError) as exc:
        return f" (its platform alert could not be landed either: {exc})"
    return ""


def _run_job(
    settings: Settings, name: str, what: str, ops: dict | None = None
) -> dg.ExecuteInProcessResult:
    """Run one of the location's unpartitioned jobs in-process, recorded in the instance."""
    config = _run_config(settings)
    if ops:
        config["ops"] = ops
    result = (
        definitions()
        .resolve_job_def(name)
        .execute_in_process(instance=instance(settings), run_config=config, raise_on_error=False)
    )
    if not result.success:
        step, detail = _failure(result) or ("", "a blocking quality check failed")
        unalerted = _alert_failure(settings, result, name, None, step, detail)
        raise PipelineError(f"{what} failed: {detail}{unalerted}")
    return result


def refresh_serving(settings: Settings) -> dg.ExecuteInProcessResult:
    """Rebuild the serving warehouse through Dagster so the UI records it."""
    return _run_job(settings, "serving_refresh", "building the warehouse")


def train_models(settings: Settings, *, force: bool = False) -> dg.ExecuteInProcessResult:
    """Run the ``ml_training`` job: each model retrains if due (or ``force``), champion/challenger."""
    return _run_job(settings, "ml_training", "training the models", training_ops(force))


def training_ops(force: bool) -> dict[str, dict]:
    """The ``ml_training`` job's op config: ``force`` for each of its model assets, as the
    job names them (not restated here, so a model added or renamed is never left out)."""
    job = definitions().resolve_job_def("ml_training")
    return {node.name: {"config": {"force": force}} for node in job.graph.nodes}
