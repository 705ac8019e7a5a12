"""An event loop runs warehouse statements on the reader's own threads."""

from __future__ import annotations

import asyncio
import threading

import pyarrow as pa
import pytest

from opslake.api.warehouse import QUERY_THREADS, WarehouseReader
from opslake.lake.storage import Lake
from opslake.lake.warehouse import build_warehouse
from opslake.settings import Settings


def test_statements_run_off_the_loop_and_answer_each_caller(lake: Lake,
                                                             settings: Settings) -> None:
    lake.write_table(pa.table({"entity_id": [f"e{i}" for i in range(100)],
                               "score": [i / 100 for i in range(100)]}),
                     "gold", "entity_health", {"dt": "2026-03-02"})
    build_warehouse(lake, settings.warehouse_path)
    reader = WarehouseReader(settings.warehouse_path)
    sql = "SELECT count(*) AS n FROM entity_health WHERE score >= ?"

    def count(floor: float) -> tuple[int, str]:
        table = reader.query(sql, [floor])
        return table.column("n")[0].as_py(), threading.current_thread().name

    async def main() -> list[tuple[int, str]]:
        # More callers than threads: each still gets its own statement's answer.
        return await asyncio.gather(*(reader.run(count, i / 100)
                                      for i in range(2 * QUERY_THREADS)))

    answers = asyncio.run(main())
    assert [n for n, _ in answers] == [max(0, 100 - i) for i in range(2 * QUERY_THREADS)]
    assert all(name.startswith("warehouse-read") for _, name in answers)


def test_a_failing_call_raises_in_the_caller(settings: Settings) -> None:
    reader = WarehouseReader(settings.warehouse_path)

    def fail() -> None:
        raise ValueError("from the reader's thread")

    with pytest.raises(ValueError, match="reader's thread"):
        asyncio.run(reader.run(fail))
