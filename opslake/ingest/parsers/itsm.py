"""ITSM ticket export (CSV with a header) → bronze rows, one per ticket row, typed.

The csv module reads quoted fields (titles with commas, quotes or line breaks) the way the
exporting tool wrote them; each row is then validated on its own, so one bad row is
rejected with its reason while the rest of the export is kept. Columns are matched by
name, so their order in the export does not matter and extra columns are ignored.
Values are kept as exported (``type`` ``Incident`` stays ``Incident``); the conformer
normalises them.
"""

from __future__ import annotations

import csv
import json
from typing import Any

import pyarrow as pa

from opslake.ingest.parsers import ParseResult, Reject, _xml
from opslake.ingest.parsers._text import (
    RecordError,
    choice_field,
    decode_document,
    decode_lines,
    int_field,
    received_at,
    text_field,
    timestamp_field,
)
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import TS

COLUMNS = (
    "ticket_id",
    "type",
    "status",
    "priority",
    "business",
    "ci",
    "title",
    "opened_at",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "assignee_group",
    "sla_target_minutes",
    "alert_fingerprint",
    "change_window_start",
    "change_window_end",
    "change_result",
)
TICKET_TYPES = ("incident", "request", "problem", "change")
CHANGE_RESULTS = ("successful", "failed")

_TIMES = (
    "opened_at",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "change_window_start",
    "change_window_end",
)

BRONZE_SCHEMA = pa.schema(
    [("line_no", pa.int64())]
    + [
        (
            name,
            TS if name in _TIMES else pa.int32() if name == "sla_target_minutes" else pa.string(),
        )
        for name in COLUMNS
    ]
    + [("batch_id", pa.string()), ("received_at", TS)]
)


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one ticket export: CSV (``csv``), a JSON array (``json``) or XML (``xml``)."""
    if batch.fmt in ("json", "xml"):
        return _parse_records(data, batch)
    return _parse_csv(data, batch)


def _parse_records(data: bytes, batch: LandedBatch) -> ParseResult:
    """JSON array of ticket objects or ``<tickets><ticket>…``; ``line_no`` is the position."""
    try:
        if batch.fmt == "xml":
            items: list[Any] = _xml.records(_xml.document(data), "ticket")
        else:
            items = json.loads(decode_document(data))
            if not isinstance(items, list):
                raise RecordError("the export must be a JSON array of ticket objects")
    except ValueError as exc:  # RecordError, JSON errors and bad UTF-8
        return ParseResult(
            BRONZE_SCHEMA.empty_table(),
            [Reject(0, data[:200].decode(errors="replace"), f"export cannot be read: {exc}")],
        )
    received = received_at(batch)
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    for line_no, item in enumerate(items, start=1):
        try:
            if not isinstance(item, dict):
                raise RecordError("a ticket must be an object")
            record = {
                name: "" if item.get(name) is None else str(item[name]).strip() for name in COLUMNS
            }
            rows.append(
                {
                    "line_no": line_no,
                    **_ticket(record),
                    "batch_id": batch.batch_id,
                    "received_at": received,
                }
            )
        except RecordError as exc:
            rejects.append(
                Reject(line_no, json.dumps(item, ensure_ascii=False, default=str), str(exc))
            )
    return ParseResult(pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA), rejects)


def _parse_csv(data: bytes, batch: LandedBatch) -> ParseResult:
    """CSV with a header; ``line_no`` is the line where a row starts (header = 1)."""
    lines, rejects = decode_lines(data)
    if rejects:
        # A quoted field may span lines, so a CSV cannot be resynchronised around bad bytes.
        return ParseResult(
            BRONZE_SCHEMA.empty_table(),
            [
                Reject(
                    0, "", f"export cannot be read: line {rejects[0].line_no}: {rejects[0].reason}"
                )
            ],
        )
    text_lines = [line or "" for line in lines]
    if not any(line.strip() for line in text_lines):
        return ParseResult(BRONZE_SCHEMA.empty_table())  # nothing exported that day
    # Line ends go back in so that a line break inside a quoted field is kept.
    reader = csv.reader(line + "\n" for line in text_lines)
    header = [name.strip() for name in next(reader)]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        return ParseResult(
            BRONZE_SCHEMA.empty_table(),
            [
                Reject(
                    0,
                    text_lines[0] if text_lines else "",
                    f"CSV header lacks column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}",
                )
            ],
        )
    position = {name: header.index(name) for name in COLUMNS}
    received = received_at(batch)
    rows: list[dict[str, Any]] = []
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rejects.append(Reject(start, text_lines[start - 1], f"CSV syntax: {exc}"))
            continue
        raw = "\n".join(text_lines[start - 1 : reader.line_num])
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            rejects.append(
                Reject(start, raw, f"row has {len(fields)} fields, the header has {len(header)}")
            )
            continue
        record = {name: fields[i].strip() for name, i in position.items()}
        try:
            rows.append(
                {
                    "line_no": start,
                    **_ticket(record),
                    "batch_id": batch.batch_id,
                    "received_at": received,
                }
            )
        except RecordError as exc:
            rejects.append(Reject(start, raw, str(exc)))
    return ParseResult(pa.Table.from_pylist(rows, schema=BRONZE_SCHEMA), rejects)


def _ticket(record: dict[str, str]) -> dict[str, Any]:
    ticket = {name: text_field(record, name) for name in COLUMNS}
    ticket.update({name: timestamp_field(record, name) for name in _TIMES})
    ticket["ticket_id"] = text_field(record, "ticket_id", required=True)
    ticket["type"] = choice_field(record, "type", TICKET_TYPES, required=True)
    ticket["change_result"] = choice_field(record, "change_result", CHANGE_RESULTS)
    ticket["sla_target_minutes"] = int_field(record, "sla_target_minutes")
    if ticket["opened_at"] is None:
        raise RecordError("field 'opened_at' is missing or empty")
    if ticket["sla_target_minutes"] is not None and not 0 <= ticket["sla_target_minutes"] < 2**31:
        raise RecordError(
            f"field 'sla_target_minutes' is out of range: {ticket['sla_target_minutes']}"
        )
    return ticket
