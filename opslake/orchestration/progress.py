"""What a run started from the CLI shows and keeps: its steps as they start and end, and
every Dagster event in a log file.

Two Dagster loggers, active only in runs whose config names them (the runner's): ``steps``
hands each record to the Python logger :data:`STEP_LOGGER`, where :class:`StepWatcher`
follows the steps for a progress display and a summary; ``event_file`` appends every event,
DEBUG included, to a file, so the console can stay quiet without losing anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import dagster as dg

STEP_LOGGER = "opslake.steps"
_FILE_LOGGER = "opslake.events"
_file_handlers: dict[Path, logging.Handler] = {}
_file_lock = threading.Lock()


@dg.logger(description="Step starts and ends, for the CLI's progress display and summary.")
def step_events(_context: dg.InitLoggerContext) -> logging.Logger:
    """The Python logger :class:`StepWatcher` listens on."""
    log = logging.getLogger(STEP_LOGGER)
    log.setLevel(logging.DEBUG)
    log.propagate = False  # nobody listening: the records go nowhere, not to the root
    return log


@dg.logger(
    config_schema={"path": dg.Field(str)},
    description="Every event of the run, DEBUG included, appended to a file.",
)
def event_file(context: dg.InitLoggerContext) -> logging.Logger:
    """A logger appending to ``path`` (one handler per file for the whole process)."""
    path = Path(context.logger_config["path"])
    log = logging.getLogger(f"{_FILE_LOGGER}.{path}")
    with _file_lock:
        if path not in _file_handlers:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            _file_handlers[path] = handler
            log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    return log


@dataclass
class Step:
    """One step of one run: when it started and ended, how it ended, what it wrote."""

    key: str
    partition: str
    started: float
    ended: float | None = None
    status: str = "running"
    materialized: int = 0
    #: The layer of the first asset it wrote (its key's first part), else its key's prefix.
    layer: str = ""
    #: Warnings its body logged (quarantined lines, for instance): counted for the summary.
    warnings: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Its duration so far."""
        return (self.ended or time.monotonic()) - self.started


class StepWatcher(logging.Handler):
    """Follows the steps of the runs logging to :data:`STEP_LOGGER` while attached
    (``with StepWatcher(...):``), calling ``on_change`` with each step that starts or ends."""

    def __init__(self, on_change: Callable[[Step], None] | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.steps: list[Step] = []
        self._open: dict[tuple[str, str], Step] = {}
        self._on_change = on_change

    def __enter__(self) -> Self:
        logging.getLogger(STEP_LOGGER).addHandler(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        logging.getLogger(STEP_LOGGER).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        """Note a step's start, materializations and end."""
        # Dagster's log manager puts the event and its run's tags on each record it hands a
        # logger as ``dagster_meta``; a record without it is a plain message.
        meta = getattr(record, "dagster_meta", None)
        if not isinstance(meta, dict) or meta.get("step_key") is None:
            return
        event = meta.get("dagster_event")
        partition = (meta.get("job_tags") or {}).get("dagster/partition", "")
        key = (meta["step_key"], partition)
        if event is None:  # a message the step's body logged
            if record.levelno >= logging.WARNING and (step := self._open.get(key)):
                step.warnings.append(str(meta.get("orig_message") or record.getMessage()))
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            step = Step(event.step_key, partition, time.monotonic())
            step.layer = event.step_key.split("__", 1)[0]
            self._open[key] = step
            self.steps.append(step)
        elif (step := self._open.get(key)) is None:
            return
        elif kind == "ASSET_MATERIALIZATION":
            if step.materialized == 0:
                step.layer = event.asset_key.path[0]
            step.materialized += 1
            return
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED", "STEP_UP_FOR_RETRY"):
            step.ended = time.monotonic()
            step.status = {
                "STEP_SUCCESS": "ok",
                "STEP_FAILURE": "failed",
                "STEP_SKIPPED": "skipped",
            }.get(kind, "retried")
            del self._open[key]
        else:
            return
        if self._on_change is not None:
            self._on_change(step)
