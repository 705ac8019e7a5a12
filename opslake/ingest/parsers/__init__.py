"""Parsers from raw landing bytes to bronze rows; bad lines become quarantine rejects."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


@dataclass(frozen=True)
class Reject:
    """A line (or record) that could not be parsed, kept with the reason."""

    line_no: int
    raw: str
    reason: str


@dataclass
class ParseResult:
    """Bronze rows parsed from one batch, plus what was rejected."""

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)
