"""The CMDB as the lake knew it at the end of a UTC day (every layer above reads it so)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa

from opslake.lake.schemas import ASSETS
from opslake.lake.storage import Lake


def end_of_day(dt: str) -> datetime:
    """The first instant after UTC day ``dt``."""
    return datetime.combine(date.fromisoformat(dt) + timedelta(days=1), time(), UTC)


def cmdb_as_of(lake: Lake, dt: str) -> pa.Table:
    """Silver assets history as known at the end of ``dt`` (its latest partition up to ``dt``)."""
    known = [d for d in lake.partitions("silver", "assets") if d <= dt]
    return (
        lake.read_table("silver", "assets", schema=ASSETS, dts=known[-1:])
        if known
        else ASSETS.empty_table()
    )
