"""The quarantine table: rows that failed parsing, kept with the raw line and the reason.

Layout: ``bronze/quarantine/dt=D/table=<bronze table>/`` so that re-parsing one bronze table
for one day replaces exactly its own rejects; pushes the API refused are under
``table=push_rejects``. Each row names its sender (``landing.sender_of``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds

from opslake.lake.landing import LandedBatch, sender_of
from opslake.lake.schemas import QUARANTINE
from opslake.lake.storage import Lake

TABLE = "quarantine"
#: The ``table`` partition of pushed bodies the API refused (opslake.api.rejects).
PUSH_REJECTS = "push_rejects"


@dataclass(frozen=True)
class Reject:
    """A line (or record) that could not be parsed, kept with the reason."""

    line_no: int
    raw: str
    reason: str


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
            "sender": [sender_of(batch)] * n,
        },
        schema=QUARANTINE,
    )


def write(
    lake: Lake,
    bronze_table: str,
    dt: str,
    tables: Sequence[pa.Table],
    *,
    part: str = "part-0",
    prune: bool = True,
) -> int:
    """Replace the quarantine rows of one bronze table and day; returns how many there are.

    One day shard of several writes its own ``part`` and leaves the others (``prune`` off).
    """
    table = pa.concat_tables([QUARANTINE.empty_table(), *tables])
    lake.write_parts(
        "bronze", TABLE, {"dt": dt, "table": bronze_table}, [(part, table)], QUARANTINE, prune=prune
    )
    return table.num_rows


def read(lake: Lake, dts: Sequence[str] | None = None) -> pa.Table:
    """Quarantined rows (optionally of some days)."""
    return lake.read_table("bronze", TABLE, schema=QUARANTINE, dts=dts)


def read_part(lake: Lake, dt: str, table: str, columns: list[str]) -> pa.Table:
    """Some columns of one day's rows of one bronze table (or ``PUSH_REJECTS``).

    Read with the current schema, so a column added since a file was written reads as null.
    """
    files = [
        f
        for f in lake.list_files(lake.table_path("bronze", TABLE, {"dt": dt, "table": table}))
        if f.endswith(".parquet")
    ]
    if not files:
        return QUARANTINE.empty_table().select(columns)
    return ds.dataset(files, filesystem=lake.fs, format="parquet", schema=QUARANTINE).to_table(
        columns=columns
    )
