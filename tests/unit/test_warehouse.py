"""The serving warehouse is swapped in atomically while readers hold it open."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from opslake.errors import StorageError
from opslake.lake.storage import Lake
from opslake.lake.warehouse import build_warehouse, open_read_only
from opslake.settings import Settings


def _gold(lake: Lake, dt: str, rows: int) -> None:
    lake.write_table(
        pa.table({"entity_id": [f"e{i}" for i in range(rows)], "score": [1.0] * rows}),
        "gold",
        "entity_health",
        {"dt": dt},
    )


def test_reader_keeps_its_snapshot_while_the_warehouse_is_rebuilt(
    lake: Lake, settings: Settings
) -> None:
    _gold(lake, "2026-03-02", 3)
    build_warehouse(lake, settings.warehouse_path)
    reader = open_read_only(settings.warehouse_path)
    assert reader.execute("SELECT count(*) FROM entity_health").fetchone() == (3,)

    _gold(lake, "2026-03-03", 4)
    objects = build_warehouse(lake, settings.warehouse_path)  # no lock error with a reader open
    # Beside gold, the lake's own size: one row per partition.
    assert [(o.name, o.rows) for o in objects] == [("entity_health", 7), ("lake_inventory", 2)]
    # The open reader still answers from the file it opened; a new reader sees the new one.
    assert reader.execute("SELECT name FROM _opslake_warehouse").fetchall() == [
        ("entity_health",),
        ("lake_inventory",),
    ]
    fresh = open_read_only(settings.warehouse_path)
    assert fresh.execute(
        'SELECT layer, "table", dt, files, rows, bytes > 0 FROM lake_inventory ORDER BY dt'
    ).fetchall() == [
        ("gold", "entity_health", "2026-03-02", 1, 3, True),
        ("gold", "entity_health", "2026-03-03", 1, 4, True),
    ]
    assert fresh.execute("SELECT count(*), count(DISTINCT dt) FROM entity_health").fetchone() == (
        7,
        2,
    )
    assert fresh.execute("SELECT typeof(dt) FROM entity_health LIMIT 1").fetchone() == ("VARCHAR",)
    with pytest.raises(duckdb.Error):
        fresh.execute("CREATE TABLE x (a INT)")
    reader.close()
    fresh.close()
    assert not list(settings.warehouse_path.parent.glob(".warehouse.duckdb.*")), "no leftovers"


def test_reading_a_missing_warehouse_says_how_to_build_it(settings: Settings) -> None:
    with pytest.raises(StorageError, match="opslake warehouse build"):
        open_read_only(settings.warehouse_path)


def test_answers_are_cached_per_warehouse_file_but_live_views_are_read_fresh(
    lake: Lake, settings: Settings
) -> None:
    from opslake.api.warehouse import WarehouseReader

    _gold(lake, "2026-03-02", 3)
    live = pa.table({"entity_id": ["e0"], "value": [1.0]})
    lake.write_table(live, "gold", "metric_values_live", {"dt": "2026-03-02", "hour": "10"})
    objects = build_warehouse(lake, settings.warehouse_path)
    assert {o.name: o.kind for o in objects} == {
        "entity_health": "table",
        "metric_values_live": "live",
        "lake_inventory": "table",
    }
    reader = WarehouseReader(settings.warehouse_path)
    count = "SELECT count(*) AS n FROM entity_health WHERE score >= ? AND entity_id <> ALL(?)"
    first = reader.query(count, [0.5, ["x"]])
    assert first.column("n")[0].as_py() == 3 and reader.served_from(first) is not None
    assert reader.cached(count, [0.5, ["x"]]) is first
    assert reader.cached(count, [0.7, ["x"]]) is None  # other parameters
    # Gold written after the build is not in the snapshot until the next rebuild...
    _gold(lake, "2026-03-03", 4)
    assert reader.query(count, [0.5, ["x"]]).column("n")[0].as_py() == 3
    # ...while the streaming tables are views: new hours show at once, never from the cache.
    lake.write_table(live, "gold", "metric_values_live", {"dt": "2026-03-02", "hour": "11"})
    streamed = reader.query("SELECT count(*) AS n FROM metric_values_live")
    assert streamed.column("n")[0].as_py() == 2 and reader.served_from(streamed) is None
    build_warehouse(lake, settings.warehouse_path)
    assert reader.cached(count, [0.5, ["x"]]) is None
    assert reader.query(count, [0.5, ["x"]]).column("n")[0].as_py() == 7


def test_the_cache_keeps_to_its_size(lake: Lake, settings: Settings) -> None:
    from opslake.api.warehouse import WarehouseReader

    _gold(lake, "2026-03-02", 1000)
    build_warehouse(lake, settings.warehouse_path)
    reader = WarehouseReader(settings.warehouse_path, cache_bytes=64 * 1024)
    sql = "SELECT * FROM entity_health WHERE score >= ? LIMIT 200"
    tables = [reader.query(sql, [i / 100]) for i in range(50)]
    kept = [t for t in tables if reader.served_from(t) is not None]
    assert 0 < len(kept) < len(tables)
    assert sum(t.nbytes for t in kept) <= 64 * 1024
    assert reader.served_from(tables[-1]) is not None  # newest kept, oldest gone
    assert reader.served_from(tables[0]) is None
