"""CMDB export (one JSON document: ``exported_at``, ``cis``, ``relations``) → two bronze tables.

One document yields two tables, so the document is read once by :func:`parse_snapshot`;
:func:`parse` (the CIs) and :func:`parse_relations` are its two halves for callers that
want one. A record's ``line_no`` is its 1-based position in its array (``cis`` or
``relations``, named in the reason). A document that cannot be read at all (not UTF-8, not
JSON, no valid ``exported_at``) gives one reject with line 0, reported with the CIs only,
so that a caller writing both halves quarantines it once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from opslake.ingest.parsers import ParseResult, Reject, _xml
from opslake.ingest.parsers._text import (
    RecordError,
    choice_field,
    date_field,
    decode_document,
    received_at,
    text_field,
    timestamp_field,
)
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import OBJECT_KINDS, RELATIONS, TS

_TEXT = ("entity_id", "kind", "type", "name", "department", "business", "region", "location",
         "vendor", "model", "serial", "ip", "lifecycle_state")
_DATES = ("purchase_date", "warranty_end", "contract_end", "licence_end")

BRONZE_SCHEMA = pa.schema(
    [("exported_at", TS)]
    + [(name, pa.string()) for name in _TEXT]
    + [(name, pa.date32()) for name in _DATES]
    + [("owner", pa.string()), ("owner_contact", pa.string()), ("updated_at", TS),
       ("batch_id", pa.string()), ("received_at", TS)]
)

RELATIONS_BRONZE_SCHEMA = pa.schema(
    [
        ("exported_at", TS),
        ("src", pa.string()),
        ("relation", pa.string()),
        ("dst", pa.string()),
        ("batch_id", pa.string()),
        ("received_at", TS),
    ]
)


@dataclass(frozen=True)
class CmdbSnapshot:
    """Both bronze tables of one CMDB export."""

    cis: ParseResult
    relations: ParseResult


def parse_snapshot(data: bytes, batch: LandedBatch) -> CmdbSnapshot:
    """Parse one CMDB export into its CIs and its relations."""
    try:
        document = _xml_document(data) if batch.fmt == "xml" else json.loads(
            decode_document(data))
        if not isinstance(document, dict):
            raise RecordError("the export must be one JSON object with 'cis' and 'relations'")
        exported_at = timestamp_field(document, "exported_at", required=True)
        for name in ("cis", "relations"):
            if not isinstance(document.get(name, []), list):
                raise RecordError(f"field {name!r} must be an array")
    except ValueError as exc:  # RecordError, json.JSONDecodeError and bad UTF-8
        reason = f"CMDB export cannot be read: {exc}"
        return CmdbSnapshot(
            ParseResult(BRONZE_SCHEMA.empty_table(), [Reject(0, _head(data), reason)]),
            ParseResult(RELATIONS_BRONZE_SCHEMA.empty_table()))
    common = {"exported_at": exported_at, "batch_id": batch.batch_id,
              "received_at": received_at(batch)}
    cis = _records(document.get("cis", []), "cis", _ci, ("entity_id",), common, BRONZE_SCHEMA)
    relations = _records(document.get("relations", []), "relations", _relation,
                         ("src", "relation", "dst"), common, RELATIONS_BRONZE_SCHEMA)
    return CmdbSnapshot(cis, relations)


def _xml_document(data: bytes) -> dict[str, Any]:
    """An XML export (``<cmdb exported_at=…><ci>…</ci><relation src= relation= dst=/>``)."""
    root = _xml.document(data)
    return {"exported_at": root.get("exported_at"), "cis": _xml.records(root, "ci"),
            "relations": _xml.records(root, "relation")}


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """The configuration items of one CMDB export (and any document-level reject)."""
    return parse_snapshot(data, batch).cis


def parse_relations(data: bytes, batch: LandedBatch) -> ParseResult:
    """The relations of one CMDB export."""
    return parse_snapshot(data, batch).relations


def _records(items: list[Any], array: str, convert: Callable[[object], dict[str, Any]],
             key: tuple[str, ...], common: dict[str, Any], schema: pa.Schema) -> ParseResult:
    """Validate each record; a key seen twice in one export keeps its first record."""
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    first_at: dict[tuple[Any, ...], int] = {}
    for no, item in enumerate(items, start=1):
        raw = json.dumps(item, ensure_ascii=False)
        try:
            row = convert(item)
        except RecordError as exc:
            rejects.append(Reject(no, raw, f"{array}[{no - 1}]: {exc}"))
            continue
        ident = tuple(row[k] for k in key)
        if ident in first_at:
            rejects.append(Reject(no, raw, f"{array}[{no - 1}]: duplicate of {array}"
                                           f"[{first_at[ident] - 1}] ({', '.join(key)} "
                                           f"{'/'.join(ident)})"))
            continue
        first_at[ident] = no
        rows.append({**row, **common})
    return ParseResult(pa.Table.from_pylist(rows, schema=schema), rejects)


def _ci(item: object) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise RecordError("a CI must be a JSON object")
    ci: dict[str, Any] = {name: text_field(item, name) for name in _TEXT}
    ci["entity_id"] = text_field(item, "entity_id", required=True)
    ci["kind"] = choice_field(item, "kind", OBJECT_KINDS, required=True)
    ci.update({name: date_field(item, name) for name in _DATES})
    ci["owner"] = text_field(item, "owner")
    ci["owner_contact"] = text_field(item, "owner_contact")
    ci["updated_at"] = timestamp_field(item, "updated_at")
    return ci


def _relation(item: object) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise RecordError("a relation must be a JSON object")
    return {"src": text_field(item, "src", required=True),
            "relation": choice_field(item, "relation", RELATIONS, required=True),
            "dst": text_field(item, "dst", required=True)}


def _head(data: bytes) -> str:
    """The start of an unreadable document, for the quarantine row."""
    return data[:500].decode("utf-8", "backslashreplace")

