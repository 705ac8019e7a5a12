"""Parquet tables in the lake: Hive partitions, deterministic bytes, partition replacement."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opslake.assets.resources import LakeResource
from opslake.lake.schemas import METRIC_POINTS
from opslake.lake.storage import STAGING, Lake
from opslake.settings import Settings


def _points(n: int) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array(
                [1_700_000_000_000_000 + i for i in range(n)], pa.timestamp("us", "UTC")
            ),
            "metric": ["cpu"] * n,
            "entity_id": [f"vm-{i}" for i in range(n)],
            "value": [float(i) for i in range(n)],
            "labels": pa.array([[("job", "node")]] * n, METRIC_POINTS.field("labels").type),
            "source": ["prometheus"] * n,
            "batch_id": ["b"] * n,
        },
        schema=METRIC_POINTS,
    )


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
        lake.write_parts(
            "silver", "metric_points", {"dt": "2026-03-02"}, [("part-0", chunks())], METRIC_POINTS
        )
    assert lake.read_table("silver", "metric_points").num_rows == 2
    assert lake.list_files(lake.path(STAGING)) == [], "the staged file is discarded"


def test_a_failed_staged_write_leaves_nothing(lake: Lake) -> None:
    def chunks():
        yield b"half of a batch"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        lake.put_atomic(lake.path("landing", "x.json"), chunks())
    assert lake.list_files(lake.path(STAGING)) == []
    assert not lake.exists(lake.path("landing", "x.json"))


def test_sweep_removes_only_what_no_live_writer_owns(lake: Lake) -> None:
    staging = Path(lake.path(STAGING))
    staging.mkdir(parents=True)
    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            files = {
                "dead": staging / f"{host}_{dead}_{'a' * 32}.part",
                "alive": staging / f"{host}_{alive.pid}_{'b' * 32}.part",
                "mine": staging / f"{host}_{os.getpid()}_{'c' * 32}.parquet",
                "other host, fresh": staging / f"elsewhere_1_{'d' * 32}.part",
                "other host, stale": staging / f"elsewhere_1_{'e' * 32}.part",
            }
            for path in files.values():
                path.write_bytes(b"partial")
            old = time.time() - 7200
            os.utime(files["other host, stale"], (old, old))
            assert lake.sweep_staged() == 2
            left = {name for name, path in files.items() if path.exists()}
            assert left == {"alive", "mine", "other host, fresh"}
        finally:
            alive.kill()


def test_each_run_of_the_pipeline_starts_by_sweeping(lake: Lake, settings: Settings) -> None:
    staging = Path(lake.path(STAGING))
    staging.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    leftover = staging / f"{socket.gethostname()}_{dead}_{'a' * 32}.parquet"
    leftover.write_bytes(b"PAR1")
    resource = LakeResource(home=settings.home, state_dir=str(settings.state_dir))
    resource.setup_for_execution(dg.build_init_resource_context())
    assert not leftover.exists()
