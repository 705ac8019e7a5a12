"""Benchmark: ingest points per second per core, exposition text and remote write, vs DuckDB.

The same samples (``--series`` series × ``--steps`` timestamps) are rendered once as
Prometheus text exposition and once as remote-write requests (snappy protobuf,
``--per-request`` samples each, as Prometheus sends them). Measured in one run, in CPU
seconds of the process doing the work (so the figure is per core):

- ``text``: landing (durable write + manifest) and parsing into bronze rows;
- ``remote write, in process``: the same for the protobuf requests;
- ``remote write over HTTP``: the requests POSTed to a real ``opslake serve`` (CPU of the
  server process only: decode, validate, land);
- ``duckdb``: DuckDB's ``read_csv`` of the same exposition text into typed columns.

Prints figures and ratios; asserts nothing. ``make bench`` runs it after the pipeline one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import psutil

from opslake.ingest.parsers import prometheus_text, remote_write
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.settings import Settings
from tests.integration.services import free_port, running
from tests.keys import bearer, ingest_key
from tests.unit.test_remote_write import _series, write_request

T0_MS = 1_772_409_600_000


def _labels(i: int) -> dict[str, str]:
    return {"__name__": f"node_metric_{i % 20}", "entity_id": f"vm-{i:05d}",
            "instance": f"10.0.{i // 250}.{i % 250}:9100", "job": "node"}


def render_text(series: int, steps: int) -> bytes:
    lines = []
    for step in range(steps):
        ts = T0_MS + step * 15_000
        for i in range(series):
            lab = _labels(i)
            name = lab.pop("__name__")
            body = ",".join(f'{k}="{v}"' for k, v in lab.items())
            lines.append(f"{name}{{{body}}} {(i * 7 + step) % 1000 / 10} {ts}")
    return ("\n".join(lines) + "\n").encode()


def render_remote_write(series: int, steps: int, per_request: int) -> list[bytes]:
    per_series = max(1, per_request // steps)
    requests = []
    for start in range(0, series, per_series):
        encoded = [_series(_labels(i), [((i * 7 + s) % 1000 / 10, T0_MS + s * 15_000)
                                        for s in range(steps)])
                   for i in range(start, min(series, start + per_series))]
        requests.append(write_request(*encoded))
    return requests


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def ingest_in_process(home: Path, payloads: list[bytes], fmt: str, parse) -> tuple[int, float]:
    zone = LandingZone(Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(home)})))
    started, points = _cpu(), 0
    for i, body in enumerate(payloads):
        batch = zone.write("prometheus", body, fmt=fmt, batch_id=f"{fmt}-{i}",
                           received_at=datetime.now(UTC))
        result = parse(zone.read(batch), batch)
        points += result.table.num_rows
    return points, _cpu() - started


def ingest_over_http(home: Path, requests: list[bytes], log: Path) -> tuple[int, float, float]:
    port = free_port()
    env = {**os.environ, "OPSLAKE_HOME": str(home)}
    key = ingest_key(Settings.from_env({"OPSLAKE_HOME": str(home)}))
    with running([sys.executable, "-m", "opslake", "serve", "--port", str(port)],
                 f"http://127.0.0.1:{port}/healthz", log, env=env) as proc:
        server = psutil.Process(proc.pid)
        cpu_before = sum(server.cpu_times()[:2])
        url = f"http://127.0.0.1:{port}/v1/ingest/prometheus/remote_write"
        headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                   "X-Prometheus-Remote-Write-Version": "0.1.0", **bearer(key)}
        started = time.perf_counter()
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda b: client.post(url, content=b, headers=headers)
                                  .status_code, requests))
        wall = time.perf_counter() - started
        cpu = sum(server.cpu_times()[:2]) - cpu_before
    assert set(codes) == {204}, set(codes)
    zone = LandingZone(Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(home)})))
    points = sum(remote_write.parse(zone.read(b), b).table.num_rows
                 for d in zone.days("prometheus") for b in zone.batches("prometheus", d))
    return points, cpu, wall


def duckdb_text(path: Path) -> tuple[int, float]:
    con = duckdb.connect(config={"threads": 1})
    started = _cpu()
    # Aggregates over every derived column, so DuckDB cannot skip the parsing work.
    rows, _, _, _ = con.execute(f"""
        SELECT count(*), sum(length(metric)), sum(length(labels)), sum(value) FROM (
          SELECT regexp_extract(series, '^[a-zA-Z_:][a-zA-Z0-9_:]*') AS metric,
                 regexp_extract(series, '\\{{.*\\}}') AS labels,
                 TRY_CAST(value AS DOUBLE) AS value, make_timestamp(ts * 1000) AS ts
          FROM read_csv('{path}', delim=' ', header=false, quote='', escape='',
                        columns={{'series': 'VARCHAR', 'value': 'VARCHAR', 'ts': 'BIGINT'}}))
    """).fetchone()
    return int(rows), _cpu() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--per-request", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opslake-bench-ingest-"))
    try:
        text = render_text(args.series, args.steps)
        (work / "samples.prom").write_bytes(text)
        requests = render_remote_write(args.series, args.steps, args.per_request)
        total = args.series * args.steps
        print(f"{total:,} samples: {len(text) / 2**20:.0f} MiB of text; {len(requests)} "
              f"remote-write requests, {sum(map(len, requests)) / 2**20:.0f} MiB snappy")
        # Text arrives as scrapes: one batch per timestamp, like one scrape of every target.
        per_scrape = [text[i:j] for i, j in _scrape_bounds(text, args.steps)]
        rows = {
            "text: land + parse (in process)": ingest_in_process(
                work / "text", per_scrape, "prom", prometheus_text.parse),
            "remote write: land + decode (in process)": ingest_in_process(
                work / "rw", requests, "pb", remote_write.parse),
            "duckdb read_csv of the same text (1 thread)": duckdb_text(work / "samples.prom"),
        }
        http_points, http_cpu, http_wall = ingest_over_http(work / "http", requests,
                                                            work / "serve.log")
        rows["remote write over HTTP (server CPU)"] = (http_points, http_cpu)
        print(f"{'path':<46}{'points':>12}{'CPU s':>8}{'points/s/core':>16}")
        for name, (points, cpu) in rows.items():
            print(f"{name:<46}{points:>12,}{cpu:>8.2f}{points / cpu:>16,.0f}")
        duck = rows["duckdb read_csv of the same text (1 thread)"]
        duck_rate = duck[0] / duck[1]
        for name in ("text: land + parse (in process)", "remote write: land + decode (in process)",
                     "remote write over HTTP (server CPU)"):
            points, cpu = rows[name]
            print(f"ratio duckdb / {name.split(':')[0].split(' (')[0]}: "
                  f"{duck_rate / (points / cpu):.2f}×")
        print(f"remote write over HTTP: {http_points / http_wall:,.0f} points/s wall "
              "(4 client threads, one uvicorn worker)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _scrape_bounds(text: bytes, steps: int) -> list[tuple[int, int]]:
    lines_per = text.count(b"\n") // steps
    bounds, start = [], 0
    for _ in range(steps):
        end = start
        for _ in range(lines_per):
            end = text.index(b"\n", end) + 1
        bounds.append((start, end))
        start = end
    return bounds


if __name__ == "__main__":
    main()
