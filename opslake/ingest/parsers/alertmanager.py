"""Alertmanager webhook payloads (version 4, one JSON payload per line) → one bronze row per alert.

Each row carries its payload's fields (receiver, groupKey, status, …) next to the alert's
own, so a row can be traced back to the notification it came in. Repeated notifications
are kept here as delivered; the events conformer deduplicates them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from opslake.ingest.parsers import ParseResult, Reject
from opslake.ingest.parsers._text import (
    RecordError,
    choice_field,
    decode_document,
    decode_lines,
    int_field,
    load_json,
    received_at,
    string_map_field,
    text_field,
    timestamp_field,
)
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import LABELS, TS

BRONZE_SCHEMA = pa.schema(
    [
        ("line_no", pa.int64()),
        ("version", pa.string()),
        ("receiver", pa.string()),
        ("group_key", pa.string()),
        ("payload_status", pa.string()),
        ("group_labels", LABELS),
        ("external_url", pa.string()),
        ("truncated_alerts", pa.int64()),
        ("status", pa.string()),
        ("labels", LABELS),
        ("annotations", LABELS),
        ("starts_at", TS),
        ("ends_at", TS),
        ("generator_url", pa.string()),
        ("fingerprint", pa.string()),
        ("batch_id", pa.string()),
        ("received_at", TS),
    ]
)

_STATUSES = ("firing", "resolved")
#: Go's zero time: how Alertmanager says a firing alert has no end yet.
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, microseconds only when there are some."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def webhook_body(alerts: list[dict], *, alertname: str, receiver: str) -> bytes:
    """The webhook body Alertmanager would POST for these alerts (version 4).

    OpsLake's own alert producers (quality checks, anomaly detection) land their alerts in
    this form so they take the same path as every external alert.
    """
    payload = {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": {"alertname": alertname},
        "commonLabels": _common(a["labels"] for a in alerts),
        "commonAnnotations": _common(a["annotations"] for a in alerts),
        "externalURL": "",
        "alerts": alerts,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _common(maps: Iterable[dict[str, str]]) -> dict[str, str]:
    """The pairs every map has in common."""
    items = [set(m.items()) for m in maps]
    return dict(sorted(set.intersection(*items))) if items else {}


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one batch of webhook payloads; a bad payload or alert is rejected on its own.

    A batch is either one payload per line (as the simulator and exports write) or one
    pushed webhook body, which may be pretty-printed over many lines.
    """
    lines, rejects = _whole_document(data) or decode_lines(data)
    received = received_at(batch)
    rows: list[dict[str, Any]] = []
    for line_no, line in enumerate(lines, start=1):
        if line is None or not line.strip():
            continue
        try:
            payload = _payload_fields(load_json(line))
        except RecordError as exc:
            rejects.append(Reject(line_no, line, f"payload: {exc}"))
            continue
        for index, alert in enumerate(payload.pop("alerts")):
            try:
                rows.append(
                    {
                        "line_no": line_no,
                        **payload,
                        **_alert_fields(alert),
                        "batch_id": batch.batch_id,
                        "received_at": received,
                    }
                )
            except RecordError as exc:
                rejects.append(
                    Reject(
                        line_no, json.dumps(alert, ensure_ascii=False), f"alerts[{index}]: {exc}"
                    )
                )
    rejects.sort(key=lambda r: r.line_no)  # undecodable lines were found first
    return ParseResult(pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA), rejects)


def _whole_document(data: bytes) -> tuple[list[str | None], list[Reject]] | None:
    """The batch as a single line when it is exactly one JSON object, else None."""
    try:
        document = load_json(decode_document(data))
    except RecordError:
        return None  # several payloads (one per line) or not JSON: judged line by line
    return ([json.dumps(document, ensure_ascii=False)], []) if isinstance(document, dict) else None


def _unless_zero(value: datetime | None) -> datetime | None:
    """Go's zero time (0001-01-01T00:00:00Z) is how Alertmanager says "not set": null.

    Storing year 1 would also make Spark refuse the Parquet file (ancient-date rebase).
    """
    return None if value is not None and value.year == 1 else value


def _payload_fields(payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise RecordError("must be a JSON object")
    version = text_field(payload, "version")
    if version is not None and version != "4":
        raise RecordError(f"version is {version!r}; only webhook payload version '4' is known")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise RecordError("field 'alerts' must be an array of alerts")
    return {
        "version": version,
        "receiver": text_field(payload, "receiver"),
        "group_key": text_field(payload, "groupKey"),
        "payload_status": choice_field(payload, "status", _STATUSES),
        "group_labels": string_map_field(payload, "groupLabels"),
        "external_url": text_field(payload, "externalURL"),
        "truncated_alerts": int_field(payload, "truncatedAlerts"),
        "alerts": alerts,
    }


def _alert_fields(alert: object) -> dict[str, Any]:
    if not isinstance(alert, dict):
        raise RecordError("alert must be a JSON object")
    return {
        "status": choice_field(alert, "status", _STATUSES, required=True),
        "labels": string_map_field(alert, "labels"),
        "annotations": string_map_field(alert, "annotations"),
        "starts_at": timestamp_field(alert, "startsAt", required=True),
        "ends_at": _unless_zero(timestamp_field(alert, "endsAt")),
        "generator_url": text_field(alert, "generatorURL"),
        "fingerprint": text_field(alert, "fingerprint", required=True),
    }
