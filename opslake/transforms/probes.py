"""Bronze probe results (one day) → silver ``probes``.

A probe has one result per (probe_id, ts); one delivered twice (overlapping batches) is
kept once, the first received.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from opslake.lake import schemas
from opslake.transforms._silver import to_schema

SOURCE = "probes"


def to_silver(bronze: pa.Table) -> pa.Table:
    """Deduplicated probe results of one day (schemas.PROBES), ordered by time and probe."""
    frame = (
        pl.DataFrame(bronze)
        .sort(["probe_id", "ts", "received_at", "batch_id", "line_no"])
        .unique(subset=["probe_id", "ts"], keep="first", maintain_order=True)
        .with_columns(pl.col("kind").str.to_lowercase(), pl.lit(SOURCE).alias("source"))
        .sort(["ts", "probe_id"])
    )
    return to_schema(frame, schemas.PROBES)
