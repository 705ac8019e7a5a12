"""Shared by the conformers: a polars frame cast to exactly a silver schema."""

from __future__ import annotations

import polars as pl
import pyarrow as pa


def to_schema(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """Exactly ``schema``: its columns in its order, cast to its types (large → plain strings)."""
    return frame.select(schema.names).to_arrow().cast(schema)
