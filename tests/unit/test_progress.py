"""The CLI's step display: StepWatcher follows a real in-process Dagster run through the
``steps`` logger, and ``event_file`` keeps every event."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from opslake.orchestration.progress import StepWatcher, event_file, step_events

DAILY = dg.DailyPartitionsDefinition(start_date="2026-03-01")


@dg.asset(partitions_def=DAILY)
def first() -> int:
    return 1


@dg.asset(partitions_def=DAILY)
def second(first: int) -> int:
    return first + 1


@dg.asset(partitions_def=DAILY, key=["silver", "warned"])
def warned(context) -> int:  # unannotated: a string annotation confuses Dagster
    context.log.warning("2 lines quarantined")
    context.log.info("not a warning")
    return 3


@dg.asset(partitions_def=DAILY)
def broken() -> int:
    raise RuntimeError("boom")


def _run(tmp_path: Path, *assets: dg.AssetsDefinition) -> dg.ExecuteInProcessResult:
    job = dg.define_asset_job("job")
    defs = dg.Definitions(
        assets=list(assets), jobs=[job], loggers={"steps": step_events, "event_file": event_file}
    )
    config = {
        "loggers": {
            "steps": {},
            "event_file": {"config": {"path": str(tmp_path / "logs" / "events.log")}},
        }
    }
    return defs.resolve_job_def("job").execute_in_process(
        partition_key="2026-03-02",
        run_config=config,
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )


def test_the_watcher_sees_each_step_start_and_end(tmp_path: Path) -> None:
    changes = []
    with StepWatcher(lambda step: changes.append((step.key, step.status))) as watcher:
        assert _run(tmp_path, first, second).success
    assert [(s.key, s.partition, s.status, s.materialized) for s in watcher.steps] == [
        ("first", "2026-03-02", "ok", 1),
        ("second", "2026-03-02", "ok", 1),
    ]
    assert changes == [
        ("first", "running"),
        ("first", "ok"),
        ("second", "running"),
        ("second", "ok"),
    ]
    assert all(s.ended is not None and s.seconds >= 0 for s in watcher.steps)
    log = (tmp_path / "logs" / "events.log").read_text()
    assert "STEP_START" in log and "DEBUG" in log  # every event, not only warnings


def test_a_failed_step_is_failed_and_nothing_is_seen_once_detached(tmp_path: Path) -> None:
    with StepWatcher() as watcher:
        assert not _run(tmp_path, broken).success
    assert [(s.key, s.status) for s in watcher.steps] == [("broken", "failed")]
    _run(tmp_path, first)
    assert len(watcher.steps) == 1


def test_a_step_keeps_its_warnings_and_the_layer_of_what_it_wrote(tmp_path: Path) -> None:
    with StepWatcher() as watcher:
        assert _run(tmp_path, first, warned).success
    by_key = {s.key: s for s in watcher.steps}
    assert by_key["silver__warned"].warnings == ["2 lines quarantined"]
    assert by_key["silver__warned"].layer == "silver"
    assert by_key["first"].warnings == [] and by_key["first"].layer == "first"
