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
    lake.write_table(pa.table({"entity_id": [f"e{i}" for i in range(rows)],
                               "score": [1.0] * rows}), "gold", "entity_health", {"dt": dt})


def test_reader_keeps_its_snapshot_while_the_warehouse_is_rebuilt(
        lake: Lake, settings: Settings) -> None:
    _gold(lake, "2026-03-02", 3)
    build_warehouse(lake, settings.warehouse_path)
    reader = open_read_only(settings.warehouse_path)
    assert reader.execute("SELECT count(*) FROM entity_health").fetchone() == (3,)

    _gold(lake, "2026-03-03", 4)
    objects = build_warehouse(lake, settings.warehouse_path)  # no lock error with a reader open
    assert [(o.name, o.rows) for o in objects] == [("entity_health", 7)]
    # The open reader still answers from the file it opened; a new reader sees the new one.
    assert reader.execute("SELECT name FROM _opslake_warehouse").fetchall() == [
        ("entity_health",)]
    fresh = open_read_only(settings.warehouse_path)
    assert fresh.execute("SELECT count(*), count(DISTINCT dt) FROM entity_health").fetchone() \
        == (7, 2)
    assert fresh.execute("SELECT typeof(dt) FROM entity_health LIMIT 1").fetchone() == ("VARCHAR",)
    with pytest.raises(duckdb.Error):
        fresh.execute("CREATE TABLE x (a INT)")
    reader.close()
    fresh.close()
    assert not list(settings.warehouse_path.parent.glob(".warehouse.duckdb.*")), "no leftovers"


def test_reading_a_missing_warehouse_says_how_to_build_it(settings: Settings) -> None:
    with pytest.raises(StorageError, match="opslake warehouse build"):
        open_read_only(settings.warehouse_path)
