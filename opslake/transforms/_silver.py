"""Shared by the conformers: a polars frame cast to exactly a silver schema; bronze streams."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import polars as pl
import pyarrow as pa

#: Reads one day of bronze a bounded batch at a time, file after file in batch-id order:
#: (landing source, rows) with only the given columns; repeated calls read it again.
BronzeReader = Callable[[Sequence[str]], Iterable[tuple[str, pa.Table]]]


def to_schema(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """Exactly ``schema``: its columns in its order, cast to its types (large → plain strings)."""
    return frame.select(schema.names).to_arrow().cast(schema)
