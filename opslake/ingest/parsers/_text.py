"""Shared by the parsers: bytes to lines or a document, ISO 8601 timestamps, typed fields.

Every function here either returns a value or raises ``RecordError`` (a ``ValueError``)
with a message that can go into a quarantine reason as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from opslake.ingest.parsers import Reject
from opslake.lake.landing import LandedBatch

_ISO_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


class RecordError(ValueError):
    """A record or field that cannot be accepted; the message is the quarantine reason."""


def decode_lines(data: bytes) -> tuple[list[str | None], list[Reject]]:
    """Lines of a batch (index + 1 = line number); lines that are not UTF-8 are ``None``.

    The whole batch is decoded at once on the fast path; only a batch holding bad bytes is
    decoded line by line, so one corrupt line does not cost the rest of the day.
    """
    try:
        lines: list[str | None] = list(data.decode("utf-8").split("\n"))
        rejects: list[Reject] = []
    except UnicodeDecodeError:
        lines, rejects = [], []
        for no, chunk in enumerate(data.split(b"\n"), start=1):
            try:
                lines.append(chunk.decode("utf-8"))
            except UnicodeDecodeError as exc:
                lines.append(None)
                rejects.append(Reject(no, chunk.decode("utf-8", "backslashreplace"),
                                      f"line is not UTF-8 text ({exc.reason} at byte "
                                      f"{exc.start})"))
    # Split on "\n" only (not str.splitlines): messages may hold U+2028 and friends.
    lines = [line[:-1] if line is not None and line.endswith("\r") else line for line in lines]
    if lines and lines[0] is not None:
        lines[0] = lines[0].removeprefix("\ufeff")
    if lines and lines[-1] == "":
        lines.pop()
    return lines, rejects


def decode_document(data: bytes) -> str:
    """The batch as one text; raises ``RecordError`` when it is not UTF-8."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise RecordError(f"batch is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def received_at(batch: LandedBatch) -> datetime:
    """The batch's arrival time in UTC, for the bronze ``received_at`` column."""
    return batch.received.astimezone(UTC)


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 / RFC 3339 text as an aware UTC datetime (µs); no offset means UTC."""
    if not _ISO_PREFIX.match(text):
        raise RecordError(f"{text!r} is not an ISO 8601 timestamp (e.g. 2026-11-24T03:15:00Z)")
    try:
        # Python 3.11 accepts 'Z' and truncates nanoseconds (Go's RFC3339Nano) to µs.
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(f"{text!r} is not an ISO 8601 timestamp "
                         "(e.g. 2026-11-24T03:15:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def timestamp_expr(column: pl.Expr) -> pl.Expr:
    """Vectorised RFC 3339 text → ``Datetime(us, UTC)``; null where it does not parse."""
    return pl.coalesce(
        column.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC",
                               strict=False),
        column.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="us", strict=False)
        .dt.replace_time_zone("UTC"),
    )


# Typed fields of one record (a JSON object or a CSV row as a dict). Empty text is absent.


def text_field(record: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    """A string field; numbers are accepted as their text (exports vary), empty is absent."""
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int | float | None):
        raise RecordError(f"field {name!r} must be a string, got {_kind(value)}")
    if isinstance(value, int | float):
        value = str(value)
    if value is None or value == "":
        if required:
            raise RecordError(f"field {name!r} is missing or empty")
        return None
    return value


def choice_field(record: Mapping[str, Any], name: str, allowed: tuple[str, ...], *,
                 required: bool = False) -> str | None:
    """A string field whose lower-cased value must be one of ``allowed``; kept as given."""
    value = text_field(record, name, required=required)
    if value is not None and value.lower() not in allowed:
        raise RecordError(f"field {name!r} is {value!r}, expected one of {', '.join(allowed)}")
    return value


def timestamp_field(record: Mapping[str, Any], name: str, *,
                    required: bool = False) -> datetime | None:
    """An ISO 8601 timestamp field as UTC."""
    value = text_field(record, name, required=required)
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise RecordError(f"field {name!r}: {exc}") from None


def date_field(record: Mapping[str, Any], name: str) -> date | None:
    """A ``YYYY-MM-DD`` date field (a full timestamp is cut to its date)."""
    value = text_field(record, name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise RecordError(f"field {name!r}: {value!r} is not a date (YYYY-MM-DD)") from None


def int_field(record: Mapping[str, Any], name: str) -> int | None:
    """An integer field; integer text (CSV) and whole floats (JSON 200.0) are accepted."""
    value = record.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RecordError(f"field {name!r} must be an integer, got a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise RecordError(f"field {name!r} must be an integer, got {value!r}")


def float_field(record: Mapping[str, Any], name: str) -> float | None:
    """A number field; numeric text (CSV) is accepted."""
    value = record.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RecordError(f"field {name!r} must be a number, got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise RecordError(f"field {name!r} must be a number, got {value!r}")


def bool_field(record: Mapping[str, Any], name: str, *, required: bool = False) -> bool | None:
    """A boolean field; ``true``/``false`` text (CSV) is accepted."""
    value = record.get(name)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value is None or value == "":
        if required:
            raise RecordError(f"field {name!r} is missing")
        return None
    if not isinstance(value, bool):
        raise RecordError(f"field {name!r} must be true or false, got {value!r}")
    return value


def string_map_field(record: Mapping[str, Any], name: str) -> list[tuple[str, str]]:
    """A JSON object of strings (labels, annotations) as sorted pairs, so maps are stable."""
    value = record.get(name)
    if value is None:
        return []
    if not isinstance(value, dict):
        raise RecordError(f"field {name!r} must be an object of strings, got {_kind(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise RecordError(f"field {name!r}: value of {key!r} must be a string, "
                             f"got {_kind(item)}")
    return sorted(value.items())


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__)
