"""Day × shard: the shard a key falls in, and the part file each shard of a day writes.

A heavy table's day is cut into ``Settings.day_shards`` shards by a stable hash of a key
(the entity of a metric series), each computed by its own step and written as its own
part file of the day's partition (``dt=D/part-S.parquet``). Readers of the whole day read
every part as before; a step that continues one shard reads only its own part.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from opslake.errors import StorageError
from opslake.lake.storage import Lake


def part_name(shard: int) -> str:
    """The part file (no extension) shard ``shard`` writes in a day's partition."""
    return f"part-{shard}"


def shard_of(keys: pa.Array | pa.ChunkedArray, shards: int) -> np.ndarray:
    """The shard of each key: CRC-32 of its UTF-8 text modulo ``shards`` (null as "").

    CRC-32 rather than Python's or polars' hash: it is the same in every process, host and
    release, so a shard's rows never move between runs. Hashed once per distinct key.
    """
    if shards == 1:
        return np.zeros(len(keys), np.int64)
    filled = pc.fill_null(keys.cast(pa.string()), "")
    encoded = (
        filled.combine_chunks() if isinstance(filled, pa.ChunkedArray) else filled
    ).dictionary_encode()
    codes = np.array(
        [zlib.crc32(v.encode()) % shards for v in encoded.dictionary.to_pylist()], np.int64
    )
    return codes[encoded.indices.to_numpy(zero_copy_only=False)]


def require_parts(lake: Lake, layer: str, name: str, dt: str, shards: int) -> None:
    """Fail clearly unless day ``dt`` of ``layer/name`` was written in ``shards`` shards."""
    directory = lake.table_path(layer, name, {"dt": dt})
    found = {
        p.rsplit("/", 1)[-1].removesuffix(".parquet")
        for p in lake.list_files(directory)
        if p.endswith(".parquet")
    }
    if found and found != {part_name(i) for i in range(shards)}:
        raise StorageError(
            f"{layer}/{name} dt={dt} was written in {len(found)} shard(s), OPSLAKE_SHARDS is "
            f"{shards}: materialize {layer}/{name}+ for that day again with this setting"
        )


def _state_path(lake: Lake, layer: str, name: str, dt: str, shard: int) -> str:
    # Beside the tables, not in them: readers of the day never see a shard's state.
    return lake.path("_shards", layer, name, f"dt={dt}", f"shard-{shard}.arrows")


def save_state(
    lake: Lake, layer: str, name: str, dt: str, shard: int, figures: dict, rows: pa.Table
) -> None:
    """Keep what shard ``shard`` of a day learnt (JSON ``figures``, ``rows`` such as those it
    quarantined) for the step that merges the shards, on whichever worker it runs."""
    table = rows.replace_schema_metadata(
        {b"opslake.figures": json.dumps(figures, default=str).encode()}
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    lake.put_atomic(_state_path(lake, layer, name, dt, shard), [sink.getvalue().to_pybytes()])


def load_state(lake: Lake, layer: str, name: str, dt: str, shard: int) -> tuple[dict, pa.Table]:
    """What ``save_state`` kept for a shard; a clear error when that shard has not run."""
    path = _state_path(lake, layer, name, dt, shard)
    if not lake.exists(path):
        raise StorageError(
            f"shard {shard} of {layer}/{name} dt={dt} has not run (no {path}); "
            f"materialize {layer}/{name} for that day again"
        )
    table = pa.ipc.open_stream(lake.read_bytes(path)).read_all()
    figures = json.loads(table.schema.metadata[b"opslake.figures"])
    return figures, table.replace_schema_metadata(None)


def drop_states(lake: Lake, layer: str, name: str, dt: str) -> None:
    """Forget the shards' states of a day once they are merged."""
    directory = lake.path("_shards", layer, name, f"dt={dt}")
    if lake.exists(directory):
        lake.delete_dir(directory)
