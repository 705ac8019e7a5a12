"""Bronze syslog lines (one day) → silver ``logs``, hosts mapped to entities.

A host the CMDB does not know keeps its name in ``host`` with a null ``entity_id``, so it
is counted rather than dropped. An RFC 5424 line with the NILVALUE timestamp takes the
time its batch was received.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from opslake.lake import schemas
from opslake.transforms._silver import to_schema
from opslake.transforms.entities import EntityResolver

SOURCE = "syslog"


def to_silver(bronze: pa.Table, resolver: EntityResolver) -> pa.Table:
    """Entity-mapped log lines of one day (schemas.LOGS), ordered by time then origin."""
    frame = pl.DataFrame(bronze).with_columns(
        pl.coalesce("ts", "received_at").alias("ts"),
        resolver.expr(pl.col("hostname")).alias("entity_id"),
        pl.col("hostname").alias("host"),
        pl.col("app_name").alias("app"),
        (pl.col("pri") % 8).cast(pl.Int8).alias("severity"),
        (pl.col("pri") // 8).cast(pl.Int8).alias("facility"),
        pl.lit(SOURCE).alias("source"),
    )
    # Identical lines are legitimate in logs, so nothing is deduplicated; batch and line
    # number make the order total.
    frame = frame.sort(["ts", "host", "batch_id", "line_no"], nulls_last=True)
    return to_schema(frame, schemas.LOGS)
