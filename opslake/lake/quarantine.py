"""The quarantine table: rows that failed parsing, kept with the raw line and the reason.

Layout: ``bronze/quarantine/dt=D/table=<bronze table>/`` so that re-parsing one bronze table
for one day replaces exactly its own rejects.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from opslake.ingest.parsers import Reject
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import QUARANTINE
from opslake.lake.storage import Lake

TABLE = "quarantine"


def rejects_table(batch: LandedBatch, rejects: Sequence[Reject]) -> pa.Table:
    """Quarantine rows for the rejects of one landed batch."""
    n = len(rejects)
    return pa.table(
        {
            "source": [batch.source] * n,
            "batch_id": [batch.batch_id] * n,
            "line_no": [r.line_no for r in rejects],
            "raw": [r.raw for r in rejects],
            "reason": [r.reason for r in rejects],
            "received_at": pa.array([batch.received] * n, QUARANTINE.field("received_at").type),
        },
        schema=QUARANTINE,
    )


def write(lake: Lake, bronze_table: str, dt: str, tables: Sequence[pa.Table]) -> int:
    """Replace the quarantine rows of one bronze table and day; returns how many there are."""
    table = pa.concat_tables([QUARANTINE.empty_table(), *tables])
    lake.write_table(table, "bronze", TABLE, {"dt": dt, "table": bronze_table})
    return table.num_rows


def read(lake: Lake, dts: Sequence[str] | None = None) -> pa.Table:
    """Quarantined rows (optionally of some days)."""
    return lake.read_table("bronze", TABLE, schema=QUARANTINE, dts=dts)
