"""Benchmark: the read API under 50 concurrent clients against DuckDB itself, same run.

An estate (500 objects, one day at 1-minute resolution by default) goes through the pipeline
as far as the catalog's gold metrics and the serving warehouse, untimed (or ``--home`` /
``OPSLAKE_HOME`` names a lake that already has a warehouse). ``python -m opslake serve``
then runs in its own process on loopback, as in production (uvicorn, one worker, audit and
usage counting on), and an operations engineer gets an API key. From a second process, 50
clients (bare asyncio HTTP/1.1, one keep-alive connection each) ask for the same one-day,
one-metric query for ``--seconds`` (after a short warm-up):

    GET /v1/metrics/{id}/data?start=D&end=D+1&step=1h&by=business

(mostly answered from the API's answer cache, as a polled screen would be), then for as long
again with a start a few microseconds later on every request, so that each one is a new
statement for DuckDB (the worst case: no cache helps). The server's CPU time per request is
read from its process.

Printed: requests per second, p50/p90/p99/max latency and errors; beside them the same
statement (the one the API builds, ``opslake.api.statements.data_statement``, bound parameters)
run directly on the warehouse file with DuckDB, one at a time (with its CPU per statement,
against the server's per request) before and after the API (the ratio is to their mean: the
machine's load drifts) and from 50 threads, the ratios and the load average. No
assertions (the targets: p99 < 50 ms for the repeated query, and queries that are all new at
half DuckDB's one-at-a-time rate or more): figures go in the closing note. Run with ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

START = date(2026, 3, 2)
PASSWORD = "Correct-Horse-42-Battery"


def _settings(home: Path):
    from opslake.settings import Settings

    return Settings.from_env({"OPSLAKE_HOME": str(home)})


def prepare(home: Path, entities: int) -> float:
    """Simulate one day into ``home`` and build gold metrics and the warehouse; seconds."""
    from opslake.lake.landing import LandingZone
    from opslake.orchestration import runner
    from opslake.simulate import SimulationConfig, simulate

    settings = _settings(home)
    started = time.perf_counter()
    simulate(
        SimulationConfig(seed=7, entities=entities, days=1, start=START, step_seconds=60),
        LandingZone.from_settings(settings),
    )
    runner.materialize(
        settings,
        [START.isoformat()],
        ["+gold/metric_values/cloud_compute", "+gold/catalog_metrics"],
    )
    runner.refresh_serving(settings)
    return time.perf_counter() - started


def pick_query(home: Path) -> tuple[str, date]:
    """The business-level hourly metric with the most rows on the newest day, and that day."""
    import duckdb

    con = duckdb.connect(str(_settings(home).warehouse_path), read_only=True)
    try:
        metric, day = con.execute(
            "SELECT metric_id, max(dt) FROM metric_values WHERE scope = 'business' AND "
            "grain = '1h' GROUP BY metric_id ORDER BY count(*) DESC, metric_id LIMIT 1"
        ).fetchone()
    finally:
        con.close()
    return metric, date.fromisoformat(str(day))


def api_key(home: Path) -> str:
    """A key of an operations engineer (created once per lake) with room for the load."""
    from opslake.errors import OpsLakeError
    from opslake.security.identity import IdentityStore

    settings = _settings(home)
    store = IdentityStore.sealed(settings)
    try:
        store.add_user("bench", "ops_engineer", PASSWORD)
    except OpsLakeError:
        pass  # made by an earlier run on this lake
    return store.create_key("bench", ["metrics:read"], quota_per_day=10_000_000, expires_days=1)[1]


def duckdb_direct(home: Path, metric: str, day: date, repeats: int, threads: int) -> dict:
    """The API's statement on the warehouse file: one at a time, then from ``threads``."""
    import duckdb

    from opslake.api.data import data_statement

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    sql, params = data_statement(metric, "1h", "business", start, start + timedelta(days=1))
    con = duckdb.connect(str(_settings(home).warehouse_path), read_only=True)
    rows = con.cursor().sql(sql, params=params).to_arrow_table().num_rows
    single = []
    cpu = time.process_time()
    for _ in range(repeats):
        mark = time.perf_counter()
        con.cursor().sql(sql, params=params).to_arrow_table()
        single.append(time.perf_counter() - mark)
    cpu = time.process_time() - cpu
    lock, concurrent = threading.Lock(), []

    def worker() -> None:
        cursor = con.cursor()
        for _ in range(max(1, repeats // threads)):
            mark = time.perf_counter()
            cursor.sql(sql, params=params).to_arrow_table()
            with lock:
                concurrent.append(time.perf_counter() - mark)

    began = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - began
    con.close()
    # CPU time moves less than rates with other work on the machine: compare it too.
    return {
        "rows": rows,
        "single": _summary(single, sum(single)),
        "concurrent": _summary(concurrent, wall),
        "cpu_ms_per_statement": cpu * 1000 / repeats,
    }


def _summary(seconds: list[float], wall: float) -> dict:
    ordered = sorted(seconds)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0

    return {
        "n": len(ordered),
        "per_s": len(ordered) / wall if wall else 0.0,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": ordered[-1] * 1000 if ordered else 0.0,
        "mean_ms": statistics.fmean(ordered) * 1000 if ordered else 0.0,
    }


async def _load(url: str, key: str, clients: int, seconds: float, warmup: float) -> dict:
    """``clients`` keep-alive HTTP/1.1 connections asking ``url`` in a closed loop.

    A bare asyncio client (like wrk or hey) rather than httpx, whose per-request cost would
    take most of the second core from the server under test on a two-core machine.
    """
    parts = urlsplit(url)
    ask = (
        f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: application/json\r\n\r\n"
    )
    numbers = itertools.count()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    begin = loop.time()
    measure_from, stop_at = begin + warmup, begin + warmup + seconds

    async def client() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while (now := loop.time()) < stop_at:
                mark = time.perf_counter()
                try:
                    # "{n}" in the URL makes every request a different query (no cache hit).
                    writer.write(ask.replace("{n}", f"{next(numbers) % 1_000_000:06d}").encode())
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    length = next(
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    body = await reader.readexactly(length)
                    if status == 200 and not body.startswith(b'{"count":'):
                        status = -1
                except (OSError, asyncio.IncompleteReadError, StopIteration) as exc:
                    status = 0
                    errors.append(repr(exc)[:200])
                took = time.perf_counter() - mark
                if now >= measure_from:
                    latencies.append(took)
                    statuses[status] = statuses.get(status, 0) + 1
                if status == 0:
                    return
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    result = _summary(latencies, seconds)
    result.update(
        statuses={str(k): v for k, v in sorted(statuses.items())},
        errors=sum(v for k, v in statuses.items() if k != 200),
        samples=errors[:3],
    )
    return result


def _api_load(pid: int, url: str, key: str, args: argparse.Namespace) -> dict:
    """Run the load generator against ``url`` from a second process; its figures and the
    server's CPU time per request."""
    import psutil

    serving = psutil.Process(pid)
    cpu_before = sum(serving.cpu_times()[:2])
    loader = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.benchmarks.bench_api",
            "--role",
            "load",
            "--url",
            url,
            "--key",
            key,
            "--clients",
            str(args.clients),
            "--seconds",
            str(args.seconds),
            "--warmup",
            str(args.warmup),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    if loader.returncode:
        raise SystemExit(f"the load generator failed:\n{loader.stderr[-4000:]}")
    api = json.loads(loader.stdout.strip().splitlines()[-1])
    # Includes the warm-up's requests, so divided by all the requests the server answered.
    api["server_cpu_s"] = sum(serving.cpu_times()[:2]) - cpu_before
    api["server_cpu_ms_per_request"] = (
        api["server_cpu_s"] * 1000 / max(1, api["n"] * (1 + args.warmup / args.seconds))
    )
    return api


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"opslake serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"opslake serve did not answer on port {port} within {timeout:.0f} s")


def _has_warehouse(home: Path) -> bool:
    return _settings(home).warehouse_path.exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--home",
        type=Path,
        default=os.environ.get("OPSLAKE_HOME") or None,
        help="a lake to reuse if it has a warehouse (default: $OPSLAKE_HOME, "
        "else a fresh temporary one)",
    )
    parser.add_argument("--role", choices=["load"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "load":
        try:
            import uvloop
        except ImportError:  # plain asyncio works, only slower
            runner = asyncio.run
        else:
            runner = uvloop.run
        print(
            json.dumps(runner(_load(args.url, args.key, args.clients, args.seconds, args.warmup)))
        )
        return

    work = Path(tempfile.mkdtemp(prefix="opslake-bench-api-"))
    # The scratch estate is gigabytes: gone with the run (--home reuses a built one).
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    home = args.home if args.home and _has_warehouse(args.home) else work / "lake"
    prepared = None
    if not _has_warehouse(home):
        prepared = prepare(home, args.entities)
    metric, day = pick_query(home)
    key = api_key(home)
    # Other work on the machine moves every figure: the load average goes with them.
    load = [os.getloadavg()[0]]
    duck = duckdb_direct(home, metric, day, repeats=500, threads=args.clients)

    port = _free_port()
    env = {**os.environ, "OPSLAKE_HOME": str(home)}
    env.pop("OPSLAKE_STATE_DIR", None)
    log = open(work / "serve.log", "w")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(
        [sys.executable, "-m", "opslake", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        _wait_up(port, server)
        base = f"http://127.0.0.1:{port}/v1/metrics/{metric}/data"
        end = f"&end={day + timedelta(days=1)}T00:00:00Z&step=1h&by=business"
        api = _api_load(server.pid, f"{base}?start={day}T00:00:00Z{end}", key, args)
        # The same query with a start a few microseconds later each time: every request is
        # a new statement for DuckDB (23 buckets, not 24), the worst case for the API.
        fresh = _api_load(server.pid, f"{base}?start={day}T00:00:00.{{n}}Z{end}", key, args)
        load.append(os.getloadavg()[0])
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    # DuckDB again after the API, in the same conditions: the machine's load drifts over the
    # API's half minute, and the ratio compares against both DuckDB runs' mean.
    after = duckdb_direct(home, metric, day, repeats=500, threads=args.clients)
    load.append(os.getloadavg()[0])
    duck_rate = (duck["single"]["per_s"] + after["single"]["per_s"]) / 2

    print(
        f"estate: {home} ({'prepared in ' + format(prepared, '.0f') + ' s, untimed' if prepared else 'reused'}); "
        f"query: {metric} on {day}, step 1h, by business: {duck['rows']} rows"
    )
    print(
        f"{'contender':<44}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'errors':>8}"
    )
    for name, r, errors in (
        (f"API, {args.clients} clients, repeated query", api, api["errors"]),
        (f"API, {args.clients} clients, every query new", fresh, fresh["errors"]),
        ("duckdb direct, one at a time (before)", duck["single"], 0),
        ("duckdb direct, one at a time (after)", after["single"], 0),
        (f"duckdb direct, {args.clients} threads", duck["concurrent"], 0),
    ):
        print(
            f"{name:<44}{r['per_s']:>9,.0f}{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}"
            f"{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}{errors:>8}"
        )
    print(
        f"ratio API (repeated) / duckdb direct (one at a time): p50 "
        f"{api['p50_ms'] / duck['single']['p50_ms']:.1f}×, p99 "
        f"{api['p99_ms'] / duck['single']['p99_ms']:.1f}×; throughput API / duckdb "
        f"{args.clients} threads {api['per_s'] / max(duck['concurrent']['per_s'], 1e-9):.1f}×"
        f"; target API p99 < 50 ms: {'met' if api['p99_ms'] < 50 else 'NOT met'} "
        f"(every query new: {'met' if fresh['p99_ms'] < 50 else 'NOT met'})"
    )
    share = fresh["per_s"] / max(duck_rate, 1e-9)
    print(
        f"ratio API (every query new) / duckdb direct (one at a time, mean of before and "
        f"after: {duck_rate:,.0f}/s): throughput {share:.0%} (target at least 50 %: "
        f"{'met' if share >= 0.5 else 'NOT met'}), p50 "
        f"{fresh['p50_ms'] / duck['single']['p50_ms']:.0f}×; load average (1 min) "
        f"{load[0]:.2f} before, {load[1]:.2f} after the API, {load[2]:.2f} at the end"
    )
    for name, r in (("repeated", api), ("every query new", fresh)):
        print(
            f"API server CPU, {name}: {r['server_cpu_ms_per_request']:.2f} ms per request "
            f"(user + system, one process; {1000 / r['server_cpu_ms_per_request']:,.0f} "
            f"req/s per busy core); statuses {r['statuses']}"
            + (f"; e.g. {r['samples']}" if r["samples"] else "")
        )
    duck_cpu = (duck["cpu_ms_per_statement"] + after["cpu_ms_per_statement"]) / 2
    print(
        f"duckdb direct CPU, one at a time: {duck['cpu_ms_per_statement']:.2f} ms per statement "
        f"before, {after['cpu_ms_per_statement']:.2f} after (API server CPU per new query / "
        f"duckdb's mean: {fresh['server_cpu_ms_per_request'] / duck_cpu:.1f}×)"
    )
    print(
        json.dumps(
            {
                "metric": metric,
                "day": str(day),
                "clients": args.clients,
                "api": api,
                "api_every_query_new": fresh,
                "duckdb": duck,
                "duckdb_after": after,
                "prepare_s": prepared,
                "load_average": load,
            }
        )
    )


if __name__ == "__main__":
    main()
