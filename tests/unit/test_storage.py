"""Parquet tables in the lake: Hive partitions, deterministic bytes, partition replacement."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opslake.lake.schemas import METRIC_POINTS
from opslake.lake.storage import STAGING, Lake


def _points(n: int) -> pa.Table:
    return pa.table({
        "ts": pa.array([1_700_000_000_000_000 + i for i in range(n)], pa.timestamp("us", "UTC")),
        "metric": ["cpu"] * n, "entity_id": [f"vm-{i}" for i in range(n)],
        "value": [float(i) for i in range(n)],
        "labels": pa.array([[("job", "node")]] * n, METRIC_POINTS.field("labels").type),
        "source": ["prometheus"] * n, "batch_id": ["b"] * n,
    }, schema=METRIC_POINTS)


def test_same_table_gives_identical_bytes(lake: Lake) -> None:
    first = Path(lake.write_table(_points(50), "silver", "metric_points", {"dt": "2026-03-02"}))
    before = first.read_bytes()
    again = Path(lake.write_table(_points(50), "silver", "metric_points", {"dt": "2026-03-02"}))
    assert again == first and again.read_bytes() == before


def test_hive_layout_and_string_partition_values(lake: Lake) -> None:
    lake.write_table(_points(3), "silver", "metric_points", {"dt": "2026-03-02"})
    lake.write_table(_points(2), "silver", "metric_points", {"dt": "2026-03-03"})
    assert lake.partitions("silver", "metric_points") == ["2026-03-02", "2026-03-03"]
    assert lake.read_table("silver", "metric_points", dts=["2026-03-03"]).num_rows == 2
    assert lake.read_table("silver", "metric_points").num_rows == 5
    path = lake.table_path("silver", "metric_points", {"dt": "2026-03-02"})
    assert path.endswith("silver/metric_points/dt=2026-03-02")
    ts_type = pq.read_schema(f"{path}/part-0.parquet").field("ts").type
    assert ts_type == pa.timestamp("us", "UTC"), "Spark refuses nanosecond timestamps"


def test_rewriting_a_partition_replaces_all_its_parts(lake: Lake) -> None:
    parts = [("b1", _points(2)), ("b2", [_points(1), _points(1)])]
    written = lake.write_parts("bronze", "t", {"dt": "2026-03-02"}, parts, METRIC_POINTS)
    assert [Path(p).name for p in written] == ["b1.parquet", "b2.parquet"]
    assert lake.read_table("bronze", "t").num_rows == 4
    lake.write_parts("bronze", "t", {"dt": "2026-03-02"}, [("b2", _points(1))], METRIC_POINTS)
    assert lake.read_table("bronze", "t").num_rows == 1


def test_missing_table_reads_empty_with_its_schema(lake: Lake) -> None:
    empty = lake.read_table("silver", "events_nowhere", schema=METRIC_POINTS)
    assert empty.num_rows == 0 and empty.schema == METRIC_POINTS


def test_a_failing_producer_fails_the_write_and_leaves_the_partition_alone(lake: Lake) -> None:
    lake.write_table(_points(2), "silver", "metric_points", {"dt": "2026-03-02"})

    def chunks():
        yield _points(1)
        raise ValueError("conformer broke")

    with pytest.raises(ValueError, match="conformer broke"):
        lake.write_parts("silver", "metric_points", {"dt": "2026-03-02"},
                         [("part-0", chunks())], METRIC_POINTS)
    assert lake.read_table("silver", "metric_points").num_rows == 2
    assert lake.list_files(lake.path(STAGING)) == [], "the staged file is discarded"
