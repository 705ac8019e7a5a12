"""The CMDB as the lake knew it at the end of a UTC day (every layer above reads it so)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa

from opslake.lake.schemas import ASSETS, RELATIONS_SCHEMA
from opslake.lake.storage import Lake


def end_of_day(dt: str) -> datetime:
    """The first instant after UTC day ``dt``."""
    return datetime.combine(date.fromisoformat(dt) + timedelta(days=1), time(), UTC)


def cmdb_as_of(lake: Lake, dt: str) -> pa.Table:
    """Silver assets history as known at the end of ``dt`` (its latest partition up to ``dt``)."""
    return _history_as_of(lake, "assets", ASSETS, dt)


def relations_as_of(lake: Lake, dt: str) -> pa.Table:
    """Silver relations history as known at the end of ``dt`` (as :func:`cmdb_as_of`)."""
    return _history_as_of(lake, "relations", RELATIONS_SCHEMA, dt)


def _history_as_of(lake: Lake, table: str, schema: pa.Schema, dt: str) -> pa.Table:
    known = [d for d in lake.partitions("silver", table) if d <= dt]
    return (
        lake.read_table("silver", table, schema=schema, dts=known[-1:])
        if known
        else schema.empty_table()
    )
