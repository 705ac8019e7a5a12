"""Collection tasks: loading and validation, state, run measurement, self-metrics, breaker."""

from __future__ import annotations

import json
import multiprocessing
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest

from opslake.errors import CollectionError, ConfigError, NotFoundError, StorageError
from opslake.ingest import collect, tasks
from opslake.ingest.connectors.base import Connector
from opslake.ingest.connectors.registry import available
from opslake.ingest.parsers import alertmanager, prometheus_text
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.orchestration.collection import build_defs, cron_for
from opslake.settings import DEFAULT_TASKS_DIR, Settings

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SERIES = {
    "opslake_collection_duration_seconds",
    "opslake_collection_cpu_seconds",
    "opslake_collection_bytes",
    "opslake_collection_rss_bytes",
    "opslake_collection_success",
}


class FakeConnector(Connector):
    """Lands ``size`` bytes of exposition text, or fails, or sleeps: as told."""

    name = "fake"
    version = "9"
    source = "prometheus"
    fmt = "prom"
    #: Outcomes of the next calls, shared by instances (tasks build a fresh one per run).
    script: ClassVar[list[str]] = []

    def __init__(self, size: int = 20, sleep: float = 0.0, hog_mb: int = 0) -> None:
        self.size, self.sleep, self.hog_mb = size, sleep, hog_mb

    def collect(self, landing: LandingZone, now: datetime) -> list[LandedBatch]:
        if FakeConnector.script and FakeConnector.script.pop(0) == "fail":
            raise CollectionError("source down")
        time.sleep(self.sleep)
        hog = bytearray(self.hog_mb * 2**20)
        hog[::4096] = b"x" * len(hog[::4096])  # touch every page so it is resident
        time.sleep(0.1 if self.hog_mb else 0)
        del hog
        line = f'fake_metric{{n="{time.perf_counter_ns()}"}} 1\n'.encode()
        body = (line * (self.size // len(line) + 1))[: max(self.size, len(line))]
        return [self.land(landing, body, now)]


@pytest.fixture(autouse=True)
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed connectors plus ``fake``."""
    found = {**available(), "fake": FakeConnector}
    monkeypatch.setattr(tasks, "available", lambda: found)
    FakeConnector.script = []


@pytest.fixture
def state_settings(
    settings: Settings, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """``settings`` with the collection state on each backend (see conftest's database_url),
    exported too for what reads the environment (the Dagster schedules)."""
    if database_url:
        monkeypatch.setenv("OPSLAKE_DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("OPSLAKE_DATABASE_URL", raising=False)
    return replace(settings, database_url=database_url)


def _write(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(body)
    return path


def _task_yaml(
    name: str = "fake-task",
    every: int = 60,
    limits: str = "",
    params: str = "{size: 20}",
    extra: str = "",
) -> str:
    return (
        f"name: {name}\ndescription: a fake\nconnector: fake\nparams: {params}\n"
        f"every_seconds: {every}\ntarget: prometheus\nparse: prometheus_text\n"
        f"{limits}enabled: false\n{extra}"
    )


def _task(tmp_path: Path, **kw: object) -> tasks.CollectionTask:
    _write(tmp_path / "tasks", str(kw.get("name", "fake-task")), _task_yaml(**kw))
    [task] = tasks.load_tasks(tmp_path / "tasks")
    return task


# --- loading ----------------------------------------------------------------------------


def test_shipped_examples_load_disabled() -> None:
    shipped = tasks.load_tasks(DEFAULT_TASKS_DIR)
    assert {t.name for t in shipped} == {
        "node-exporter-local",
        "prometheus-federate-node",
        "prometheus-healthy-probe",
        "cmdb-file-drop",
        "itsm-file-drop",
        "opslake-self",
    }
    assert not any(t.enabled for t in shipped)
    by = {t.name: t for t in shipped}
    assert by["node-exporter-local"].params == {"url": "http://127.0.0.1:9100/metrics"}
    assert by["prometheus-federate-node"].every_seconds == 300
    assert by["prometheus-federate-node"].params["match"] == ['{job="node"}']
    assert by["prometheus-healthy-probe"].target == "probes"
    assert (by["cmdb-file-drop"].target, by["itsm-file-drop"].target) == ("cmdb", "itsm")


def test_a_task_loads_with_its_limits(tmp_path: Path) -> None:
    task = _task(tmp_path, limits="limits: {max_seconds: 5, max_bytes: 100, max_failures: 2}\n")
    assert task.connector == "fake" and task.every_seconds == 60 and task.params == {"size": 20}
    assert task.limits == tasks.Limits(max_seconds=5.0, max_bytes=100, max_failures=2)
    assert task.connector_string == "fake/9" and task.path.name == "fake-task.yaml"


def test_tasks_dir_comes_from_the_environment(tmp_path: Path) -> None:
    assert tasks.tasks_dir({"OPSLAKE_TASKS_DIR": str(tmp_path)}) == tmp_path.resolve()
    assert tasks.tasks_dir({}) == DEFAULT_TASKS_DIR
    with pytest.raises(ConfigError, match="OPSLAKE_TASKS_DIR"):
        tasks.load_tasks(tmp_path / "missing")
    assert tasks.load_tasks(tmp_path / "missing", missing_ok=True) == []


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (_task_yaml(name="Bad_Name"), 1, "not a slug; use lower-case"),
        (_task_yaml().replace("connector: fake", "connector: fak"), 3, "did you mean 'fake'"),
        (_task_yaml(every=5), 5, "at least 10"),
        (
            _task_yaml().replace("target: prometheus", "target: probes"),
            6,
            "set 'target: prometheus'",
        ),
        (
            _task_yaml().replace("parse: prometheus_text", "parse: probes"),
            7,
            "use 'prometheus' or 'prometheus_text'",
        ),
        (_task_yaml(params="{url: x}"), 4, "takes size, sleep, hog_mb"),
        (_task_yaml(extra="frequency: 3\n"), 9, "unknown key 'frequency'"),
        (_task_yaml(limits="limits: {max_bytes: -1}\n"), 8, "max_bytes is -1; use a positive"),
        (_task_yaml(limits="limits:\n  max_byts: 1\n"), 9, "did you mean 'max_bytes'"),
        (_task_yaml().replace("enabled: false", "enabled: maybe"), 8, "use true or false"),
        ("name: x\nconnector: fake\n", 1, "'every_seconds' is missing"),
        ("name: [x\n", 2, "not valid YAML"),
    ],
)
def test_validation_errors_name_file_line_and_fix(
    tmp_path: Path, body: str, line: int, message: str
) -> None:
    path = _write(tmp_path, "broken", body)
    with pytest.raises(ConfigError) as info:
        tasks.load_tasks(tmp_path)
    text = str(info.value)
    assert text.startswith(f"{path}:{line}: "), text
    assert message in text


def test_connector_refusing_params_and_duplicate_names_are_errors(tmp_path: Path) -> None:
    body = (
        "name: fed\nconnector: prometheus-federate\nparams: {base_url: 'http://x', "
        "match: []}\nevery_seconds: 60\ntarget: prometheus\n"
    )
    path = _write(tmp_path / "a", "fed", body)
    with pytest.raises(
        ConfigError,
        match=f"^{path}:3: connector 'prometheus-federate' "
        "refuses these params: Federate needs a list",
    ):
        tasks.load_tasks(tmp_path / "a")
    _write(tmp_path / "b", "one", _task_yaml(name="same"))
    _write(tmp_path / "b", "two", _task_yaml(name="same"))
    with pytest.raises(ConfigError, match="already used by .*one.yaml"):
        tasks.load_tasks(tmp_path / "b")


# --- state ------------------------------------------------------------------------------


def test_enable_disable_persist_and_override_the_file(
    tmp_path: Path, state_settings: Settings
) -> None:
    settings, task = state_settings, _task(tmp_path)
    assert not collect.is_enabled(task, collect.read_state(settings))
    collect.set_enabled(settings, [task.name], True)
    assert collect.is_enabled(task, collect.read_state(settings))
    with collect.state_store(settings).connect() as conn:
        [row] = conn.execute("SELECT name, doc FROM tasks").fetchall()
    assert (row["name"], json.loads(row["doc"])) == (task.name, {"enabled": True})
    collect.set_enabled(settings, [task.name], False)
    assert not collect.is_enabled(task, collect.read_state(settings))
    with pytest.raises(NotFoundError, match="no collection task named 'nope'"):
        collect.select([task], ["nope"])
    # A block that raises changes nothing.
    with pytest.raises(RuntimeError), collect.updating_state(settings) as state:
        state["tasks"][task.name]["enabled"] = True
        raise RuntimeError
    assert not collect.is_enabled(task, collect.read_state(settings))


def test_state_files_of_earlier_versions_are_imported_once(
    tmp_path: Path, state_settings: Settings
) -> None:
    settings, task = state_settings, _task(tmp_path)
    folder = settings.state_dir / "collection"
    folder.mkdir(parents=True)
    runs = [{"task": task.name, "ok": True, "finished": NOW.isoformat()}]
    old = {"version": 1, "tasks": {task.name: {"enabled": True, "runs": runs}}}
    (folder / "state.json").write_text(json.dumps(old))
    (folder / "opslake-self.json").write_text('{"at": "2026-03-02T09:00:00+00:00"}')
    assert collect.read_state(settings)["tasks"][task.name] == old["tasks"][task.name]
    assert collect.read_cursor(settings, "opslake-self") == {"at": "2026-03-02T09:00:00+00:00"}
    assert sorted(p.name for p in folder.iterdir()) == [
        "opslake-self.json.imported",
        "state.json.imported",
    ]
    # Once: a file put back later does not overwrite what the store holds since.
    collect.set_enabled(settings, [task.name], False)
    (folder / "state.json").write_text(json.dumps(old))
    assert not collect.is_enabled(task, collect.read_state(settings))
    (folder / "state.json").write_text("{torn")
    with pytest.raises(StorageError, match=r"state.json cannot be imported .*move it away"):
        collect.read_state(settings)


def _count(settings: Settings, times: int) -> None:
    for _ in range(times):
        with collect.updating_state(settings) as state:
            entry = state["tasks"].setdefault("counter", {"n": 0})
            entry["n"] += 1


def test_concurrent_writers_lose_no_update(state_settings: Settings) -> None:
    """Read-modify-writes of several processes (hosts, on PostgreSQL) are serialized."""
    workers = [
        multiprocessing.get_context("fork").Process(target=_count, args=(state_settings, 10))
        for _ in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 4
    assert collect.read_state(state_settings)["tasks"]["counter"] == {"n": 40}


# --- running ----------------------------------------------------------------------------


def test_run_lands_batches_and_self_metrics(
    tmp_path: Path, settings: Settings, landing: LandingZone
) -> None:
    task = _task(tmp_path, params="{size: 500}")
    result = collect.run_task(task, settings, NOW)
    record = result.record
    assert record.ok and record.error is None and record.batches == 1
    [batch] = result.landed
    assert batch.connector == "fake/9" and record.bytes == batch.bytes >= 500
    assert record.wall_s > 0 and record.cpu_s >= 0 and record.rss_mb > 10
    assert result.paused_reason is None and result.alert_batch is None

    metrics = result.metrics_batch
    assert (metrics.source, metrics.fmt, metrics.connector) == (
        "prometheus",
        "prom",
        "opslake-collector/1.0",
    )
    parsed = prometheus_text.parse(landing.read(metrics), metrics)
    assert parsed.rejects == []
    rows = {r["metric"]: r for r in parsed.table.to_pylist()}
    assert set(rows) == SERIES
    for row in rows.values():
        labels = prometheus_text.parse_label_set(row["label_set"])
        assert labels == {
            "task": "fake-task",
            "connector": "fake/9",
            "entity_id": "collector-fake-task",
        }
        assert NOW <= row["ts"] < NOW + timedelta(seconds=30)
    assert rows["opslake_collection_bytes"]["value"] == record.bytes
    assert rows["opslake_collection_success"]["value"] == 1
    assert rows["opslake_collection_rss_bytes"]["value"] == pytest.approx(
        record.rss_mb * 2**20, rel=1e-3
    )
    [status] = collect.inventory(settings, [task], NOW + timedelta(seconds=30))
    assert status.state == "healthy" and status.last_success is not None
    assert 29 < status.lag_seconds < 31 and status.runs == 1
    [status] = collect.inventory(settings, [task], NOW + timedelta(seconds=121))
    assert status.state == "late"


def _assert_paused(result: collect.RunResult, landing: LandingZone, task: str, reason: str) -> None:
    assert result.paused_reason is not None and reason in result.paused_reason
    event = result.alert_batch
    assert (event.source, event.fmt, event.connector) == (
        "alertmanager",
        "json",
        "opslake-collector/1.0",
    )
    parsed = alertmanager.parse(landing.read(event), event)
    assert parsed.rejects == []
    [alert] = parsed.table.to_pylist()
    labels = dict(alert["labels"])
    assert labels["alertname"] == "CollectionTaskPaused" and labels["severity"] == "warning"
    assert labels["entity_id"] == f"collector-{task}" and alert["status"] == "firing"
    assert reason in dict(alert["annotations"])["summary"]


@pytest.mark.parametrize(
    ("limits", "params", "reason"),
    [
        ("limits: {max_bytes: 10}\n", "{size: 100}", "over max_bytes 10"),
        ("limits: {max_seconds: 0.2}\n", "{sleep: 0.4}", "over max_seconds 0.2"),
        ("limits: {max_rss_mb: 1}\n", "{}", "over max_rss_mb 1"),
    ],
)
def test_breaker_trips_on_each_limit(
    tmp_path: Path, settings: Settings, landing: LandingZone, limits: str, params: str, reason: str
) -> None:
    task = _task(tmp_path, limits=limits, params=params)
    result = collect.run_task(task, settings, NOW)
    assert result.record.ok  # the run worked; it cost too much
    _assert_paused(result, landing, task.name, reason)
    [status] = collect.inventory(settings, [task], NOW)
    assert status.state == "paused" and reason in status.reason

    skipped = collect.run_task(task, settings, NOW + timedelta(minutes=1))
    assert skipped.record is None and "opslake tasks reset fake-task" in skipped.skipped

    resolved = collect.reset(settings, task, NOW + timedelta(minutes=2))
    [alert] = alertmanager.parse(
        landing.read(resolved.alert_batch), resolved.alert_batch
    ).table.to_pylist()
    assert alert["status"] == "resolved" and alert["ends_at"] is not None
    [status] = collect.inventory(settings, [task], NOW + timedelta(minutes=2))
    assert status.state != "paused" and status.reason is None
    assert collect.reset(settings, task).alert_batch is None  # already closed: nothing


def test_peak_rss_is_measured_while_the_connector_runs(tmp_path: Path, settings: Settings) -> None:
    task = _task(tmp_path, params="{hog_mb: 200}")
    base = collect.run_task(_task(tmp_path / "b", name="base"), settings, NOW).record.rss_mb
    assert collect.run_task(task, settings, NOW).record.rss_mb > base + 150


def test_breaker_trips_after_consecutive_failures(
    tmp_path: Path, state_settings: Settings, landing: LandingZone
) -> None:
    settings = state_settings
    task = _task(tmp_path, limits="limits: {max_failures: 3}\n")
    FakeConnector.script = ["fail", "fail", "ok", "fail", "fail", "fail"]
    outcomes = []
    for i in range(6):
        result = collect.run_task(task, settings, NOW + timedelta(minutes=i))
        outcomes.append((result.record.ok, result.paused_reason is not None))
        if not result.record.ok:
            parsed = prometheus_text.parse(
                landing.read(result.metrics_batch), result.metrics_batch
            ).table.to_pylist()
            assert {r["metric"]: r["value"] for r in parsed}["opslake_collection_success"] == 0
        if i == 3:
            [status] = collect.inventory(settings, [task], NOW + timedelta(minutes=3))
            assert status.state == "failing" and "source down" in status.reason
    assert outcomes == [
        (False, False),
        (False, False),
        (True, False),
        (False, False),
        (False, False),
        (False, True),
    ]
    _assert_paused(result, landing, task.name, "3 consecutive failures")
    runs = collect.read_state(settings)["tasks"][task.name]["runs"]
    assert [r["ok"] for r in runs] == [False, False, True, False, False, False]
    assert set(runs[0]) == {
        "task",
        "started",
        "finished",
        "ok",
        "error",
        "batches",
        "bytes",
        "wall_s",
        "cpu_s",
        "rss_mb",
    }


# --- Dagster ----------------------------------------------------------------------------


def test_cron_is_derived_from_the_frequency() -> None:
    assert [cron_for(s) for s in (10, 60, 89, 300, 3600, 7200, 86400 * 2)] == [
        "* * * * *",
        "* * * * *",
        "* * * * *",
        "*/5 * * * *",
        "0 * * * *",
        "0 */2 * * *",
        "0 0 * * *",
    ]


def test_schedules_skip_disabled_or_paused_tasks_and_the_job_runs(
    tmp_path: Path, state_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = state_settings
    task = _task(tmp_path, limits="limits: {max_bytes: 10}\n", params="{size: 100}")
    monkeypatch.setenv("OPSLAKE_TASKS_DIR", str(tmp_path / "tasks"))
    defs = build_defs([task])
    dg.Definitions.validate_loadable(defs)
    schedule = defs.resolve_schedule_def("collect__fake_task_schedule")
    assert schedule.cron_schedule == "* * * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING

    def evaluate() -> dg.SkipReason | dg.RunRequest:
        # Called directly: a test instance here would outlive its scope in Dagster's
        # definitions-load context and break later runs in the same process.
        return schedule(dg.build_schedule_context(scheduled_execution_time=NOW))

    assert "disabled" in evaluate().skip_message
    collect.set_enabled(settings, [task.name], True)
    assert isinstance(evaluate(), dg.RunRequest)
    job = defs.resolve_job_def("collect__fake_task")
    assert job.execute_in_process().success  # runs, lands, and trips the breaker
    assert "paused" in evaluate().skip_message
    zone = LandingZone.from_settings(settings)
    day = datetime.now(UTC).date().isoformat()
    assert {b.connector for b in zone.batches("prometheus", day)} == {
        "fake/9",
        "opslake-collector/1.0",
    }
