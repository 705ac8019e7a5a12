"""XML exports (CMDB, ITSM) as plain records: one element per record, one child per field.

``<tickets><ticket><ticket_id>T-1</ticket_id>…</ticket></tickets>``; a field may also be an
attribute of the record element. Empty elements are null. Entity declarations are refused
outright, which closes the entity-expansion ("billion laughs") and external-entity holes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from opslake.ingest.parsers._text import RecordError


def document(data: bytes) -> ET.Element:
    """The root element; raises ``RecordError`` for malformed XML or entity declarations."""
    if b"<!ENTITY" in data or b"<!DOCTYPE" in data:
        raise RecordError("XML with a DOCTYPE or entity declarations is not accepted")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise RecordError(f"not well-formed XML: {exc}") from None


def record(element: ET.Element) -> dict[str, str | None]:
    """One record element as a dict of field name → text (attributes included)."""
    fields: dict[str, str | None] = dict(element.attrib)
    for child in element:
        fields[child.tag] = (child.text or "").strip() or None
    return fields


def records(root: ET.Element, tag: str) -> list[dict[str, str | None]]:
    """Every ``tag`` element directly under ``root``, as records."""
    return [record(e) for e in root.findall(tag)]
