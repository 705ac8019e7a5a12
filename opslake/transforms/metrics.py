"""Bronze Prometheus samples → silver ``metric_points`` (S5.2a: one metric model for all).

A day is deduplicated and sorted in bounded memory, however long it is. A first pass over
the bronze files finds the distinct series (label sets are decoded once per series, never
per sample), ranks them in silver order and cuts them into shards of consecutive series of
about ``shard_rows`` samples. A second pass spills each sample, reduced to integer codes,
to its shard's file. Each shard is then sorted and deduplicated alone and emitted in shard
order, which is the silver order. Memory follows the shard size and the number of series,
not the number of samples in the day.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from opslake.errors import StorageError
from opslake.ingest.parsers.prometheus_text import parse_label_set
from opslake.lake.schemas import LABELS, METRIC_POINTS
from opslake.lake.shards import shard_of
from opslake.lake.storage import process_alive, writer_tag
from opslake.transforms._silver import BronzeReader

#: Name prefix of a sort's spill directory (then ``<host>_<pid>.``, for the sweep).
SPILL_PREFIX = "opslake-sort-"

#: Rank of a series of another day shard: listed, never spilled.
FOREIGN = np.iinfo(np.uint32).max
#: Labels that become columns rather than entries of the ``labels`` map.
_PROMOTED = ("entity_id",)
SLICE_ROWS = 1_000_000
#: Peak bytes per sample while a shard is sorted: the spilled codes, the frame, its sorted
#: and deduplicated copies and the output slice. Turns a memory budget into shard rows.
BYTES_PER_SAMPLE = 128
#: What a shard spill file holds per sample: series rank, time, value, batch rank, source.
_SPILL = pa.schema(
    [
        ("rank", pa.uint32()),
        ("ts", pa.int64()),
        ("value", pa.float64()),
        ("b", pa.uint32()),
        ("src", pa.uint8()),
    ]
)


def _codes(column: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(dictionary, int32 indices) of a dictionary-encoded column with unified dictionaries."""
    combined = (
        column.unify_dictionaries().combine_chunks()
        if column.num_chunks
        else pa.array([], pa.dictionary(pa.int32(), pa.string()))
    )
    if not pa.types.is_dictionary(combined.type):
        combined = combined.dictionary_encode()
    return combined.dictionary, combined.indices


def _series_codes(table: pa.Table) -> tuple[np.ndarray, pl.Series, pl.Series]:
    """Per row of ``table`` one int64 code of its (metric, label set) pair, and the metric
    names and label sets that ``code // len(label sets)`` and ``code % len(...)`` index."""
    metric_dict, metric_idx = _codes(table.column("metric"))
    label_dict, label_idx = _codes(table.column("label_set"))
    code = metric_idx.to_numpy(zero_copy_only=False).astype(np.int64) * len(
        label_dict
    ) + label_idx.to_numpy(zero_copy_only=False)
    return code, pl.from_arrow(metric_dict), pl.from_arrow(label_dict)


def _pairs(
    code: np.ndarray,
    metric_dict: pl.Series,
    label_dict: pl.Series,
    counts: np.ndarray | None = None,
) -> pl.DataFrame:
    """The distinct ``code`` values (sorted) with their metric name and label set."""
    n = max(len(label_dict), 1)
    frame = pl.DataFrame({"code": code})
    return frame.with_columns(
        metric=metric_dict.gather(pl.Series(code // n)),
        label_set=label_dict.gather(pl.Series(code % n)),
        **({"n": counts} if counts is not None else {}),
    )


@dataclass
class _Catalog:
    """The day's distinct series in silver order, and what else the first pass learnt."""

    series: pl.DataFrame  # metric, label_set, rank (one row per series)
    shard_of_rank: np.ndarray
    metric: pl.Series  # by rank
    entity_id: pl.Series  # by rank
    labels: pa.Array  # by rank
    batch_ids: pl.Series  # sorted: a batch's rank is its position
    sources: pl.Series
    shards: int


def _catalog(
    read: BronzeReader,
    resolve_instances: Callable[[pa.Array], pa.Array],
    shard_rows: int,
    day_shard: tuple[int, int],
) -> _Catalog | None:
    """First pass: distinct series with their sample counts, ranked and cut into shards.

    Only the series of day shard ``day_shard`` = (shard, shards) are ranked; the others are
    listed with the rank ``FOREIGN``, so the second pass skips them yet still notices a
    series that appeared between the passes.
    """
    counts: list[pl.DataFrame] = []
    pending = 0
    batch_ids: set[str] = set()
    sources: list[str] = []
    for source, table in read(["metric", "label_set", "batch_id"]):
        if source not in sources:
            sources.append(source)
        code, metric_dict, label_dict = _series_codes(table)
        present, n = np.unique(code, return_counts=True)
        counts.append(_pairs(present, metric_dict, label_dict, n).drop("code"))
        batch_ids.update(pc.unique(table.column("batch_id")).cast(pa.string()).to_pylist())
        pending += len(present)
        # Every file repeats most series: fold the counts before they add up to a day.
        if pending > 1_000_000:
            counts = [pl.concat(counts).group_by("metric", "label_set").agg(pl.col("n").sum())]
            pending = counts[0].height
    if not counts:
        return None
    series = pl.concat(counts).group_by("metric", "label_set").agg(pl.col("n").sum())

    label_text = series.get_column("label_set").to_list()
    label_sets = [parse_label_set(s) for s in label_text]
    entity_label = pa.array([ls.get("entity_id") for ls in label_sets], pa.string())
    instances = pa.array([ls.get("instance") for ls in label_sets], pa.string())
    entity_id = pc.coalesce(entity_label, resolve_instances(instances))
    label_maps = pa.array(
        [sorted((k, v) for k, v in ls.items() if k not in _PROMOTED) for ls in label_sets], LABELS
    )
    series = series.with_row_index("at").with_columns(entity_id=pl.from_arrow(entity_id))
    mine = pl.Series(shard_of(entity_id, day_shard[1]) == day_shard[0])
    foreign = series.filter(~mine).select(
        "metric", "label_set", rank=pl.lit(FOREIGN, dtype=pl.UInt32)
    )
    series = series.filter(mine).sort("metric", "entity_id", "label_set", nulls_last=True)
    if not series.height:
        return None
    # A shard holds the series whose samples start within its slice of the running count:
    # at most ``shard_rows`` plus one series.
    first = series.get_column("n").cum_sum() - series.get_column("n")
    shard = ((first // shard_rows).rank("dense") - 1).to_numpy().astype(np.int64)
    return _Catalog(
        series=pl.concat(
            [
                series.select(
                    "metric", "label_set", rank=pl.int_range(series.height, dtype=pl.UInt32)
                ),
                foreign,
            ]
        ),
        shard_of_rank=shard,
        metric=series.get_column("metric"),
        entity_id=series.get_column("entity_id"),
        labels=pc.take(label_maps, series.get_column("at").to_arrow()),
        batch_ids=pl.Series(sorted(batch_ids), dtype=pl.String),
        sources=pl.Series(sources, dtype=pl.String),
        shards=int(shard.max()) + 1,
    )


def _spill(read: BronzeReader, catalog: _Catalog, directory: Path) -> list[Path]:
    """Second pass: every sample as integer codes, appended to its shard's file."""
    paths = [directory / f"shard-{i}.arrows" for i in range(catalog.shards)]
    writers = [pa.ipc.new_stream(str(p), _SPILL) for p in paths]
    batch_ids = catalog.batch_ids.to_arrow().cast(pa.string())
    try:
        for source, table in read(["ts", "metric", "label_set", "value", "batch_id"]):
            code, metric_dict, label_dict = _series_codes(table)
            present = np.unique(code)
            pairs = _pairs(present, metric_dict, label_dict).join(
                catalog.series, on=["metric", "label_set"], how="left", maintain_order="left"
            )
            if pairs.get_column("rank").null_count():
                raise StorageError(
                    "a bronze file of metric samples changed while silver "
                    "metric_points was built; materialize it again"
                )
            rank = pairs.get_column("rank").to_numpy()[np.searchsorted(present, code)]
            own = rank != FOREIGN
            if not own.all():  # samples of other day shards' entities
                table, rank = table.filter(pa.array(own)), rank[own]
                if not table.num_rows:
                    continue
            shard = catalog.shard_of_rank[rank]
            batch_dict, batch_idx = _codes(table.column("batch_id"))
            batch_rank = pc.index_in(batch_dict, value_set=batch_ids).cast(pa.uint32())
            rows = pa.table(
                [
                    pa.array(rank),
                    table.column("ts").cast(pa.int64()),
                    table.column("value"),
                    pc.take(batch_rank, batch_idx),
                    pa.repeat(
                        pa.scalar(catalog.sources.index_of(source), pa.uint8()), table.num_rows
                    ),
                ],
                schema=_SPILL,
            )
            # Rows grouped by shard, each group in file order (a stable sort).
            order = np.argsort(shard, kind="stable")
            rows = rows.take(order)
            bounds = np.searchsorted(shard[order], np.arange(catalog.shards + 1))
            for i in np.flatnonzero(np.diff(bounds)):
                writers[i].write_table(rows.slice(bounds[i], bounds[i + 1] - bounds[i]))
    finally:
        for writer in writers:
            writer.close()
    return paths


def _shard_points(path: Path, catalog: _Catalog) -> Iterator[pa.Table]:
    """One shard sorted by (series rank, ts) and deduplicated, as silver slices."""
    spilled = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
    # Among duplicates of a point the first delivery (lowest batch id) wins; within one
    # batch, its first line (the stable sort keeps spill order, which is file order).
    points = (
        pl.from_arrow(spilled)
        .sort("rank", "ts", "b", maintain_order=True)
        .filter(
            (pl.col("rank") != pl.col("rank").shift(1))
            | (pl.col("ts") != pl.col("ts").shift(1)).fill_null(True)
        )
    )
    del spilled
    for start in range(0, points.height, SLICE_ROWS):
        chunk = points.slice(start, SLICE_ROWS)
        rank = chunk.get_column("rank")
        # Strings are gathered by polars (views), far cheaper than Arrow's take on strings.
        table = pl.DataFrame(
            {
                "ts": chunk.get_column("ts"),
                "metric": catalog.metric.gather(rank),
                "entity_id": catalog.entity_id.gather(rank),
                "value": chunk.get_column("value"),
                "source": catalog.sources.gather(chunk.get_column("src")),
                "batch_id": catalog.batch_ids.gather(chunk.get_column("b")),
            }
        ).to_arrow()
        table = table.append_column("labels", pc.take(catalog.labels, rank.to_arrow()))
        yield table.select(METRIC_POINTS.names).cast(METRIC_POINTS)


def shard_rows(memory_mb: int) -> int:
    """Samples a shard may hold to be sorted within ``memory_mb`` MiB."""
    return memory_mb * 2**20 // BYTES_PER_SAMPLE


def sweep_spills(spill_dir: Path) -> int:
    """Remove the spill directories of sorts killed on this host; returns how many went."""
    host = socket.gethostname()
    removed = 0
    for directory in spill_dir.glob(f"{SPILL_PREFIX}*") if spill_dir.is_dir() else ():
        # tempfile's random suffix has no '.', so the last one ends the tag.
        tag = directory.name.removeprefix(SPILL_PREFIX).rpartition(".")[0]
        owner_host, _, pid = tag.rpartition("_")
        if (
            owner_host == host
            and pid.isdigit()
            and int(pid) != os.getpid()
            and not process_alive(int(pid))
        ):
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
    return removed


def to_silver(
    read: BronzeReader,
    resolve_instances: Callable[[pa.Array], pa.Array],
    *,
    rows_per_shard: int,
    spill_dir: str | None = None,
    day_shard: tuple[int, int] = (0, 1),
) -> Iterator[pa.Table]:
    """Silver rows for one day of bronze samples, deduplicated and sorted, in slices.

    ``day_shard`` = (shard, shards) keeps only the series whose entity hashes to that shard
    (``opslake.lake.shards.shard_of``; series without an entity all fall in one shard), so
    each day shard is complete for its entities and the shards' union is the whole day.

    ``read`` is called twice (series, then samples). ``resolve_instances`` maps Prometheus
    ``instance`` values to entity ids (null when the CMDB does not know them); it is used
    only for series without an ``entity_id`` label. Rows whose entity cannot be resolved
    are kept with a null ``entity_id``. Shard files go to a temporary directory under
    ``spill_dir`` (the system's by default) that is removed at the end.
    """
    catalog = _catalog(read, resolve_instances, rows_per_shard, day_shard)
    if catalog is None:
        return
    if spill_dir:
        Path(spill_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
        prefix=f"{SPILL_PREFIX}{writer_tag()}.", dir=spill_dir
    ) as directory:
        for path in _spill(read, catalog, Path(directory)):
            yield from _shard_points(path, catalog)
            path.unlink()
