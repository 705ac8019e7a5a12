"""The serving warehouse: a DuckDB file holding gold, swapped in atomically.

It is built beside the live file and moved over it with one rename, so a reader that opened
the old file (``read_only``) keeps a consistent snapshot and never meets a lock or a
half-built file. Gold tables are copied in (from Parquet by DuckDB, or through pyarrow for an
object-store lake, whose ``s3://`` DuckDB cannot reach here: its httpfs extension downloads at
run time), so the file is a true snapshot: what a reader sees changes only when a rebuild is
swapped in, which is what lets the API cache answers per warehouse file. The streaming tables
(``*_live``), written every minute between rebuilds, are the exception: on a local lake they
stay views over their Parquet files, marked ``live`` in ``_opslake_warehouse`` with the lake
directory each reads (``location``), so readers see the newest rows without a rebuild, and a
reader that may open no other file (Superset's connection) knows which directories to allow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import duckdb

from opslake.errors import StorageError
from opslake.lake import duck
from opslake.lake.inventory import inventory
from opslake.lake.storage import Lake, fsync_dir, process_alive

SERVING_LAYERS = ("gold",)
#: Gold tables written between rebuilds by the streaming jobs: served as views, never cached.
LIVE_SUFFIX = "_live"
#: Daily tables whose rows may be written again on a later day (an incident open at midnight):
#: ``<table>_current`` keeps the newest partition's row per key (an incident's handling state
#: is written again on each day it is acted on).
LATEST_BY = {
    "incidents": ("incident_id",),
    "incident_alerts": ("incident_id", "alert_id"),
    "incident_state": ("incident_id",),
}
#: Daily tables the streaming jobs also write between rebuilds (``<table>_live``):
#: ``<table>_now`` is the daily table's newest rows and the live rows of the days after its
#: last (column ``live`` says which), there whether or not live rows exist yet, so a reader
#: (a screen) sees both without a rebuild and without failing on a lake that has no live rows.
WITH_LIVE = ("incident_alerts",)
#: The lake's own size per layer, table and day (the platform watching itself, S6.10a).
INVENTORY_TABLE = "lake_inventory"


@dataclass(frozen=True)
class WarehouseObject:
    """One view (or table) in the warehouse and how many rows it answers."""

    name: str
    layer: str
    table: str
    rows: int
    #: ``table`` (a copy, fixed until the next rebuild) or ``live`` (a view over Parquet).
    kind: str = "table"
    #: The lake directory a ``live`` view reads (ending in ``/``); None for a table.
    location: str | None = None


def build_warehouse(lake: Lake, target: Path) -> list[WarehouseObject]:
    """Rebuild ``target`` from every gold table in the lake; returns what it now serves."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned(target)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.building")
    tmp.unlink(missing_ok=True)
    objects: list[WarehouseObject] = []
    try:
        con = duck.connect(str(tmp))
        try:
            for layer in SERVING_LAYERS:
                for table in lake.list_dirs(lake.path(layer)):
                    if not any(
                        f.endswith(".parquet")
                        for f in lake.list_files(lake.table_path(layer, table), recursive=True)
                    ):
                        continue
                    objects.append(_serve(con, lake, layer, table))
            objects += [
                _current(con, o, LATEST_BY[o.table]) for o in list(objects) if o.table in LATEST_BY
            ]
            served = {o.name: o for o in objects}
            objects += [
                _now(con, served[f"{t}_current"], served.get(t + LIVE_SUFFIX))
                for t in WITH_LIVE
                if f"{t}_current" in served
            ]
            objects.append(_inventory(con, lake))
            con.execute(
                "CREATE TABLE _opslake_warehouse (name VARCHAR, layer VARCHAR, "
                "source_table VARCHAR, rows BIGINT, kind VARCHAR, location VARCHAR)"
            )
            if objects:
                con.executemany(
                    "INSERT INTO _opslake_warehouse VALUES (?, ?, ?, ?, ?, ?)",
                    [(o.name, o.layer, o.table, o.rows, o.kind, o.location) for o in objects],
                )
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


def _sweep_abandoned(target: Path) -> None:
    """Remove half-built files of builders that were killed (as big as the warehouse)."""
    for stale in target.parent.glob(f".{target.name}.*.building*"):
        pid = stale.name.removeprefix(f".{target.name}.").split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def _serve(con: duckdb.DuckDBPyConnection, lake: Lake, layer: str, table: str) -> WarehouseObject:
    name = table if layer == "gold" else f"{layer}_{table}"
    kind = "live" if lake.local and table.endswith(LIVE_SUFFIX) else "table"
    location = None
    if lake.local:
        partitioned = bool(lake.partitions(layer, table))
        glob = lake.table_path(layer, table) + ("/**/*.parquet" if partitioned else "/*.parquet")
        # Hive partition values stay strings (dt=2026-11-24): say so, or DuckDB infers a date.
        hive = (
            ", hive_partitioning = true, hive_types_autocast = false"
            if partitioned
            else ", hive_partitioning = false"
        )
        what = "VIEW" if kind == "live" else "TABLE"
        if kind == "live":
            location = lake.table_path(layer, table) + "/"
        con.execute(
            f"CREATE {what} \"{name}\" AS SELECT * FROM read_parquet('{_quote(glob)}'{hive})"
        )
    else:
        data = lake.read_table(layer, table)  # noqa: F841  (DuckDB scans the local variable)
        con.execute(f'CREATE TABLE "{name}" AS SELECT * FROM data')
    rows = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
    return WarehouseObject(
        name=name, layer=layer, table=table, rows=int(rows), kind=kind, location=location
    )


def _inventory(con: duckdb.DuckDBPyConnection, lake: Lake) -> WarehouseObject:
    """Files, rows and bytes of every partition of the lake, landing included, as built."""
    parts = inventory(lake)
    con.execute(
        f'CREATE TABLE "{INVENTORY_TABLE}" (layer VARCHAR, "table" VARCHAR, '
        "dt VARCHAR, files BIGINT, rows BIGINT, bytes BIGINT)"
    )
    if parts:
        con.executemany(
            f'INSERT INTO "{INVENTORY_TABLE}" VALUES (?, ?, ?, ?, ?, ?)',
            [(p.layer, p.table, p.dt, p.files, p.rows, p.bytes) for p in parts],
        )
    return WarehouseObject(
        name=INVENTORY_TABLE, layer="lake", table=INVENTORY_TABLE, rows=len(parts)
    )


def _current(
    con: duckdb.DuckDBPyConnection, source: WarehouseObject, keys: tuple[str, ...]
) -> WarehouseObject:
    table = source.table
    name = f"{table}_current"
    con.execute(
        f'CREATE VIEW "{name}" AS SELECT * EXCLUDE (_newest) FROM (SELECT *, '
        f"row_number() OVER (PARTITION BY {', '.join(keys)} ORDER BY dt DESC) AS _newest "
        f'FROM "{table}") WHERE _newest = 1'
    )
    rows = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
    return WarehouseObject(name=name, layer="gold", table=table, rows=int(rows), kind=source.kind)


def _now(
    con: duckdb.DuckDBPyConnection, current: WarehouseObject, live: WarehouseObject | None
) -> WarehouseObject:
    table = current.table
    name = f"{table}_now"
    sql = f'SELECT *, false AS live FROM "{current.name}"'
    if live is not None:
        sql += (
            f' UNION ALL BY NAME SELECT *, true AS live FROM "{live.name}" '
            f'WHERE dt > (SELECT max(dt) FROM "{table}")'
        )
    con.execute(f'CREATE VIEW "{name}" AS {sql}')
    rows = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
    kind = live.kind if live is not None else current.kind
    return WarehouseObject(name=name, layer="gold", table=table, rows=int(rows), kind=kind)


def _quote(text: str) -> str:
    return text.replace("'", "''")


def open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """Open the warehouse as every reader should: read-only, never holding a write lock.

    DuckDB shares one database instance per file path within a process, so a plain
    ``connect(path)`` made while an older connection is still open would answer from the file
    that the last rebuild replaced. The file is therefore attached (as ``warehouse``, made the
    default) to a fresh in-memory instance, which opens whatever file the path names now. Use
    :func:`read_cursor` for cursors: a cursor does not inherit the default.
    """
    if not path.exists():
        raise StorageError(f"no warehouse at {path}; run `opslake warehouse build` first")
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH '{_quote(str(path))}' AS warehouse (READ_ONLY)")
        con.execute("USE warehouse")
    except duckdb.Error as exc:
        con.close()
        raise StorageError(
            f"cannot open the warehouse at {path} ({exc}); rebuild it with "
            "`opslake warehouse build`"
        ) from exc
    return con


def read_cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """A cursor of :func:`open_read_only`'s connection, reading the warehouse by default."""
    cursor = con.cursor()
    cursor.execute("USE warehouse")
    return cursor
