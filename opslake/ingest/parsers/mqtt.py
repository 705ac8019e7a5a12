"""MQTT messages (landed by ``opslake.ingest.listeners.mqtt``) → bronze samples and alerts.

A landed ``mqtt`` batch is NDJSON, one received message per line::

    {"topic": "opslake/dc1/pdu", "payload": "<the payload text exactly as received>",
     "received_at": "2026-11-24T03:15:00.123456+00:00"}

(a payload that is not UTF-8 has ``"payload": null`` and ``"payload_base64"`` instead).

The payload is JSON: one object or a list of objects. The topic decides nothing; the shape
of each object does:

* **metric** (has ``"metric"``)::

      {"metric": "pdu_power_watts", "entity_id": "pdu-0003", "value": 1520.5,
       "ts": "2026-11-24T03:15:00Z" | 1764040500000, "labels": {"phase": "L1"}}

  ``metric`` is a Prometheus metric name, ``value`` a JSON number, ``ts`` ISO 8601 or
  epoch milliseconds (absent: the message's arrival time), ``labels`` an object of strings
  with Prometheus label names, ``entity_id`` optional. The row's label set is
  ``labels`` + ``entity_id``, so the metric conformer maps it like a Prometheus sample.
* **event** (has ``"event"`` or ``"alertname"``)::

      {"event": "firing" | "resolved", "alertname": "UpsOnBattery", "severity": "critical",
       "entity_id": "ups-0001", "summary": "UPS on battery", "starts_at": "...",
       "ends_at": "...", "labels": {"room": "A"}}

  ``event`` and ``alertname`` are required, ``severity`` is one of critical, major,
  warning, info; ``starts_at`` (required) and ``ends_at`` are ISO 8601 or epoch ms. The
  fingerprint is the first 16 hex digits of sha256 over the sorted final labels
  (``labels`` + alertname, severity, entity_id), so firing and resolved pair up.

Anything else is rejected. ``parse_metrics`` rejects what cannot be read at all (a line or
payload that is not JSON, a payload of the wrong shape, an object of neither kind) and
malformed metrics; ``parse_events`` rejects malformed events only. Each parser skips the
other kind's objects, so every bad message is quarantined exactly once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from opslake.ingest.parsers import ParseResult, Reject
from opslake.ingest.parsers._text import (
    RecordError,
    choice_field,
    decode_lines,
    parse_timestamp,
    received_at,
    string_map_field,
    text_field,
)
from opslake.ingest.parsers.alertmanager import BRONZE_SCHEMA as EVENTS_SCHEMA
from opslake.ingest.parsers.prometheus_text import BRONZE_SCHEMA as SAMPLES_SCHEMA
from opslake.ingest.parsers.prometheus_text import canonical
from opslake.lake.landing import LandedBatch

RECEIVER = VERSION = "mqtt"
SEVERITIES = ("critical", "major", "warning", "info")
_STATUSES = ("firing", "resolved")
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Epoch numbers below this (before 1973-03) are almost surely seconds, not milliseconds.
_MIN_EPOCH_MS = 100_000_000_000


def kind_of(obj: object) -> str | None:
    """``"metric"``, ``"event"`` or None: the shape decides, never the topic."""
    if isinstance(obj, dict):
        if "metric" in obj:
            return "metric"
        if "event" in obj or "alertname" in obj:
            return "event"
    return None


def parse_metrics(data: bytes, batch: LandedBatch) -> ParseResult:
    """Metric objects → ``prometheus_text.BRONZE_SCHEMA`` rows; rejects all unreadable input."""
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for line_no, raw, message, error in _messages(data, batch):
        if error is not None:
            rejects.append(Reject(line_no, raw, error))
            continue
        for where, obj in message["objects"]:
            kind = kind_of(obj)
            if kind == "event":
                continue
            try:
                if kind is None:
                    raise RecordError(
                        'neither a metric (has "metric") nor an event (has "event" or "alertname")'
                        if isinstance(obj, dict)
                        else f"must be a JSON object, got {_kind(obj)}"
                    )
                rows.append(
                    {
                        **_metric_row(obj, message["received_at"]),
                        "batch_id": batch.batch_id,
                        "received_at": received_at(batch),
                    }
                )
            except RecordError as exc:
                rejects.append(Reject(line_no, raw, f"{message['topic']}{where}: {exc}"))
    return ParseResult(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), rejects)


def parse_events(data: bytes, batch: LandedBatch) -> ParseResult:
    """Event objects → ``alertmanager.BRONZE_SCHEMA`` rows; rejects only malformed events."""
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for line_no, raw, message, error in _messages(data, batch):
        if error is not None:
            continue  # parse_metrics quarantines it
        for where, obj in message["objects"]:
            if kind_of(obj) != "event":
                continue
            try:
                rows.append(
                    {
                        "line_no": line_no,
                        **_event_row(obj, message["topic"]),
                        "batch_id": batch.batch_id,
                        "received_at": received_at(batch),
                    }
                )
            except RecordError as exc:
                rejects.append(Reject(line_no, raw, f"{message['topic']}{where}: {exc}"))
    return ParseResult(pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA), rejects)


def _messages(data: bytes, batch: LandedBatch) -> Iterator[tuple[int, str, dict, str | None]]:
    """(line_no, raw line, {topic, received_at, objects}, error) for every message line."""
    lines, undecodable = decode_lines(data)
    bad = {r.line_no: r for r in undecodable}
    for line_no, line in enumerate(lines, start=1):
        if line_no in bad:
            yield line_no, bad[line_no].raw, {}, bad[line_no].reason
            continue
        if line is None or not line.strip():
            continue
        try:
            yield line_no, line, _message(line, batch), None
        except RecordError as exc:
            yield line_no, line, {}, str(exc)


def _message(line: str, batch: LandedBatch) -> dict[str, Any]:
    try:
        envelope = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"line is not JSON: {exc}") from None
    if not isinstance(envelope, dict):
        raise RecordError("line must be a JSON object {topic, payload, received_at}")
    topic = text_field(envelope, "topic") or "?"
    when = envelope.get("received_at")
    try:
        arrived = parse_timestamp(when) if isinstance(when, str) else received_at(batch)
    except RecordError:
        arrived = received_at(batch)
    payload = envelope.get("payload")
    if payload is None and "payload_base64" in envelope:
        raise RecordError(f"{topic}: payload is not UTF-8 text")
    if not isinstance(payload, str):
        raise RecordError(f"{topic}: field 'payload' must be the payload text")
    try:
        document = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{topic}: payload is not JSON: {exc}") from None
    if isinstance(document, list):
        if not document:
            raise RecordError(f"{topic}: payload is an empty list")
        objects = [(f"[{i}]", obj) for i, obj in enumerate(document)]
    elif isinstance(document, dict):
        objects = [("", document)]
    else:
        raise RecordError(
            f"{topic}: payload must be a JSON object or a list of objects, got {_kind(document)}"
        )
    return {"topic": topic, "received_at": arrived, "objects": objects}


def _metric_row(obj: dict[str, Any], arrived: datetime) -> dict[str, Any]:
    name = text_field(obj, "metric", required=True)
    if not _NAME.match(name):
        raise RecordError(
            f"field 'metric' is {name!r}, not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )
    value = obj.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"field 'value' must be a number, got {_show(value)}")
    labels = dict(_labels(obj))
    entity = text_field(obj, "entity_id")
    if entity is not None:
        labels["entity_id"] = entity
    ts = _time(obj, "ts") or arrived
    return {"ts": ts, "metric": name, "label_set": canonical(labels), "value": float(value)}


def _event_row(obj: dict[str, Any], topic: str) -> dict[str, Any]:
    status = choice_field(obj, "event", _STATUSES, required=True).lower()
    labels = dict(_labels(obj))
    labels["alertname"] = text_field(obj, "alertname", required=True)
    severity = choice_field(obj, "severity", SEVERITIES)
    if severity is not None:
        labels["severity"] = severity.lower()
    entity = text_field(obj, "entity_id")
    if entity is not None:
        labels["entity_id"] = entity
    summary = text_field(obj, "summary")
    starts = _time(obj, "starts_at")
    if starts is None:
        raise RecordError("field 'starts_at' is missing or empty")
    pairs = sorted(labels.items())
    return {
        "version": VERSION,
        "receiver": RECEIVER,
        "group_key": topic,
        "payload_status": status,
        "group_labels": [],
        "external_url": None,
        "truncated_alerts": None,
        "status": status,
        "labels": pairs,
        "annotations": [("summary", summary)] if summary is not None else [],
        "starts_at": starts,
        "ends_at": _time(obj, "ends_at"),
        "generator_url": None,
        "fingerprint": fingerprint(pairs),
    }


def fingerprint(pairs: list[tuple[str, str]]) -> str:
    """16 hex digits of sha256 over sorted ``name=value`` label pairs (one per line)."""
    text = "\n".join(f"{k}={v}" for k, v in sorted(pairs))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _labels(obj: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = string_map_field(obj, "labels")
    for name, _ in pairs:
        if not _LABEL_NAME.match(name):
            raise RecordError(
                f"field 'labels': {name!r} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
            )
    return pairs


def _time(obj: dict[str, Any], name: str) -> datetime | None:
    """ISO 8601 text or epoch milliseconds (a JSON number) as UTC; None when absent."""
    value = obj.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return parse_timestamp(value)
        except RecordError as exc:
            raise RecordError(f"field {name!r}: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(
            f"field {name!r} must be ISO 8601 text or epoch milliseconds, got {_show(value)}"
        )
    if value < _MIN_EPOCH_MS:
        raise RecordError(
            f"field {name!r} is {value!r}: epoch milliseconds expected (seconds? multiply by 1000)"
        )
    try:
        return _EPOCH + timedelta(milliseconds=value)
    except OverflowError:
        raise RecordError(f"field {name!r} is {value!r}, out of range") from None


def _kind(value: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        bool: "a boolean",
        type(None): "null",
        str: "a string",
    }.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    return (
        repr(value)
        if isinstance(value, str | int | float) and not isinstance(value, bool)
        else _kind(value)
    )
