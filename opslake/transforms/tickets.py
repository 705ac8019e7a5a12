"""Bronze ITSM ticket rows (one day) → silver ``tickets``.

An export may be delivered again later with the lifecycle further along, so a ticket seen
in several rows keeps its latest received one. ``ci`` is documented to be the entity id;
it still goes through the resolver (an export may name a host or an IP), and a ci the CMDB
does not know is kept as it is, so that a referential check can count it.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from opslake.lake import schemas
from opslake.transforms._silver import to_schema
from opslake.transforms.entities import EntityResolver

SOURCE = "itsm"


def to_silver(bronze: pa.Table, resolver: EntityResolver) -> pa.Table:
    """One row per ticket of one day (schemas.TICKETS), codes lower-cased, stable order."""
    frame = (
        pl.DataFrame(bronze)
        .sort(
            ["ticket_id", "received_at", "batch_id", "line_no"],
            descending=[False, True, True, True],
        )
        .unique(subset=["ticket_id"], keep="first", maintain_order=True)
    )
    frame = frame.with_columns(
        *(
            pl.col(c).str.strip_chars().str.to_lowercase()
            for c in ("type", "status", "change_result")
        ),
        pl.coalesce(resolver.expr(pl.col("ci")), pl.col("ci")).alias("entity_id"),
        pl.lit(SOURCE).alias("source"),
    )
    return to_schema(frame.sort(["opened_at", "ticket_id"]), schemas.TICKETS)
