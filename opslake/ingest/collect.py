"""Running collection tasks: cost measured, landed as metrics, circuit breaker, inventory.

- ``run_task`` runs a task's connector once and measures wall seconds, CPU seconds (of the
  calling thread), the process's peak RSS while it ran and the bytes it landed. The run is
  recorded in the collection state and its cost is landed as an ordinary Prometheus exposition
  batch (``opslake_collection_*`` series, ``entity_id="collector-<task>"``), so collection
  watches itself through the same pipeline as every other metric (S6.1g).
- Circuit breaker (S6.1h): a run over ``max_seconds``, ``max_bytes`` or ``max_rss_mb``, or
  ``max_failures`` failures in a row, pauses the task and lands an Alertmanager v4 webhook
  payload (``CollectionTaskPaused``) that flows into silver events. A paused task is
  skipped until ``opslake tasks reset`` (which lands the matching ``resolved``).
- ``inventory`` says per task when it last succeeded, how late it is and its health (S6.1d).

State (enabled overrides, breaker, recent runs: one JSON document per task; connectors'
cursors between runs) lives in the collection store (:func:`state_store`): the SQLite file
``<state_dir>/collection.db``, or schema ``collection`` of ``OPSLAKE_DATABASE_URL`` so every
host sees one state. Each read-modify-write is one write transaction of the store. The
``<state_dir>/collection/*.json`` files of earlier versions are imported on first open and
renamed ``*.json.imported``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import resource
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import psutil

from opslake.errors import NotFoundError, StorageError
from opslake.ingest.tasks import CollectionTask
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.state_db import PostgresStateDB, StateDB, open_store
from opslake.settings import Settings

#: Connector string recorded on the batches the collector itself lands.
COLLECTOR = "opslake-collector/1.0"
#: Run records kept per task in the state.
KEEP_RUNS = 50
DB_FILE = "collection.db"
#: The state file of earlier versions (the tasks' documents); other ``*.json`` beside it
#: were connectors' cursors, named by connector.
LEGACY_STATE = "state.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (connector TEXT PRIMARY KEY, doc TEXT NOT NULL);
"""


@dataclass(frozen=True)
class RunRecord:
    """One run of one task, as kept in the state."""

    task: str
    started: str
    finished: str
    ok: bool
    error: str | None
    batches: int
    bytes: int
    wall_s: float
    cpu_s: float
    rss_mb: float


@dataclass
class RunResult:
    """What ``run_task`` did: the record, the batches landed, and any breaker trip."""

    task: str
    record: RunRecord | None = None
    landed: list[LandedBatch] = field(default_factory=list)
    metrics_batch: LandedBatch | None = None
    paused_reason: str | None = None
    alert_batch: LandedBatch | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class TaskStatus:
    """A task's place in the collection inventory."""

    name: str
    connector: str
    every_seconds: int
    enabled: bool
    state: str  # healthy | late | failing | paused | never
    reason: str | None
    last_success: datetime | None
    lag_seconds: float | None
    last_error: str | None
    runs: int


# --- state ------------------------------------------------------------------------------


def state_store(settings: Settings) -> StateDB | PostgresStateDB:
    """The collection store of ``settings``, with any state files of earlier versions in it."""
    db = open_store(
        settings.state_dir,
        settings.database_url,
        DB_FILE,
        "collection",
        _SCHEMA,
        "the collection state",
    )
    _import_files(settings, db)
    return db


def _import_files(settings: Settings, db: StateDB | PostgresStateDB) -> None:
    """Move ``<state_dir>/collection/*.json`` (earlier versions' state) into ``db`` once.

    What the store already holds wins (another host's newer state); each file is renamed
    ``*.json.imported`` once its rows are committed, so an upgrade loses nothing.
    """
    folder = settings.state_dir / "collection"
    if not any(folder.glob("*.json")):
        return
    with db.exclusive("import"):
        for path in sorted(folder.glob("*.json")):  # again: another process may have been first
            legacy = path.name == LEGACY_STATE
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, dict) or not isinstance(data.get("tasks", {}), dict):
                    raise TypeError("not a JSON object with a 'tasks' object")
            except (OSError, ValueError, TypeError) as exc:
                if legacy:
                    raise StorageError(
                        f"collection state {path} cannot be imported ({exc}); move it away "
                        "to start from a clean state (enable/disable settings are lost)"
                    ) from exc
                data = None  # a cursor: its connector starts afresh, as it always did then
            with db.tx() as conn:
                if legacy:
                    conn.executemany(
                        "INSERT INTO tasks (name, doc) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                        [(n, _doc(e)) for n, e in data.get("tasks", {}).items()],
                    )
                elif data is not None:
                    conn.execute(
                        "INSERT INTO cursors (connector, doc) VALUES (?, ?) "
                        "ON CONFLICT (connector) DO NOTHING",
                        (path.stem, _doc(data)),
                    )
            path.rename(path.with_name(path.name + ".imported"))


def _doc(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True)


def read_state(settings: Settings) -> dict[str, Any]:
    """The state: ``{"tasks": {name: document}}`` (no tasks when none has any state yet)."""
    with state_store(settings).connect() as conn:
        rows = conn.execute("SELECT name, doc FROM tasks").fetchall()
    return {"tasks": {r["name"]: json.loads(r["doc"]) for r in rows}}


@contextlib.contextmanager
def updating_state(settings: Settings) -> Iterator[dict[str, Any]]:
    """Read-modify-write the state in one write transaction of the store (serialized with
    every other writer, on every host); the documents changed are written when the block
    ends, none if it raises."""
    with state_store(settings).tx() as conn:
        before = {
            r["name"]: r["doc"] for r in conn.execute("SELECT name, doc FROM tasks").fetchall()
        }
        state = {"tasks": {name: json.loads(doc) for name, doc in before.items()}}
        yield state
        changed = [
            (name, doc)
            for name, entry in state["tasks"].items()
            if (doc := _doc(entry)) != before.get(name)
        ]
        conn.executemany(
            "INSERT INTO tasks (name, doc) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
            changed,
        )


def read_cursor(settings: Settings, connector: str) -> dict[str, Any]:
    """What ``connector`` kept from its previous run (empty before its first)."""
    with state_store(settings).connect() as conn:
        row = conn.execute("SELECT doc FROM cursors WHERE connector = ?", (connector,)).fetchone()
    return json.loads(row["doc"]) if row else {}


def write_cursor(settings: Settings, connector: str, cursor: dict[str, Any]) -> None:
    """Keep ``cursor`` for ``connector``'s next run."""
    with state_store(settings).tx() as conn:
        conn.execute(
            "INSERT INTO cursors (connector, doc) VALUES (?, ?) "
            "ON CONFLICT (connector) DO UPDATE SET doc = excluded.doc",
            (connector, _doc(cursor)),
        )


def _entry(state: dict[str, Any], name: str) -> dict[str, Any]:
    return state["tasks"].setdefault(name, {})


def is_enabled(task: CollectionTask, state: dict[str, Any]) -> bool:
    """The state's enable/disable, else the task file's ``enabled``."""
    override = state["tasks"].get(task.name, {}).get("enabled")
    return task.enabled if override is None else bool(override)


def paused_reason(task: CollectionTask, state: dict[str, Any]) -> str | None:
    """Why the task's breaker is open, or None when it is closed."""
    entry = state["tasks"].get(task.name, {})
    return entry.get("paused_reason") if entry.get("paused") else None


def set_enabled(settings: Settings, names: list[str], enabled: bool) -> None:
    """Enable or disable tasks (overrides their files' ``enabled``)."""
    with updating_state(settings) as state:
        for name in names:
            _entry(state, name)["enabled"] = enabled


def reset(settings: Settings, task: CollectionTask, now: datetime | None = None) -> RunResult:
    """Close a tripped breaker; lands the ``resolved`` notification of its alert."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    with updating_state(settings) as state:
        entry = _entry(state, task.name)
        was_paused = bool(entry.get("paused"))
        reason, paused_at = entry.get("paused_reason"), entry.get("paused_at")
        entry.update(paused=False, paused_reason=None, paused_at=None, consecutive_failures=0)
    result = RunResult(task.name)
    if was_paused and paused_at:
        zone = LandingZone.from_settings(settings)
        result.alert_batch = _land_alert(
            zone, task, reason or "", datetime.fromisoformat(paused_at), now, resolved=True
        )
    return result


# --- running ----------------------------------------------------------------------------


class _PeakRss:
    """Samples the process's RSS every 20 ms while a run is in progress; keeps the peak."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def _cpu_seconds() -> float:
    """CPU time of the calling thread (Linux), else of the whole process."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    if who is not None:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime
    times = psutil.Process().cpu_times()
    return times.user + times.system


def run_task(task: CollectionTask, settings: Settings, now: datetime | None = None) -> RunResult:
    """Run ``task`` once now (unless its breaker is open); see the module doc."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    state = read_state(settings)
    if (reason := paused_reason(task, state)) is not None:
        return RunResult(
            task.name, skipped=f"paused: {reason}; run `opslake tasks reset {task.name}` to resume"
        )
    zone = LandingZone.from_settings(settings)
    landed: list[LandedBatch] = []
    error: str | None = None
    try:
        connector = task.build()
    except Exception as exc:  # noqa: BLE001 - a connector that cannot be built: failed run
        connector, error = None, f"{type(exc).__name__}: {exc}"
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    with _PeakRss() as rss:
        try:
            if connector is not None:
                landed = list(connector.collect(zone, now))
        except Exception as exc:  # noqa: BLE001 - any connector failure is a failed run
            error = f"{type(exc).__name__}: {exc}"
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    finished = now + timedelta(seconds=wall)
    record = RunRecord(
        task=task.name,
        started=now.isoformat(),
        finished=finished.isoformat(),
        ok=error is None,
        error=error,
        batches=len(landed),
        bytes=sum(b.bytes for b in landed),
        wall_s=round(wall, 6),
        cpu_s=round(cpu, 6),
        rss_mb=round(rss.peak / 2**20, 3),
    )
    trip: str | None = None
    with updating_state(settings) as state:
        entry = _entry(state, task.name)
        entry["runs"] = [*entry.get("runs", []), asdict(record)][-KEEP_RUNS:]
        if record.ok:
            entry["last_success"] = record.finished
            entry["consecutive_failures"] = 0
        else:
            entry["consecutive_failures"] = entry.get("consecutive_failures", 0) + 1
        trip = breaker(task, record, entry["consecutive_failures"])
        if trip is not None and not entry.get("paused"):
            entry.update(paused=True, paused_reason=trip, paused_at=record.finished)
        else:
            trip = None
    result = RunResult(task.name, record=record, landed=landed, paused_reason=trip)
    result.metrics_batch = _land_metrics(zone, task, record, finished)
    if trip is not None:
        result.alert_batch = _land_alert(zone, task, trip, finished, finished)
    return result


def breaker(task: CollectionTask, record: RunRecord, consecutive_failures: int) -> str | None:
    """Why this run trips the task's breaker, or None."""
    limits = task.limits
    if record.wall_s > limits.max_seconds:
        return f"run took {record.wall_s:.1f} s, over max_seconds {limits.max_seconds:g}"
    if record.bytes > limits.max_bytes:
        return f"run landed {record.bytes:,} bytes, over max_bytes {limits.max_bytes:,}"
    if record.rss_mb > limits.max_rss_mb:
        return f"peak RSS {record.rss_mb:.0f} MiB, over max_rss_mb {limits.max_rss_mb:g}"
    if consecutive_failures >= limits.max_failures:
        return (
            f"{consecutive_failures} consecutive failures (max_failures "
            f"{limits.max_failures}), last: {record.error}"
        )
    return None


def self_metrics(task: CollectionTask, record: RunRecord, at: datetime) -> bytes:
    """The run's cost as Prometheus exposition text with explicit millisecond timestamps."""
    labels = (
        f'{{connector="{_escape(task.connector_string)}",'
        f'entity_id="collector-{task.name}",task="{task.name}"}}'
    )
    ms = int(at.timestamp() * 1000)
    series = [
        ("opslake_collection_duration_seconds", "Wall time of one collection run.", record.wall_s),
        ("opslake_collection_cpu_seconds", "CPU time of one collection run.", record.cpu_s),
        ("opslake_collection_bytes", "Bytes one collection run landed.", record.bytes),
        (
            "opslake_collection_rss_bytes",
            "Peak resident memory of the collector during a run.",
            round(record.rss_mb * 2**20),
        ),
        (
            "opslake_collection_success",
            "1 when the collection run succeeded, else 0.",
            1 if record.ok else 0,
        ),
    ]
    lines = []
    for name, help_text, value in series:
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} gauge",
            f"{name}{labels} {value!r} {ms}",
        ]
    return ("\n".join(lines) + "\n").encode()


def _land_metrics(
    zone: LandingZone, task: CollectionTask, record: RunRecord, at: datetime
) -> LandedBatch:
    return zone.write(
        "prometheus",
        self_metrics(task, record, at),
        fmt="prom",
        received_at=at,
        connector=COLLECTOR,
    )


def paused_alert(
    task: CollectionTask, reason: str, paused_at: datetime, now: datetime, *, resolved: bool = False
) -> dict[str, Any]:
    """The Alertmanager v4 webhook payload announcing (or resolving) a paused task."""
    status = "resolved" if resolved else "firing"
    labels = {
        "alertname": "CollectionTaskPaused",
        "severity": "warning",
        "entity_id": f"collector-{task.name}",
        "task": task.name,
        "connector": task.connector_string,
    }
    annotations = {
        "summary": f"collection task {task.name} paused: {reason}",
        "description": f"The circuit breaker of collection task {task.name} is "
        f"open, so it is skipped; fix the cause, then run "
        f"`opslake tasks reset {task.name}`.",
    }
    fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    alert = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": _iso(paused_at),
        "endsAt": _iso(now) if resolved else "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "status": status,
        "receiver": "opslake-collector",
        "groupKey": f'{{}}:{{alertname="CollectionTaskPaused",task="{task.name}"}}',
        "groupLabels": {"alertname": "CollectionTaskPaused", "task": task.name},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [alert],
    }


def _land_alert(
    zone: LandingZone,
    task: CollectionTask,
    reason: str,
    paused_at: datetime,
    now: datetime,
    *,
    resolved: bool = False,
) -> LandedBatch:
    payload = paused_alert(task, reason, paused_at, now, resolved=resolved)
    body = (json.dumps(payload, sort_keys=True) + "\n").encode()
    return zone.write("alertmanager", body, fmt="json", received_at=now, connector=COLLECTOR)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# --- inventory --------------------------------------------------------------------------


def inventory(
    settings: Settings, tasks: list[CollectionTask], now: datetime | None = None
) -> list[TaskStatus]:
    """Each task's last success, lag and health (S6.1d).

    healthy: last run ok and lag < 2 × every; late: lag ≥ 2 × every; failing: the last run
    failed; paused: the breaker is open; never: it has not run yet.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    state = read_state(settings)
    out = []
    for task in tasks:
        entry = state["tasks"].get(task.name, {})
        runs = entry.get("runs", [])
        last = runs[-1] if runs else None
        success = entry.get("last_success")
        last_success = datetime.fromisoformat(success) if success else None
        lag = (now - last_success).total_seconds() if last_success else None
        reason = paused_reason(task, state)
        if reason is not None:
            health = "paused"
        elif last is None:
            health = "never"
        elif not last["ok"]:
            health, reason = "failing", last["error"]
        elif lag is None or lag >= 2 * task.every_seconds:
            health = "late"
        else:
            health = "healthy"
        out.append(
            TaskStatus(
                name=task.name,
                connector=task.connector,
                every_seconds=task.every_seconds,
                enabled=is_enabled(task, state),
                state=health,
                reason=reason,
                last_success=last_success,
                lag_seconds=lag,
                last_error=(last or {}).get("error"),
                runs=len(runs),
            )
        )
    return out


def select(tasks: list[CollectionTask], names: list[str]) -> list[CollectionTask]:
    """The tasks named, in the order given; an unknown name is a ``NotFoundError``."""
    by_name = {t.name: t for t in tasks}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise NotFoundError(
            f"no collection task named {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(by_name) or 'none'} (see `opslake tasks list`)"
        )
    return [by_name[n] for n in names]
