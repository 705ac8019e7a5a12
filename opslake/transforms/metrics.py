"""Bronze Prometheus samples → silver ``metric_points`` (S5.2a: one metric model for all).

Work is done on integer series codes: label sets are decoded once per distinct series, and
the label map column is only expanded slice by slice while writing, which keeps a day of
~15M points within a few hundred MB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from opslake.ingest.parsers.prometheus_text import parse_label_set
from opslake.lake.schemas import LABELS, METRIC_POINTS

#: Labels that become columns rather than entries of the ``labels`` map.
_PROMOTED = ("entity_id",)
SLICE_ROWS = 1_000_000


def _codes(column: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(dictionary, int32 indices) of a dictionary-encoded column with unified dictionaries."""
    combined = column.unify_dictionaries().combine_chunks() if column.num_chunks else \
        pa.array([], pa.dictionary(pa.int32(), pa.string()))
    if not pa.types.is_dictionary(combined.type):
        combined = combined.dictionary_encode()
    return combined.dictionary, combined.indices


def to_silver(bronze: pa.Table, resolve_instances: Callable[[pa.Array], pa.Array],
              source: str = "prometheus") -> Iterator[pa.Table]:
    """Silver rows for one day of bronze samples, deduplicated and sorted, in slices.

    ``resolve_instances`` maps Prometheus ``instance`` values to entity ids (null when the
    CMDB does not know them); it is used only for series without an ``entity_id`` label.
    Rows whose entity cannot be resolved are kept with a null ``entity_id``.
    """
    if bronze.num_rows == 0:
        return
    metric_dict, metric_idx = _codes(bronze.column("metric"))
    label_dict, label_idx = _codes(bronze.column("label_set"))
    batch_dict, batch_idx = _codes(bronze.column("batch_id"))

    label_sets = [parse_label_set(s) for s in label_dict.to_pylist()]
    entity_label = pa.array([ls.get("entity_id") for ls in label_sets], pa.string())
    instances = pa.array([ls.get("instance") for ls in label_sets], pa.string())
    entity_by_label = pc.coalesce(entity_label, resolve_instances(instances))
    label_maps = pa.array(
        [sorted((k, v) for k, v in ls.items() if k not in _PROMOTED) for ls in label_sets],
        LABELS)

    m_np = metric_idx.to_numpy(zero_copy_only=False).astype(np.int64)
    l_np = label_idx.to_numpy(zero_copy_only=False).astype(np.int64)
    series_key = m_np * len(label_dict) + l_np
    present = np.unique(series_key)
    series = pl.DataFrame({"key": present, "m": present // len(label_dict),
                           "l": present % len(label_dict)})
    m_codes, l_codes = series.get_column("m"), series.get_column("l")
    series = series.with_columns(
        metric=pl.Series(metric_dict.to_pylist(), dtype=pl.String).gather(m_codes),
        entity_id=pl.Series(entity_by_label.to_pylist(), dtype=pl.String).gather(l_codes),
        label_text=pl.Series(label_dict.to_pylist(), dtype=pl.String).gather(l_codes),
    ).sort("metric", "entity_id", "label_text", nulls_last=True).with_row_index("rank")
    rank_of_key = np.empty(int(present.max()) + 1, dtype=np.int64)
    rank_of_key[series.get_column("key").to_numpy()] = series.get_column("rank").to_numpy()

    ts_us = bronze.column("ts").cast(pa.int64()).to_numpy()
    t_min = int(ts_us.min())
    span_bits = max(int(ts_us.max() - t_min).bit_length(), 1)
    rank = rank_of_key[series_key]
    if span_bits + len(present).bit_length() > 62:
        raise ValueError("a bronze partition spans too long a time to sort in one key")
    # One integer sort key (series rank, then time). Among duplicates of a point the first
    # delivery (lowest batch id) wins; bronze is read in batch-id order, in which case a
    # stable sort on the key alone is enough.
    b_np = batch_idx.to_numpy(zero_copy_only=False)
    b_rank = pc.rank(batch_dict, sort_keys="ascending").to_numpy()[b_np]
    points = pl.DataFrame({
        "key": (rank << span_bits) | (ts_us - t_min),
        "rank": rank,
        "b": b_np,
        "ts": pl.from_arrow(bronze.column("ts")),
        "value": pl.from_arrow(bronze.column("value")),
    })
    if np.all(b_rank[1:] >= b_rank[:-1]):
        points = points.sort("key", maintain_order=True)
    else:
        points = points.with_columns(b_rank=b_rank).sort("key", "b_rank").drop("b_rank")
    points = points.filter(pl.col("key") != pl.col("key").shift(1).fill_null(-1))
    series_arrow = series.to_arrow()
    for start in range(0, points.height, SLICE_ROWS):
        chunk = points.slice(start, SLICE_ROWS)
        rank = pa.array(chunk.get_column("rank").to_numpy())
        l_codes = pc.take(series_arrow.column("l"), rank)
        yield pa.table(
            {
                "ts": chunk.get_column("ts").to_arrow(),
                "metric": pc.take(series_arrow.column("metric"), rank),
                "entity_id": pc.take(series_arrow.column("entity_id"), rank),
                "value": chunk.get_column("value").to_arrow(),
                "labels": pc.take(label_maps, l_codes),
                "source": pa.repeat(pa.scalar(source), chunk.height),
                "batch_id": pc.take(batch_dict, pa.array(chunk.get_column("b").to_numpy())),
            }
        ).cast(METRIC_POINTS)
