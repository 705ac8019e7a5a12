"""A day of silver metric points in slices of whole series, so a day of any size is read in
memory that follows the slice, not the day."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opslake.lake.schemas import METRIC_POINTS
from opslake.lake.storage import Lake

#: Points per slice: what one slice's readers (anomaly grids, rollups) hold at once.
SLICE_ROWS = 5_000_000


def series_slices(
    lake: Lake, day: str, columns: Sequence[str], *, rows: int = SLICE_ROWS, part: str | None = None
) -> Iterator[pa.Table]:
    """Day ``day`` of silver metric points (``columns``, which must include ``metric`` and
    ``entity_id``), about ``rows`` at a time, each (metric, entity) pair whole in one slice.

    Each file of the day is sorted by metric and entity (docs/silver-contract.md), so slices
    that end where the pair changes keep every pair whole, in silver order. ``part`` reads
    one day shard's file (``part-2``) only.
    """
    pending: pa.Table | None = None
    for batch in lake.scan(
        "silver",
        "metric_points",
        schema=METRIC_POINTS,
        dts=[day],
        columns=list(columns),
        batch_rows=min(rows, 1_000_000),
        part=part,
    ):
        table = batch if pending is None else pa.concat_tables([pending, batch])
        if table.num_rows < rows:
            pending = table
            continue
        metric, entity = table.column("metric"), pc.fill_null(table.column("entity_id"), "")
        last = pc.and_(pc.equal(metric, metric[-1]), pc.equal(entity, entity[-1].as_py()))
        other = np.flatnonzero(~last.to_numpy(zero_copy_only=False))
        if not len(other):  # one pair so far: it goes on in the next batch
            pending = table
            continue
        cut = int(other[-1]) + 1
        yield table.slice(0, cut)
        pending = table.slice(cut)
    if pending is not None and pending.num_rows:
        yield pending
