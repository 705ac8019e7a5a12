"""Benchmark: a province-sized day (20,000 objects) through landing → gold, here and on Dask.

Three parts, each figure printed beside the load average (the machine is shared: compare
within one run only):

1. **One machine.** ``opslake simulate`` lands one day of ``--entities`` objects at 60 s,
   then ``opslake materialize`` (its own process, the embedded default: DuckDB, local
   Parquet, SQLite) takes it through landing → bronze → silver → gold, catalog values and
   anomaly scores included. Wall time, CPU time, points/s and the process's peak RSS, and
   the slowest steps from Dagster's own event log.
2. **A local Dask cluster.** ``opslake cluster up --workers N`` (PostgreSQL for the Dagster
   instance, moto as the S3 lake, N single-threaded workers sharing nothing else); the
   same simulated day (``--cluster-entities``) landed on its S3 and materialized with
   ``materialize --cluster`` in ``--shards`` day shards: wall time and the table of which
   worker ran each step for how long.
3. **The arithmetic** for 5.8 billion samples a day (2,000 hosts × 500 series every 15 s)
   from the measured CPU rate: worker-hours and wall hours with N workers.

No assertions: the figures go in the closing note. ``make bench`` does not run it (it takes
most of an hour on 2 cores); run ``python -m tests.benchmarks.bench_scale``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPSLAKE = str(Path(sys.executable).with_name("opslake"))
DAY = "2026-03-02"
#: 2,000 hosts × 500 series, a sample every 15 s: the estate the issue sizes.
PROVINCE_SAMPLES = 2_000 * 500 * 86_400 // 15
STEP_ROW = re.compile(
    r"│\s*(\d{4}-\d\d-\d\d)\s*│\s*(\w+)\s*│\s*([\w.]+)\s*│\s*(worker-\d+)\s*│"
    r"\s*([\d.]+)\s*│"
)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _env(home: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLAKE_", "AWS_"))}
    return env | {
        "OPSLAKE_HOME": str(home / "lake"),
        "OPSLAKE_STATE_DIR": str(home / "state"),
        **more,
    }


def _run(env: dict[str, str], *args: str) -> tuple[float, str]:
    """Run ``opslake args``; its wall seconds and output, both streams (a clear exit when
    it fails)."""
    started = time.perf_counter()
    done = subprocess.run([OPSLAKE, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(
            f"opslake {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return time.perf_counter() - started, done.stdout + done.stderr


def _simulate(env: dict[str, str], entities: int) -> tuple[float, int]:
    """Land the day; (seconds, metric points) from the simulator's own summary."""
    seconds, out = _run(
        env,
        "simulate",
        "--entities",
        str(entities),
        "--days",
        "1",
        "--start",
        DAY,
        "--step",
        "60",
        "--seed",
        "7",
    )
    points = re.search(r"metric_points=([\d,]+)", out)
    return seconds, int(points.group(1).replace(",", "")) if points else 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _slowest_steps(env: dict[str, str], top: int = 12) -> list[tuple[str, float]]:
    """The longest steps of the last daily run, from the instance's event log."""
    code = (
        "import dagster as dg, json\n"
        "from opslake.orchestration import runner\n"
        "from opslake.settings import Settings\n"
        "inst = runner.instance(Settings.from_env())\n"
        "run = inst.get_runs(dg.RunsFilter(job_name='daily_pipeline'), limit=1)[0]\n"
        "stats = inst.get_run_step_stats(run.run_id)\n"
        "print(json.dumps([(s.step_key, (s.end_time or 0) - (s.start_time or 0)) "
        "for s in stats]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    import json

    steps = json.loads(done.stdout.strip().splitlines()[-1])
    return sorted(((k, float(s)) for k, s in steps), key=lambda x: -x[1])[:top]


def one_machine(work: Path, entities: int, shards: int) -> dict:
    """Part 1: simulate and materialize in one process; prints and returns the figures."""
    env = _env(work / "local", OPSLAKE_SHARDS=str(shards))
    sim_s, points = _simulate(env, entities)
    landed = sum(
        f.stat().st_size for f in (work / "local" / "lake" / "landing").rglob("*") if f.is_file()
    )
    print(
        f"landed {entities:,} objects × 1 day at 60 s: {points:,} points, "
        f"{landed / 2**30:.1f} GiB in {sim_s:.0f} s"
    )
    cpu_before = _children_cpu()
    seconds, _ = _run(env, "materialize")
    cpu = _children_cpu() - cpu_before
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(
        f"one machine, {shards} shard(s): landing → gold {seconds:,.0f} s wall, "
        f"{cpu:,.0f} s CPU, {points / seconds:,.0f} points/s, "
        f"{points / cpu:,.0f} points per CPU-second, peak RSS {peak:.2f} GiB "
        f"(load {_load()})"
    )
    print("  slowest steps:")
    for step, took in _slowest_steps(env):
        print(f"    {step:<60}{took:>8.1f} s")
    return {"points": points, "seconds": seconds, "cpu": cpu, "rss_gib": peak}


def on_cluster(work: Path, entities: int, workers: int, shards: int) -> dict | None:
    """Part 2: the same day on a local Dask cluster (S3 + PostgreSQL)."""
    base = work / "cluster"
    base.mkdir()
    # PostgreSQL runs as its own account under root: it must traverse the state dir.
    os.chmod(work, 0o711)
    os.chmod(base, 0o711)
    env = _env(base, OPSLAKE_SHARDS=str(shards))
    s3_env = None
    try:
        _run(env, "cluster", "up", "--workers", str(workers))
        _, exports = _run(env, "cluster", "env")
        s3_env = env | dict(re.findall(r"^export (\w+)=(\S+)$", exports, re.MULTILINE))
        sim_s, points = _simulate(s3_env, entities)
        print(
            f"landed {entities:,} objects on the cluster's S3: {points:,} points in {sim_s:.0f} s"
        )
        seconds, out = _run(s3_env, "materialize", "--cluster")
        steps = STEP_ROW.findall(out)
        print(
            f"cluster, {workers} workers, {shards} shards: landing → gold {seconds:,.0f} s "
            f"wall, {points / seconds:,.0f} points/s (load {_load()})"
        )
        busy: dict[str, float] = {}
        for _day, job, step, worker, took in steps:
            if job == "daily_pipeline":
                busy[worker] = busy.get(worker, 0.0) + float(took)
        print(
            "  step seconds per worker: "
            + ", ".join(f"{w} {s:,.0f} s" for w, s in sorted(busy.items()))
        )
        print("  slowest steps (worker):")
        ranked = sorted((s for s in steps if s[1] == "daily_pipeline"), key=lambda s: -float(s[4]))
        for _day, _job, step, worker, took in ranked[:16]:
            print(f"    {step:<60}{worker:>10}{float(took):>8.1f} s")
        return {"points": points, "seconds": seconds, "busy": busy}
    finally:
        if s3_env is not None:  # scratch: `down` would save the whole bucket to disk
            _empty_lake(s3_env)
        subprocess.run(
            [OPSLAKE, "cluster", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def _empty_lake(env: dict[str, str]) -> None:
    """Delete every object of the lake ``env`` names (the benchmark's own bucket)."""
    from opslake.lake.storage import Lake
    from opslake.settings import Settings

    with_creds = {k: v for k, v in env.items() if k.startswith("AWS_")}
    os.environ.update(with_creds)  # pyarrow's S3 client reads credentials from the process
    lake = Lake.from_settings(Settings.from_env(env))
    lake.fs.delete_dir_contents(lake.root, missing_dir_ok=True)


def arithmetic(local: dict | None, cluster: dict | None, workers: int) -> None:
    """Part 3: what 5.8 B samples a day needs, from the measured rates."""
    per_worker = cluster["points"] / cluster["seconds"] / workers if cluster else None
    if local is not None:
        rate = local["points"] / local["cpu"]
        print(
            f"5.8 B samples/day ({PROVINCE_SAMPLES:,}) at {rate:,.0f} points per CPU-second "
            f"(one machine, measured above): {PROVINCE_SAMPLES / rate / 3600:,.1f} CPU-hours "
            "a day"
        )
        if per_worker is not None:
            # Parallel efficiency measured here: the cluster's rate per worker against one
            # process's rate per CPU-second.
            efficiency = min(1.0, per_worker / rate)
            print(
                f"measured on the {workers}-worker cluster: {per_worker:,.0f} points/s per "
                f"worker, {efficiency:.0%} of the single-process CPU rate (S3, PostgreSQL, "
                "task overhead)"
            )
            rate *= efficiency
    elif per_worker is not None:  # --skip-local: the cluster's own rate, overheads included
        rate = per_worker
        print(
            f"5.8 B samples/day ({PROVINCE_SAMPLES:,}) at {rate:,.0f} points/s per worker "
            f"(the {workers}-worker cluster above, S3 and PostgreSQL included)"
        )
    else:
        return
    for n in (2, 8, 16, 32, 64):
        hours = PROVINCE_SAMPLES / rate / n / 3600
        print(
            f"  {n:>3} single-core workers: {hours:6.1f} h wall per day"
            f"{'  ← fits a day' if hours < 24 else ''}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=20_000)
    parser.add_argument(
        "--shards", type=int, default=1, help="day shards of the one-machine run (OPSLAKE_SHARDS)"
    )
    parser.add_argument(
        "--cluster-entities",
        type=int,
        default=None,
        help="objects of the cluster run (default: --entities)",
    )
    parser.add_argument("--cluster-shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument(
        "--skip-local",
        action="store_true",
        help="only the cluster run; the arithmetic then uses its rate",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opslake-bench-scale-"))
    print(f"bench_scale on {os.cpu_count()} cores, load {_load()}")
    try:
        local = None if args.skip_local else one_machine(work, args.entities, args.shards)
        shutil.rmtree(work / "local", ignore_errors=True)
        cluster = (
            None
            if args.skip_cluster
            else on_cluster(
                work, args.cluster_entities or args.entities, args.workers, args.cluster_shards
            )
        )
        arithmetic(local, cluster, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
