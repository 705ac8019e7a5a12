"""CMDB export (one JSON document: ``exported_at``, ``cis``, ``relations``) → two bronze tables.

One document yields two tables, so the document is read once by :func:`parse_snapshot`;
:func:`parse` (the CIs) and :func:`parse_relations` are its two halves for callers that
want one. A record's ``line_no`` is its 1-based position in its array (``cis`` or
``relations``, named in the reason). A document that cannot be read at all (not UTF-8, not
JSON, no valid ``exported_at``) gives one reject with line 0, reported with the CIs only,
so that a caller writing both halves quarantines it once.

The owner's contact is personal data (a phone number or an e-mail address): parsing the CIs
takes a ``seal`` (opslake.security.fields) and keeps only its SM4 token, in
``owner_contact_sm4``, so no clear contact reaches a bronze file. The quarantine copy of a
rejected CI has its contact fields sealed the same way, and a document that cannot be read
is quarantined by reference to its landing object rather than with its opening bytes.
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
from opslake.security.fields import CONTACT_FIELD, OWNER_CONTACT, Seal

_TEXT = (
    "entity_id",
    "kind",
    "type",
    "name",
    "department",
    "business",
    "region",
    "location",
    "vendor",
    "model",
    "serial",
    "ip",
    "lifecycle_state",
)
_DATES = ("purchase_date", "warranty_end", "contract_end", "licence_end")

BRONZE_SCHEMA = pa.schema(
    [("exported_at", TS)]
    + [(name, pa.string()) for name in _TEXT]
    + [(name, pa.date32()) for name in _DATES]
    + [
        ("owner", pa.string()),
        ("owner_contact_sm4", pa.string()),
        ("updated_at", TS),
        ("batch_id", pa.string()),
        ("received_at", TS),
    ]
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


def parse_snapshot(data: bytes, batch: LandedBatch, *, seal: Seal) -> CmdbSnapshot:
    """Parse one CMDB export into its CIs (contacts sealed with ``seal``) and its relations."""
    document = _document(data, batch)
    if isinstance(document, Reject):
        return CmdbSnapshot(
            ParseResult(BRONZE_SCHEMA.empty_table(), [document]),
            ParseResult(RELATIONS_BRONZE_SCHEMA.empty_table()),
        )
    return CmdbSnapshot(_cis(document, batch, seal), _relations(document, batch))


def _document(data: bytes, batch: LandedBatch) -> dict[str, Any] | Reject:
    """The export as a dict with a valid ``exported_at``, or the reject of the whole of it."""
    try:
        document = _xml_document(data) if batch.fmt == "xml" else json.loads(decode_document(data))
        if not isinstance(document, dict):
            raise RecordError("the export must be one JSON object with 'cis' and 'relations'")
        document["exported_at"] = timestamp_field(document, "exported_at", required=True)
        for name in ("cis", "relations"):
            if not isinstance(document.get(name, []), list):
                raise RecordError(f"field {name!r} must be an array")
    except ValueError as exc:  # RecordError, json.JSONDecodeError and bad UTF-8
        # Not its opening bytes: they may hold owners' contacts, and landing keeps them all.
        where = f"{len(data)} bytes, kept as landing object {batch.path}"
        return Reject(0, where, f"CMDB export cannot be read: {exc}")
    return document


def _common(document: dict[str, Any], batch: LandedBatch) -> dict[str, Any]:
    return {
        "exported_at": document["exported_at"],
        "batch_id": batch.batch_id,
        "received_at": received_at(batch),
    }


def _cis(document: dict[str, Any], batch: LandedBatch, seal: Seal) -> ParseResult:
    return _records(
        document.get("cis", []),
        "cis",
        lambda item: _ci(item, seal),
        ("entity_id",),
        _common(document, batch),
        BRONZE_SCHEMA,
        lambda item: _sealed_copy(item, seal),
    )


def _relations(document: dict[str, Any], batch: LandedBatch) -> ParseResult:
    return _records(
        document.get("relations", []),
        "relations",
        _relation,
        ("src", "relation", "dst"),
        _common(document, batch),
        RELATIONS_BRONZE_SCHEMA,
    )


def _xml_document(data: bytes) -> dict[str, Any]:
    """An XML export (``<cmdb exported_at=…><ci>…</ci><relation src= relation= dst=/>``)."""
    root = _xml.document(data)
    return {
        "exported_at": root.get("exported_at"),
        "cis": _xml.records(root, "ci"),
        "relations": _xml.records(root, "relation"),
    }


def parse(data: bytes, batch: LandedBatch, *, seal: Seal) -> ParseResult:
    """The configuration items of one CMDB export (and any document-level reject)."""
    return parse_snapshot(data, batch, seal=seal).cis


def parse_relations(data: bytes, batch: LandedBatch) -> ParseResult:
    """The relations of one CMDB export (a document-level reject is the CIs' to report)."""
    document = _document(data, batch)
    if isinstance(document, Reject):
        return ParseResult(RELATIONS_BRONZE_SCHEMA.empty_table())
    return _relations(document, batch)


def _records(
    items: list[Any],
    array: str,
    convert: Callable[[object], dict[str, Any]],
    key: tuple[str, ...],
    common: dict[str, Any],
    schema: pa.Schema,
    quarantined: Callable[[object], object] = lambda item: item,
) -> ParseResult:
    """Validate each record; a key seen twice in one export keeps its first record.

    ``quarantined`` gives the copy of a rejected record kept in the quarantine table.
    """
    rows: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    first_at: dict[tuple[Any, ...], int] = {}

    def raw(item: object) -> str:
        return json.dumps(quarantined(item), ensure_ascii=False)

    for no, item in enumerate(items, start=1):
        try:
            row = convert(item)
        except RecordError as exc:
            rejects.append(Reject(no, raw(item), f"{array}[{no - 1}]: {exc}"))
            continue
        ident = tuple(row[k] for k in key)
        if ident in first_at:
            rejects.append(
                Reject(
                    no,
                    raw(item),
                    f"{array}[{no - 1}]: duplicate of {array}"
                    f"[{first_at[ident] - 1}] ({', '.join(key)} "
                    f"{'/'.join(ident)})",
                )
            )
            continue
        first_at[ident] = no
        rows.append({**row, **common})
    return ParseResult(pa.Table.from_pylist(rows, schema=schema), rejects)


def _ci(item: object, seal: Seal) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise RecordError("a CI must be a JSON object")
    ci: dict[str, Any] = {name: text_field(item, name) for name in _TEXT}
    ci["entity_id"] = text_field(item, "entity_id", required=True)
    ci["kind"] = choice_field(item, "kind", OBJECT_KINDS, required=True)
    ci.update({name: date_field(item, name) for name in _DATES})
    ci["owner"] = text_field(item, "owner")
    contact = text_field(item, "owner_contact")
    ci["owner_contact_sm4"] = seal(contact, OWNER_CONTACT) if contact else None
    ci["updated_at"] = timestamp_field(item, "updated_at")
    return ci


def _relation(item: object) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise RecordError("a relation must be a JSON object")
    return {
        "src": text_field(item, "src", required=True),
        "relation": choice_field(item, "relation", RELATIONS, required=True),
        "dst": text_field(item, "dst", required=True),
    }


def _sealed_copy(item: object, seal: Seal) -> object:
    """A CI record with the value of every contact-like field sealed, for the quarantine."""
    if not isinstance(item, dict):
        return item
    return {
        k: seal(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False), f"cmdb.{k}")
        if CONTACT_FIELD.search(str(k)) and v not in (None, "")
        else v
        for k, v in item.items()
    }
