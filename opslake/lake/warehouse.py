"""The serving warehouse: a DuckDB file of views over gold, swapped in atomically.

It is built beside the live file and moved over it with one rename, so a reader that opened
the old file (``read_only``) keeps a consistent snapshot and never meets a lock or a
half-built file. With a local lake the objects are views over the Parquet files; with an
object-store lake DuckDB cannot reach ``s3://`` here (its httpfs extension downloads at run
time), so gold tables are copied in through pyarrow instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from opslake.errors import StorageError
from opslake.lake.storage import Lake, fsync_dir

SERVING_LAYERS = ("gold",)
#: Daily tables whose rows may be written again on a later day (an incident open at midnight):
#: ``<table>_current`` keeps the newest partition's row per key.
LATEST_BY = {"incidents": ("incident_id",), "incident_alerts": ("incident_id", "alert_id")}


@dataclass(frozen=True)
class WarehouseObject:
    """One view (or table) in the warehouse and how many rows it answers."""

    name: str
    layer: str
    table: str
    rows: int


def build_warehouse(lake: Lake, target: Path) -> list[WarehouseObject]:
    """Rebuild ``target`` from every gold table in the lake; returns what it now serves."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.building")
    tmp.unlink(missing_ok=True)
    objects: list[WarehouseObject] = []
    try:
        con = duckdb.connect(str(tmp))
        try:
            for layer in SERVING_LAYERS:
                for table in lake.list_dirs(lake.path(layer)):
                    if not any(f.endswith(".parquet") for f in lake.list_files(
                            lake.table_path(layer, table), recursive=True)):
                        continue
                    objects.append(_serve(con, lake, layer, table))
            objects += [_current(con, o.table, LATEST_BY[o.table]) for o in list(objects)
                        if o.table in LATEST_BY]
            con.execute("CREATE TABLE _opslake_warehouse (name VARCHAR, layer VARCHAR, "
                        "source_table VARCHAR, rows BIGINT)")
            if objects:
                con.executemany("INSERT INTO _opslake_warehouse VALUES (?, ?, ?, ?)",
                                [(o.name, o.layer, o.table, o.rows) for o in objects])
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except duckdb.Error as exc:
        raise StorageError(f"building the warehouse failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return objects


def _serve(con: duckdb.DuckDBPyConnection, lake: Lake, layer: str, table: str) -> WarehouseObject:
    name = table if layer == "gold" else f"{layer}_{table}"
    if lake.local:
        partitioned = bool(lake.partitions(layer, table))
        glob = lake.table_path(layer, table) + ("/**/*.parquet" if partitioned else "/*.parquet")
        # Hive partition values stay strings (dt=2026-11-24): say so, or DuckDB infers a date.
        hive = (", hive_partitioning = true, hive_types_autocast = false" if partitioned
                else ", hive_partitioning = false")
        con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet(\'{_quote(glob)}\'{hive})')
    else:
        data = lake.read_table(layer, table)  # noqa: F841  (DuckDB scans the local variable)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM data')
    rows = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
    return WarehouseObject(name=name, layer=layer, table=table, rows=int(rows))


def _current(con: duckdb.DuckDBPyConnection, table: str, keys: tuple[str, ...]
             ) -> WarehouseObject:
    name = f"{table}_current"
    con.execute(f'CREATE VIEW "{name}" AS SELECT * EXCLUDE (_newest) FROM (SELECT *, '
                f'row_number() OVER (PARTITION BY {", ".join(keys)} ORDER BY dt DESC) AS _newest '
                f'FROM "{table}") WHERE _newest = 1')
    rows = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
    return WarehouseObject(name=name, layer="gold", table=table, rows=int(rows))


def _quote(text: str) -> str:
    return text.replace("'", "''")


def open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """Open the warehouse as every reader should: read-only, never holding a write lock."""
    if not path.exists():
        raise StorageError(f"no warehouse at {path}; run `opslake warehouse build` first")
    return duckdb.connect(str(path), read_only=True)
