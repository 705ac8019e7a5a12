"""Declarative collection tasks: one YAML file per pull-connector run on a schedule (S6.1e).

A task file (``collection/tasks/<name>.yaml``) names a connector from the
``opslake.connectors`` entry-point group, the keyword arguments of its class, how often it
runs and the limits beyond which its circuit breaker pauses it::

    name: node-exporter-local          # slug: lower-case letters, digits, '-'
    description: node_exporter on this host, scraped every minute
    connector: prometheus-exporter-scrape
    params: {url: "http://127.0.0.1:9100/metrics"}
    every_seconds: 60                  # at least 10
    target: prometheus                 # landing source; must be the connector's
    parse: prometheus_text             # optional, informational: bronze parser or format
    limits: {max_seconds: 30, max_bytes: 16777216, max_rss_mb: 2048, max_failures: 3}
    enabled: false

Errors name the file, the line and what to change, and are raised as ``ConfigError``.
Whether a task runs is decided by the collection state (``opslake tasks enable/disable``),
which overrides ``enabled`` here; see ``opslake.ingest.collect``.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from opslake.errors import ConfigError, OpsLakeError
from opslake.ingest.connectors.base import Connector
from opslake.ingest.connectors.registry import available
from opslake.settings import Settings

MIN_EVERY_SECONDS = 10
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_FIELDS = (
    "name",
    "description",
    "connector",
    "params",
    "every_seconds",
    "target",
    "parse",
    "limits",
    "enabled",
)
_REQUIRED = ("name", "connector", "every_seconds", "target")
_LIMITS = ("max_seconds", "max_bytes", "max_rss_mb", "max_failures")

#: Bronze parsers (``opslake.ingest.parsers.<name>``) → (landing source, formats they read).
PARSERS: dict[str, tuple[str, frozenset[str]]] = {
    "prometheus": ("prometheus", frozenset({"prom", "pb"})),
    "prometheus_text": ("prometheus", frozenset({"prom"})),
    "remote_write": ("prometheus", frozenset({"pb"})),
    "alertmanager": ("alertmanager", frozenset({"json"})),
    "syslog": ("syslog", frozenset({"log"})),
    "itsm": ("itsm", frozenset({"csv"})),
    "cmdb": ("cmdb", frozenset({"json"})),
    "probes": ("probes", frozenset({"json"})),
}


@dataclass(frozen=True)
class Limits:
    """Beyond any of these a run trips the task's circuit breaker (S6.1h)."""

    max_seconds: float = 60.0
    max_bytes: int = 64 * 2**20
    max_rss_mb: float = 4096.0
    max_failures: int = 3


@dataclass(frozen=True)
class CollectionTask:
    """One declared collection task, validated against its connector."""

    name: str
    connector: str
    every_seconds: int
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    parse: str | None = None
    limits: Limits = field(default_factory=Limits)
    enabled: bool = False
    path: Path | None = None

    def connector_class(self) -> type[Connector]:
        """The installed connector class this task names."""
        found = available()
        if self.connector not in found:
            raise ConfigError(
                f"task {self.name!r}: connector {self.connector!r} is not "
                f"installed; installed: {', '.join(sorted(found))}"
            )
        return found[self.connector]

    def build(self) -> Connector:
        """A connector instance configured with ``params``."""
        return self.connector_class()(**self.params)

    @property
    def connector_string(self) -> str:
        """``name/version`` of the connector class (what its batches record)."""
        try:
            cls = self.connector_class()
        except ConfigError:
            return self.connector
        return f"{cls.name}/{cls.version}"


def tasks_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the collection tasks are: ``Settings.tasks_dir`` (``OPSLAKE_TASKS_DIR``)."""
    return Settings.from_env(environ).tasks_dir


def load_tasks(
    directory: Path | str | None = None, *, missing_ok: bool = False
) -> list[CollectionTask]:
    """Every ``*.yaml`` / ``*.yml`` task in ``directory`` (default: ``tasks_dir()``), by name."""
    directory = Path(directory) if directory is not None else tasks_dir()
    if not directory.is_dir():
        if missing_ok:
            return []
        raise ConfigError(
            f"collection task directory {directory} does not exist; create it "
            "(see collection/tasks/ in the repository) or set OPSLAKE_TASKS_DIR"
        )
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    connectors = available()
    tasks: dict[str, CollectionTask] = {}
    for path in files:
        task = load_task(path, connectors)
        if task.name in tasks:
            raise ConfigError(
                f"{path}: task name {task.name!r} is already used by "
                f"{tasks[task.name].path}; give each task its own name"
            )
        tasks[task.name] = task
    return sorted(tasks.values(), key=lambda t: t.name)


def load_task(path: Path, connectors: dict[str, type[Connector]] | None = None) -> CollectionTask:
    """One task file, validated; errors say ``file:line: what is wrong; how to fix it``."""
    connectors = available() if connectors is None else connectors
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); make it a UTF-8 YAML file") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{where}: not valid YAML ({problem}); fix the syntax (indentation, "
            "quotes, ':' after each key)"
        ) from exc
    lines = _lines(root)

    def fail(key: str | None, message: str) -> ConfigError:
        line = lines.get(key or "", lines.get(key.split(".")[0] if key else "", 1))
        return ConfigError(f"{path}:{line}: {message}")

    if not isinstance(data, dict):
        raise fail(
            None,
            "a task file must be a YAML mapping with keys "
            f"{', '.join(_FIELDS)}; see collection/tasks/ for examples",
        )
    for key in data:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), _FIELDS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(_FIELDS)}"
            raise fail(str(key), f"unknown key {key!r}; {hint}")
    for key in _REQUIRED:
        if data.get(key) is None:
            raise fail(
                None, f"{key!r} is missing; add '{key}: …' (required: {', '.join(_REQUIRED)})"
            )

    name = data["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise fail(
            "name",
            f"name {name!r} is not a slug; use lower-case letters, digits and "
            "'-' (e.g. 'node-exporter-local'), at most 63 characters",
        )
    connector = data["connector"]
    if not isinstance(connector, str) or connector not in connectors:
        close = difflib.get_close_matches(str(connector), list(connectors), n=1)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else f"installed: {', '.join(sorted(connectors))}"
        )
        raise fail(
            "connector",
            f"connector {connector!r} is not an installed 'opslake.connectors' entry point; {hint}",
        )
    cls = connectors[connector]
    every = data["every_seconds"]
    if isinstance(every, bool) or not isinstance(every, int) or every < MIN_EVERY_SECONDS:
        raise fail(
            "every_seconds",
            f"every_seconds is {every!r}; use a whole number of "
            f"seconds, at least {MIN_EVERY_SECONDS}",
        )
    target = data["target"]
    if target != cls.source:
        raise fail(
            "target",
            f"target {target!r} is not where connector {connector!r} lands; "
            f"set 'target: {cls.source}'",
        )
    parse = data.get("parse")
    if parse is not None:
        _check_parse(parse, cls, fail)
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise fail("description", "description must be text; quote it")
    enabled = data.get("enabled", False)
    if not isinstance(enabled, bool):
        raise fail("enabled", f"enabled is {enabled!r}; use true or false")
    params = data.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise fail(
            "params",
            "params must be a mapping of keyword arguments, e.g. "
            "'params: {url: \"http://127.0.0.1:9100/metrics\"}'",
        )
    _check_params(cls, connector, params, fail)
    limits = _limits(data.get("limits"), every, fail)
    return CollectionTask(
        name=name,
        connector=connector,
        every_seconds=every,
        target=target,
        params=params,
        description=description.strip(),
        parse=parse,
        limits=limits,
        enabled=enabled,
        path=path,
    )


def _check_parse(parse: object, cls: type[Connector], fail: Any) -> None:
    if parse == cls.fmt:
        return
    if not isinstance(parse, str) or parse not in PARSERS:
        raise fail(
            "parse",
            f"parse {parse!r} is neither a bronze parser "
            f"({', '.join(PARSERS)}) nor the connector's format {cls.fmt!r}; "
            "fix it or remove the line",
        )
    source, fmts = PARSERS[parse]
    if source != cls.source or cls.fmt not in fmts:
        fitting = [p for p, (s, f) in PARSERS.items() if s == cls.source and cls.fmt in f]
        raise fail(
            "parse",
            f"parser {parse!r} does not read what connector {cls.name!r} lands "
            f"({cls.source}, format {cls.fmt}); use "
            f"{' or '.join(repr(p) for p in fitting) or repr(cls.fmt)}",
        )


def _check_params(cls: type[Connector], connector: str, params: dict[str, Any], fail: Any) -> None:
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
        raise fail(
            "params",
            f"params do not fit connector {connector!r}: {exc}; it takes "
            f"{', '.join(accepted) or 'no arguments'}",
        ) from None
    try:
        cls(**params)
    except (OpsLakeError, TypeError, ValueError) as exc:
        raise fail("params", f"connector {connector!r} refuses these params: {exc}") from None


def _limits(raw: object, every: int, fail: Any) -> Limits:
    if raw is None:
        return Limits(max_seconds=float(min(every, 60)))
    if not isinstance(raw, dict):
        raise fail(
            "limits",
            "limits must be a mapping, e.g. 'limits: {max_seconds: 30, "
            "max_bytes: 16777216, max_rss_mb: 2048, max_failures: 3}'",
        )
    values: dict[str, Any] = {"max_seconds": float(min(every, 60))}
    for key, value in raw.items():
        if key not in _LIMITS:
            close = difflib.get_close_matches(str(key), _LIMITS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(_LIMITS)}"
            raise fail(f"limits.{key}", f"unknown limit {key!r}; {hint}")
        integral = key in ("max_bytes", "max_failures")
        kinds = (int,) if integral else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
            raise fail(
                f"limits.{key}",
                f"{key} is {value!r}; use a positive {'whole number' if integral else 'number'}",
            )
        values[key] = value if integral else float(value)
    return Limits(**values)


def _lines(root: yaml.Node | None) -> dict[str, int]:
    """1-based line of each top-level key's value (``limits.max_bytes`` for nested ones)."""
    lines: dict[str, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key_node, value_node in root.value:
        key = str(key_node.value)
        lines[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.MappingNode):
            for sub_key, _ in value_node.value:
                lines[f"{key}.{sub_key.value}"] = sub_key.start_mark.line + 1
    return lines
