"""Parsers from raw landing bytes to bronze rows; bad lines become quarantine rejects."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

# Rejects are the quarantine's rows, so they are defined below the parsers, in the lake.
from opslake.lake.quarantine import Reject

__all__ = ["ParseResult", "Reject"]


@dataclass
class ParseResult:
    """Bronze rows parsed from one batch, plus what was rejected."""

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)
