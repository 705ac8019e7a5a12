"""What is in the lake, per layer, table and partition (for ``opslake status``)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.parquet as pq

from opslake.lake.landing import LandingZone
from opslake.lake.storage import LAYERS, Lake


@dataclass(frozen=True)
class PartitionStatus:
    """Rows and bytes of one table partition (for landing: batches and bytes)."""

    layer: str
    table: str
    dt: str
    files: int
    rows: int
    bytes: int


def inventory(lake: Lake) -> list[PartitionStatus]:
    """Every partition of every table, landing included, in layer order."""
    out: list[PartitionStatus] = []
    zone = LandingZone(lake)
    for source in zone.sources():
        for dt in zone.days(source):
            batches = zone.batches(source, dt)
            out.append(
                PartitionStatus(
                    "landing", source, dt, len(batches), len(batches), sum(b.bytes for b in batches)
                )
            )
    for layer in LAYERS[1:]:
        for table in lake.list_dirs(lake.path(layer)):
            for dt in lake.partitions(layer, table):
                files = [
                    f
                    for f in lake.list_files(
                        lake.table_path(layer, table, {"dt": dt}), recursive=True
                    )
                    if f.endswith(".parquet")
                ]
                rows = size = 0
                for f in files:
                    with lake.fs.open_input_file(f) as handle:
                        rows += pq.read_metadata(handle).num_rows
                        size += handle.size()
                out.append(PartitionStatus(layer, table, dt, len(files), rows, size))
    return out


def rolled_up(parts: list[PartitionStatus], by: str) -> list[tuple[str, str, str, int, int, int]]:
    """``parts`` summed per ``by`` ("layer" or "table"): (layer, table, days, files, rows,
    bytes) in layer order, ``days`` as ``first … last (n)``; "day" keeps every partition."""
    if by == "day":
        return [(p.layer, p.table, p.dt, p.files, p.rows, p.bytes) for p in parts]
    groups: dict[tuple[str, str], list[PartitionStatus]] = {}
    for p in parts:
        groups.setdefault((p.layer, p.table if by == "table" else ""), []).append(p)
    out = []
    for (layer, table), group in groups.items():
        days = sorted({p.dt for p in group})
        span = days[0] if len(days) == 1 else f"{days[0]} … {days[-1]} ({len(days)})"
        if by == "layer":
            table = f"{len({p.table for p in group})} tables"
        out.append(
            (
                layer,
                table,
                span,
                sum(p.files for p in group),
                sum(p.rows for p in group),
                sum(p.bytes for p in group),
            )
        )
    return out
