"""Synthetic probe results (one JSON object per line) → bronze rows."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from opslake.ingest.parsers import ParseResult, Reject
from opslake.ingest.parsers._text import (
    RecordError,
    bool_field,
    decode_lines,
    float_field,
    int_field,
    received_at,
    text_field,
    timestamp_field,
)
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import TS

BRONZE_SCHEMA = pa.schema(
    [
        ("line_no", pa.int64()),
        ("ts", TS),
        ("probe_id", pa.string()),
        ("target", pa.string()),
        ("entity_id", pa.string()),
        ("kind", pa.string()),
        ("ok", pa.bool_()),
        ("latency_ms", pa.float64()),
        ("status_code", pa.int32()),
        ("error", pa.string()),
        ("batch_id", pa.string()),
        ("received_at", TS),
    ]
)


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one batch of probe results; a bad line is rejected on its own."""
    lines, rejects = decode_lines(data)
    received = received_at(batch)
    rows: list[dict[str, Any]] = []
    for line_no, line in enumerate(lines, start=1):
        if line is None or not line.strip():
            continue
        try:
            rows.append(
                {
                    "line_no": line_no,
                    **_result(json.loads(line)),
                    "batch_id": batch.batch_id,
                    "received_at": received,
                }
            )
        except json.JSONDecodeError as exc:
            rejects.append(Reject(line_no, line, f"line is not JSON: {exc}"))
        except RecordError as exc:
            rejects.append(Reject(line_no, line, str(exc)))
    rejects.sort(key=lambda r: r.line_no)  # undecodable lines were found first
    return ParseResult(pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA), rejects)


def _result(item: object) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise RecordError("a probe result must be a JSON object")
    result = {
        "ts": timestamp_field(item, "ts", required=True),
        "probe_id": text_field(item, "probe_id", required=True),
        "target": text_field(item, "target"),
        "entity_id": text_field(item, "entity_id"),
        "kind": text_field(item, "kind"),
        "ok": bool_field(item, "ok", required=True),
        "latency_ms": float_field(item, "latency_ms"),
        "status_code": int_field(item, "status_code"),
        "error": text_field(item, "error"),
    }
    if result["latency_ms"] is not None and not result["latency_ms"] >= 0:
        raise RecordError(
            f"field 'latency_ms' must be a non-negative number, got {result['latency_ms']!r}"
        )
    if result["status_code"] is not None and not 0 <= result["status_code"] <= 999:
        raise RecordError(f"field 'status_code' is not an HTTP status: {result['status_code']}")
    return result
