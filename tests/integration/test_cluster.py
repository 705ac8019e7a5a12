"""Scale-out: the daily job on a local Dask cluster whose workers share only S3 and PostgreSQL.

One cluster per module (`opslake cluster up --workers 2`: PostgreSQL, moto as S3, a Dask
scheduler, two workers), stopped at the end even when a test fails. The same landing is
materialized on the cluster (lake on S3) and in one local process (lake on disk); the
results must be the same bytes.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from opslake.lake.storage import Lake
from opslake.orchestration.cluster import TASK_PREFIX, Cluster
from opslake.settings import Settings
from tests.integration.services import free_port, install_services, running

DAY = "2026-03-02"
OPSLAKE = str(Path(sys.executable).with_name("opslake"))
#: One fixed data key for both runs: sensitive fields are sealed deterministically under it.
DATA_KEY = "00112233445566778899aabbccddeeff"
SIMULATE = (
    "simulate",
    "--entities",
    "30",
    "--days",
    "1",
    "--start",
    DAY,
    "--step",
    "300",
    "--seed",
    "7",
)
LOGS = ("metric_usage", "quality_log")
TIMED = tuple(
    f"{table}/dt={DAY}/"
    for table in (
        "silver/events",
        "gold/quality_results",
        "gold/quality_report",
        "gold/incidents",
        "gold/incident_alerts",
    )
)
#: Sources of the events OpsLake raises itself (anomalies, failed quality checks).
OWN_SOURCES = ("opslake-ml", "opslake-quality")
STEP_ROW = re.compile(r"│\s*(\d{4}-\d\d-\d\d)\s*│\s*(\w+)\s*│\s*([\w.]+)\s*│\s*(worker-\d+)\s*│")
#: Both runs cut the heavy tables' day in four shards, one step each.
SHARDS = 4
SHARDED = (
    "bronze__prometheus_samples",
    "silver__metric_points",
    "gold__metric_rollup_5m",
    "gold__metric_rollup_1h",
)

pytestmark = pytest.mark.slow


@dataclass
class Estate:
    """The running cluster, the lakes and what the first cluster run printed."""

    env: dict[str, str]  # the cluster's lake on S3
    local: Settings  # the single-process run's lake on disk
    cluster: Cluster
    steps: list[tuple[str, str, str, str]]  # (day, job, step, worker) from the CLI's table


def _opslake(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [OPSLAKE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (
        f"opslake {' '.join(args)} exited {done.returncode}:\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )
    return done


@pytest.fixture(scope="module")
def estate() -> Iterator[Estate]:
    """A 30-object day landed on the cluster's S3, materialized there and locally."""
    # PostgreSQL runs as its own account when the tests run as root: it must be able to
    # pass through the state directory's parents (pytest's own tmp root is 0700).
    base = Path(tempfile.mkdtemp(prefix="opslake-cluster-"))
    os.chmod(base, 0o711)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLAKE_", "AWS_"))}
    env |= {
        "OPSLAKE_HOME": str(base / "local"),
        "OPSLAKE_STATE_DIR": str(base / "state"),
        "OPSLAKE_POSTGRES_PORT": str(free_port()),
        "OPSLAKE_DASK_PORT": str(free_port()),
        "OPSLAKE_CLUSTER_S3_PORT": str(free_port()),
        "OPSLAKE_DATA_KEY": DATA_KEY,
        "OPSLAKE_SHARDS": str(SHARDS),
    }
    settings = Settings.from_env(env)
    install_services()  # PostgreSQL
    try:
        _opslake(env, "cluster", "up", "--workers", "2")
        exports = _opslake(env, "cluster", "env").stdout
        s3_env = env | dict(re.findall(r"^export (\w+)=(\S+)$", exports, re.MULTILINE))
        assert s3_env["OPSLAKE_HOME"].startswith("s3://")
        # The same landing in both lakes: the simulator writes the same bytes for the same
        # seed (a copy would not do: the landing's manifest names each object's full path).
        for lake_env in (s3_env, env):
            _opslake(lake_env, *SIMULATE)
        # Both runs at once: the cluster run waits on S3 and the scheduler most of the time.
        local_run = subprocess.Popen(
            [OPSLAKE, "materialize"],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started = time.monotonic()
        on_cluster = _opslake(s3_env, "materialize", "--cluster")
        print(f"cluster materialize: {time.monotonic() - started:.0f}s")
        out, _ = local_run.communicate(timeout=300)
        print(f"both runs: {time.monotonic() - started:.0f}s")
        assert local_run.returncode == 0, out[-5000:]
        steps = STEP_ROW.findall(on_cluster.stdout)
        print(on_cluster.stdout)
        yield Estate(s3_env, Settings.from_env(env), Cluster(settings), steps)
    finally:
        down = subprocess.run(
            [OPSLAKE, "cluster", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        print(down.stdout, down.stderr)
        shutil.rmtree(base, ignore_errors=True)


def _tree(lake: Lake, layer: str) -> dict[str, bytes]:
    """Every file of a layer, by its path under the lake root, less the logs.

    ``gold/metric_usage`` (who computed which metric, opslake/metrics_catalog/usage.py) and
    ``gold/quality_log`` (every check run's results, opslake/quality/results.py) are not
    derived from the landing: each call appends a file under a random name, partitioned by
    the day it ran, so two runs never share their bytes.
    """
    logs = tuple(lake.path("gold", table) + "/" for table in LOGS)
    return {
        path.removeprefix(lake.root + "/"): lake.read_bytes(path)
        for path in lake.list_files(lake.path(layer), recursive=True)
        if not path.startswith(logs)
    }


def _worker_pids(cluster: Cluster) -> dict[int, str]:
    return {
        int((cluster.dir / f"{name}.pid").read_text()): name
        for name in cluster.worker_names()
        if (cluster.dir / f"{name}.pid").exists()
    }


def test_cluster_run_writes_the_same_bytes_as_a_local_run(estate: Estate) -> None:
    s3_lake = Lake.from_settings(estate.cluster.use_lake())
    local_lake = Lake.from_settings(estate.local)
    for layer in ("silver", "gold"):
        on_cluster, local = _tree(s3_lake, layer), _tree(local_lake, layer)
        assert sorted(on_cluster) == sorted(local), layer
        assert local, layer
        different = [path for path in local if on_cluster[path] != local[path]]
        # What the quality checks and the anomaly detector raise is stamped with the time
        # they ran (the wall clock of each run): check results, the report, OpsLake's own
        # events in silver/events and the incidents converged from them. These must hold as
        # many rows; every other file must be the same bytes.
        assert [p for p in different if not p.startswith(TIMED)] == [], different
        for path in different:
            if path.endswith(".parquet"):
                assert _rows(on_cluster[path]) == _rows(local[path]), path
    # The events OpsLake raises itself (anomalies, failed checks) land when their step runs;
    # the sources' events must be the same rows.
    on_cluster = s3_lake.read_table("silver", "events", dts=[DAY]).to_pylist()
    local = local_lake.read_table("silver", "events", dts=[DAY]).to_pylist()
    assert _sorted(r for r in on_cluster if r["source"] not in OWN_SOURCES) == _sorted(
        r for r in local if r["source"] not in OWN_SOURCES
    )
    for source in OWN_SOURCES:
        assert sum(r["source"] == source for r in on_cluster) == sum(
            r["source"] == source for r in local
        ), source


def _rows(data: bytes) -> int:
    return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows


def _sorted(rows: Iterable[dict]) -> list[str]:
    return sorted(repr(sorted(row.items())) for row in rows)


def test_each_step_ran_on_a_worker_and_both_workers_took_part(estate: Estate) -> None:
    from dagster import DagsterEventType, RunsFilter

    daily = [s for s in estate.steps if s[1] == "daily_pipeline"]
    assert len(daily) >= 40, estate.steps
    assert {s[3] for s in daily} == {"worker-1", "worker-2"}
    # Dagster's own record (the event log in PostgreSQL): the process that started each step.
    workers = _worker_pids(estate.cluster)
    with estate.cluster.instance() as instance:
        run = instance.get_runs(RunsFilter(job_name="daily_pipeline"), limit=1)[0]
        starts = instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.STEP_START, limit=1000
        ).records
    ran_by = {
        r.event_log_entry.dagster_event.step_key: r.event_log_entry.dagster_event.pid
        for r in starts
    }
    assert len(ran_by) == len(daily)
    assert os.getpid() not in ran_by.values()
    assert {workers.get(pid) for pid in ran_by.values()} == {"worker-1", "worker-2"}
    by_table = {step: worker for _, _, step, worker in daily}
    assert {step: workers[pid] for step, pid in ran_by.items()} == by_table
    # The heavy tables ran as one step per day shard and a merge, the shards on both workers.
    for stem in SHARDED:
        shards = {f"{stem}.{stem}_shard_{i}" for i in range(SHARDS)}
        assert shards | {f"{stem}.{stem}_merge"} <= set(by_table), (stem, sorted(by_table))
    assert {
        by_table[f"silver__metric_points.silver__metric_points_shard_{i}"] for i in range(SHARDS)
    } == {"worker-1", "worker-2"}


def test_the_dagster_ui_shows_the_clusters_runs(estate: Estate, tmp_path: Path) -> None:
    """`opslake ui --cluster`: Dagster's own GraphQL lists the runs the workers made."""
    import httpx

    port = free_port()
    query = "{ runsOrError { ... on Runs { results { jobName status tags { key value } } } } }"
    with running(
        [OPSLAKE, "ui", "--cluster", "--port", str(port)],
        f"http://127.0.0.1:{port}/server_info",
        tmp_path / "ui.log",
        env=estate.env,
        timeout=120,
    ):
        answer = httpx.post(
            f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=60
        ).json()
    runs = answer["data"]["runsOrError"]["results"]
    daily = [r for r in runs if r["jobName"] == "daily_pipeline"]
    assert daily and daily[-1]["status"] == "SUCCESS", runs
    assert any(t["key"] == "dagster/partition" and t["value"] == DAY for t in daily[-1]["tags"])


def test_the_sharded_lake_holds_one_part_per_shard(estate: Estate) -> None:
    s3_lake = Lake.from_settings(estate.cluster.use_lake())
    for layer, table in (("silver", "metric_points"), ("gold", "metric_rollup_5m")):
        parts = s3_lake.list_files(s3_lake.table_path(layer, table, {"dt": DAY}))
        assert [p.rsplit("/", 1)[-1] for p in parts] == [
            f"part-{i}.parquet" for i in range(SHARDS)
        ], parts
        assert all(_rows(s3_lake.read_bytes(p)) for p in parts), parts
    # The shards' states are gone once merged.
    assert not s3_lake.list_files(s3_lake.path("_shards"), recursive=True)


def test_a_worker_killed_mid_run_loses_and_doubles_nothing(estate: Estate) -> None:
    """SIGKILL the worker running a step once a first step finished: the run completes."""
    from distributed import Client

    proc = subprocess.Popen(
        [OPSLAKE, "materialize", "--cluster", "--select", "silver"],
        env=estate.env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    killed = None
    try:
        with Client(estate.cluster.scheduler, timeout=10, set_as_default=False) as client:
            since = time.time()
            deadline = time.monotonic() + 180
            while killed is None and time.monotonic() < deadline and proc.poll() is None:
                finished = [
                    t
                    for t in client.get_task_stream(start=since)
                    if str(t["key"]).startswith(TASK_PREFIX)
                ]
                busy = {address: keys for address, keys in client.processing().items() if keys}
                if finished and busy:
                    address, keys = next(iter(busy.items()))
                    name = client.scheduler_info(n_workers=-1)["workers"][address]["name"]
                    pid = {n: p for p, n in _worker_pids(estate.cluster).items()}[name]
                    os.kill(pid, signal.SIGKILL)
                    killed = (name, pid, keys[0])
                time.sleep(0.2)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed is not None, f"no step was running to kill:\n{out[-4000:]}"
    print(f"killed {killed}\n{out[out.find('steps on the cluster') - 60 :]}")
    name, pid, key = killed
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert proc.returncode == 0, out[-5000:]
    steps = STEP_ROW.findall(out)
    killed_step = key.split("/")[2]
    survivor = {"worker-1": "worker-2", "worker-2": "worker-1"}[name]
    assert any(s[2] == killed_step and s[3] == survivor for s in steps), (killed, steps)
    s3_lake = Lake.from_settings(estate.cluster.use_lake())
    local_lake = Lake.from_settings(estate.local)
    for table in s3_lake.list_dirs(s3_lake.path("silver")):
        assert (
            s3_lake.read_table("silver", table, dts=[DAY]).num_rows
            == local_lake.read_table("silver", table, dts=[DAY]).num_rows
        ), table
