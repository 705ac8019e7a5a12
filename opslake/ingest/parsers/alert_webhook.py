"""Generic JSON alert webhooks (Zabbix and the like) → alertmanager-shaped bronze rows (S5.5a).

A webhook body (one JSON object, or a list of them; each object is one alert) is mapped by
a YAML file ``<OPSLAKE_ALERT_WEBHOOKS_DIR>/<name>.yaml`` (default: the repository's
``config/alert_webhooks/``)::

    fields:                    # dotted paths into the JSON object
      alertname: event.name    # required
      status: event.status     # required; mapped through values.status to firing/resolved
      starts_at: [event.date, event.time]   # required; a list is joined with a space
      fingerprint: event.id    # required; same for an alert's firing and resolved
      severity: event.severity # optional; mapped through values.severity
      entity: host.name        # optional; becomes the entity_id label
      ends_at: [event.recovery_date, event.recovery_time]
      summary: event.name      # optional annotations
      description: event.opdata
      url: event.url           # generator_url
    values:
      severity: {High: critical, Average: major}   # raw value → critical/major/warning/info
      status: {PROBLEM: firing, RESOLVED: resolved}
    labels: {instance: host.ip}   # more labels, each a dotted path
    tags: event.tags              # optional: a list of {"tag": k, "value": v} → labels
    time_formats: ["%Y.%m.%d %H:%M:%S"]   # tried after ISO 8601 and epoch seconds/ms
    timezone: UTC                 # for times without an offset (Zabbix: the server's zone)

The push endpoint (``opslake.api.alert_webhooks``) lands the body as sent with the connector
``alert-webhook/<name>``; this parser re-applies the mapping named there, so the mapping
must stay available (and compatible) for as long as batches may be re-parsed.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import yaml

from opslake.errors import ConfigError
from opslake.ingest.parsers import ParseResult, Reject
from opslake.ingest.parsers._text import (
    RecordError,
    decode_document,
    load_json,
    received_at,
    shown,
    to_utc,
)
from opslake.ingest.parsers.alertmanager import BRONZE_SCHEMA
from opslake.lake.landing import LandedBatch
from opslake.settings import Settings

SOURCE = "webhook"
CONNECTOR_PREFIX = "alert-webhook/"
VERSION = "webhook"
SEVERITIES = ("critical", "major", "warning", "info")
STATUSES = ("firing", "resolved")
REQUIRED = ("alertname", "status", "starts_at", "fingerprint")
OPTIONAL = ("severity", "entity", "ends_at", "summary", "description", "url")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def mappings_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the webhook mappings are: ``Settings.alert_webhooks_dir``."""
    return Settings.from_env(environ).alert_webhooks_dir


@dataclass(frozen=True)
class WebhookMapping:
    """One webhook's field mapping (see the module docstring for the file format)."""

    name: str
    fields: dict[str, str | tuple[str, ...]]
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    tags: str | None = None
    time_formats: tuple[str, ...] = ()
    timezone: str = "UTC"

    def apply(self, alert: object) -> dict[str, Any]:
        """The bronze row fields of one alert object; raises ``RecordError`` saying why not."""
        if not isinstance(alert, dict):
            raise RecordError(f"an alert must be a JSON object, got {type(alert).__name__}")
        alertname = self._text(alert, "alertname", required=True)
        status = self._choice(alert, "status", STATUSES, required=True)
        severity = self._choice(alert, "severity", SEVERITIES)
        entity = self._text(alert, "entity")
        labels = {"alertname": alertname}
        for label, path in self.labels.items():
            value = _scalar(_get(alert, path), path)
            if value is not None:
                labels[label] = value
        labels.update(self._tags(alert))
        labels["alertname"] = alertname
        if severity is not None:
            labels["severity"] = severity
        if entity is not None:
            labels["entity_id"] = entity
        annotations = {
            k: v for k in ("summary", "description") if (v := self._text(alert, k)) is not None
        }
        return {
            "version": VERSION,
            "receiver": self.name,
            "group_key": None,
            "payload_status": status,
            "group_labels": [],
            "external_url": None,
            "truncated_alerts": None,
            "status": status,
            "labels": sorted(labels.items()),
            "annotations": sorted(annotations.items()),
            "starts_at": self._time(alert, "starts_at", required=True),
            "ends_at": self._time(alert, "ends_at") if status == "resolved" else None,
            "generator_url": self._text(alert, "url"),
            "fingerprint": self._text(alert, "fingerprint", required=True),
        }

    def _raw(self, alert: dict, name: str, required: bool) -> str | None:
        spec = self.fields.get(name)
        if spec is None:
            return None
        paths = (spec,) if isinstance(spec, str) else spec
        parts = [_scalar(_get(alert, p), p) for p in paths]
        if any(p is None for p in parts):
            if required:
                missing = [p for p, v in zip(paths, parts, strict=True) if v is None]
                raise RecordError(f"{name}: field {missing[0]!r} is missing or empty")
            return None
        return " ".join(parts)

    def _text(self, alert: dict, name: str, *, required: bool = False) -> str | None:
        return self._raw(alert, name, required)

    def _choice(
        self, alert: dict, name: str, allowed: tuple[str, ...], *, required: bool = False
    ) -> str | None:
        raw = self._raw(alert, name, required)
        if raw is None:
            return None
        table = self.values.get(name, {})
        value = table.get(raw, table.get(raw.lower(), raw)).lower()
        if value not in allowed:
            raise RecordError(
                f"{name}: {shown(raw)} maps to none of {', '.join(allowed)}; add it "
                f"to values.{name} of the mapping {self.name!r}"
            )
        return value

    def _time(self, alert: dict, name: str, *, required: bool = False) -> datetime | None:
        raw = self._raw(alert, name, required)
        if raw is None:
            return None
        return parse_time(raw, self.time_formats, self.timezone, name)

    def _tags(self, alert: dict) -> dict[str, str]:
        if self.tags is None:
            return {}
        tags = _get(alert, self.tags)
        if tags is None or tags == "":
            return {}
        if isinstance(tags, str):  # Zabbix's {EVENT.TAGSJSON} inside a string parameter
            try:
                tags = load_json(tags)
            except RecordError as exc:
                raise RecordError(f"tags: {self.tags!r} is not a JSON list: {exc}") from None
        if not isinstance(tags, list):
            raise RecordError(f"tags: {self.tags!r} must be a list of {{tag, value}}")
        out = {}
        for item in tags:
            if not isinstance(item, dict) or not isinstance(item.get("tag"), str):
                raise RecordError(f"tags: every item of {self.tags!r} must be {{tag, value}}")
            name = re.sub(r"[^a-zA-Z0-9_]", "_", item["tag"])
            if not _LABEL_RE.match(name):
                name = f"tag_{name}"
            out[name] = _scalar(item.get("value"), f"{self.tags}.value") or ""
        return out


def parse_time(raw: str, formats: tuple[str, ...], timezone: str, name: str) -> datetime:
    """ISO 8601, epoch seconds or ms, or one of ``formats`` (in ``timezone``) as UTC."""
    zone = ZoneInfo(timezone)
    text = raw.strip()
    if re.fullmatch(r"\d{9,13}(\.\d+)?", text):
        number = float(text)
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
            milliseconds=number if number >= 1e11 else number * 1000
        )
    candidates: list[datetime] = []
    try:
        candidates.append(datetime.fromisoformat(text))
    except ValueError:
        pass
    for fmt in formats:
        try:
            candidates.append(datetime.strptime(text, fmt))
        except ValueError:
            continue
    if not candidates:
        tried = ", ".join(["ISO 8601", "epoch seconds/ms", *formats])
        raise RecordError(f"{name}: {shown(raw)} is not a time ({tried})")
    value = candidates[0]
    value = value.replace(tzinfo=zone) if value.tzinfo is None else value
    try:
        return to_utc(value, raw)
    except RecordError as exc:
        raise RecordError(f"{name}: {exc}") from None


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def _scalar(value: Any, path: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordError(f"field {path!r} must be text or a number, got {type(value).__name__}")
    return str(value)


def configured(directory: Path | None = None) -> list[str]:
    """Names of the configured mappings (``<name>.yaml`` files)."""
    base = directory or mappings_dir()
    return (
        sorted(p.stem for p in base.glob("*.yaml") if _NAME_RE.match(p.stem))
        if base.is_dir()
        else []
    )


def load(name: str, directory: Path | None = None) -> WebhookMapping | None:
    """The mapping called ``name``, or None when there is none; a broken file is ConfigError."""
    if not _NAME_RE.match(name):
        return None
    path = (directory or mappings_dir()) / f"{name}.yaml"
    if not path.is_file():
        return None
    stat = path.stat()
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _load(path: str, _mtime_ns: int, _size: int) -> WebhookMapping:
    name = Path(path).stem
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"alert webhook mapping {path} cannot be read: {exc}") from None

    def bad(why: str) -> ConfigError:
        return ConfigError(f"alert webhook mapping {path}: {why}")

    if not isinstance(doc, dict) or not isinstance(doc.get("fields"), dict):
        raise bad("needs a 'fields' object of dotted paths")
    fields: dict[str, str | tuple[str, ...]] = {}
    for key, spec in doc["fields"].items():
        if key not in REQUIRED + OPTIONAL:
            raise bad(f"unknown field {key!r}; known: {', '.join(REQUIRED + OPTIONAL)}")
        if isinstance(spec, list) and spec and all(isinstance(s, str) for s in spec):
            fields[key] = tuple(spec)
        elif isinstance(spec, str) and spec:
            fields[key] = spec
        else:
            raise bad(f"fields.{key} must be a dotted path or a list of them")
    if missing := [k for k in REQUIRED if k not in fields]:
        raise bad(f"fields {', '.join(missing)} are required")
    values = doc.get("values") or {}
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise bad("'values' must map a field to an object of raw value → value")
    labels = doc.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and _LABEL_RE.match(k) and isinstance(v, str) for k, v in labels.items()
    ):
        raise bad("'labels' must map label names to dotted paths")
    timezone = str(doc.get("timezone") or "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad(f"timezone {timezone!r} is not an IANA zone such as Asia/Shanghai") from None
    return WebhookMapping(
        name=name,
        fields=fields,
        values={k: {str(a): str(b) for a, b in v.items()} for k, v in values.items()},
        labels=dict(labels),
        tags=doc.get("tags"),
        time_formats=tuple(str(f) for f in doc.get("time_formats") or ()),
        timezone=timezone,
    )


def alerts_of(document: object) -> list[object]:
    """The alert objects of a body: the object itself, or the items of a list."""
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list) and document:
        return document
    raise RecordError("body must be a JSON object or a non-empty list of objects")


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one landed webhook body with the mapping named in ``batch.connector``."""
    rejects: list[Reject] = []
    rows: list[dict[str, Any]] = []
    name = batch.connector.removeprefix(CONNECTOR_PREFIX)
    try:
        text = decode_document(data)
        if not batch.connector.startswith(CONNECTOR_PREFIX):
            raise RecordError(f"connector {batch.connector!r} is not alert-webhook/<name>")
        mapping = load(name)
        if mapping is None:
            raise RecordError(
                f"no alert webhook mapping {name!r} in {mappings_dir()}; "
                "restore it and re-materialize"
            )
        try:
            document = load_json(text)
        except RecordError as exc:
            raise RecordError(f"body: {exc}") from None
        alerts = alerts_of(document)
    except (RecordError, ConfigError) as exc:
        return ParseResult(
            BRONZE_SCHEMA.empty_table(),
            [Reject(0, data[:65536].decode("utf-8", "replace"), str(exc))],
        )
    received = received_at(batch)
    for index, alert in enumerate(alerts, start=1):
        try:
            rows.append(
                {
                    "line_no": index,
                    **mapping.apply(alert),
                    "batch_id": batch.batch_id,
                    "received_at": received,
                }
            )
        except RecordError as exc:
            rejects.append(
                Reject(index, json.dumps(alert, ensure_ascii=False), f"alert {index}: {exc}")
            )
    return ParseResult(pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA), rejects)
