"""Shared by the parsers: bytes to lines or a document, ISO 8601 timestamps, typed fields.

Every function here either returns a value or raises ``RecordError`` (a ``ValueError``)
with a message that can go into a quarantine reason as it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import polars as pl

from opslake.ingest.parsers import Reject
from opslake.lake.landing import LandedBatch

_ISO_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
#: Deepest JSON nesting accepted: alert payloads need 4 levels; the stdlib parser recurses
#: per level, so a body nested 10,000 deep would otherwise end in a RecursionError.
MAX_JSON_DEPTH = 64
# What json_depth looks at: quotes (1), openers (2) and closers (3) of a JSON text's bytes.
_JSON_KIND = np.zeros(256, np.uint8)
_JSON_KIND[[ord('"'), ord("["), ord("{"), ord("]"), ord("}")]] = [1, 2, 2, 3, 3]
_JSON_STEP = np.array([0, 0, 1, -1], np.int8)
# A \uD800-\uDFFF escape: half of a pair, or a lone surrogate that is not Unicode text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: Longest excerpt of a field value quoted in a reason.
MAX_SHOWN = 80
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


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
                rejects.append(
                    Reject(
                        no,
                        chunk.decode("utf-8", "backslashreplace"),
                        f"line is not UTF-8 text ({exc.reason} at byte {exc.start})",
                    )
                )
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


def shown(value: object) -> str:
    """``repr(value)`` cut to ``MAX_SHOWN`` characters, so a reason never carries a whole body."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else f"{text[:MAX_SHOWN]}…"


def load_json(text: str) -> Any:
    """One JSON document; raises ``RecordError`` for anything the lake could not store.

    Refused: not JSON, nesting deeper than ``MAX_JSON_DEPTH``, integers past the stdlib's
    digit limit, and strings holding a lone UTF-16 surrogate (Arrow cannot encode them).
    """
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth(text) > MAX_JSON_DEPTH:
        raise RecordError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        document = json.loads(text)
    except RecursionError:  # json_depth bounds what the parser can recurse into; a backstop
        raise RecordError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4,300 digits
        raise RecordError(f"not JSON ({str(exc)[:200]})") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(
                "a JSON string holds a lone UTF-16 surrogate (\\ud800-\\udfff "
                "without its pair); send valid Unicode text"
            ) from None
    return document


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (exact for valid JSON).

    Vectorised (a few numpy passes), so a 16 MiB body costs milliseconds, not a Python
    step per character: escapes are blanked, then brackets count outside strings (after an
    even number of quotes).
    """
    # Left to right, as a JSON parser pairs them: "\\" first, then an escaped quote.
    data = text.encode("utf-8", "surrogatepass").replace(b"\\\\", b"__").replace(b'\\"', b"__")
    kind = _JSON_KIND[np.frombuffer(data, np.uint8)]
    # A uint8 running count wraps at 256, which keeps its parity: all that is needed here.
    inside = (np.cumsum(kind == 1, dtype=np.uint8) & 1).view(bool)
    steps = _JSON_STEP[kind]
    steps[inside] = 0
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def received_at(batch: LandedBatch) -> datetime:
    """The batch's arrival time in UTC, for the bronze ``received_at`` column."""
    return batch.received.astimezone(UTC)


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 / RFC 3339 text as an aware UTC datetime (µs); no offset means UTC."""
    if not _ISO_PREFIX.match(text):
        raise RecordError(f"{shown(text)} is not an ISO 8601 timestamp (e.g. 2026-11-24T03:15:00Z)")
    try:
        # Python 3.11 accepts 'Z' and truncates nanoseconds (Go's RFC3339Nano) to µs.
        value = datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(
            f"{shown(text)} is not an ISO 8601 timestamp (e.g. 2026-11-24T03:15:00Z)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else to_utc(value, text)


def to_utc(value: datetime, text: str) -> datetime:
    """An aware ``value`` (read from ``text``) in UTC; ``RecordError`` past year 1 or 9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in year 10000 in UTC
        raise RecordError(
            f"{shown(text)} is outside the times that can be stored (years 1 to 9999 in UTC)"
        ) from None


def timestamp_expr(column: pl.Expr) -> pl.Expr:
    """Vectorised RFC 3339 text → ``Datetime(us, UTC)``; null where it does not parse."""
    return pl.coalesce(
        column.str.to_datetime(
            "%Y-%m-%dT%H:%M:%S%.f%#z", time_unit="us", time_zone="UTC", strict=False
        ),
        column.str.to_datetime(
            "%Y-%m-%dT%H:%M:%S%.f", time_unit="us", strict=False
        ).dt.replace_time_zone("UTC"),
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


def choice_field(
    record: Mapping[str, Any], name: str, allowed: tuple[str, ...], *, required: bool = False
) -> str | None:
    """A string field whose lower-cased value must be one of ``allowed``; kept as given."""
    value = text_field(record, name, required=required)
    if value is not None and value.lower() not in allowed:
        raise RecordError(f"field {name!r} is {shown(value)}, expected one of {', '.join(allowed)}")
    return value


def timestamp_field(
    record: Mapping[str, Any], name: str, *, required: bool = False
) -> datetime | None:
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
        raise RecordError(f"field {name!r}: {shown(value)} is not a date (YYYY-MM-DD)") from None


def int_field(record: Mapping[str, Any], name: str) -> int | None:
    """An integer field; integer text (CSV) and whole floats (JSON 200.0) are accepted."""
    value = record.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RecordError(f"field {name!r} must be an integer, got a boolean")
    if (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,30}\s*", value)
    ):
        value = int(value)
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise RecordError(f"field {name!r} is {shown(value)}, outside the 64-bit integers")
        return value
    raise RecordError(f"field {name!r} must be an integer, got {shown(value)}")


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
    raise RecordError(f"field {name!r} must be a number, got {shown(value)}")


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
        raise RecordError(f"field {name!r} must be true or false, got {shown(value)}")
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
            raise RecordError(
                f"field {name!r}: value of {key!r} must be a string, got {_kind(item)}"
            )
    return sorted(value.items())


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
