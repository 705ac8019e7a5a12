"""Benchmark: ingest points per second per core, exposition text and remote write, vs DuckDB.

The same samples (``--series`` series × ``--steps`` timestamps) are rendered once as
Prometheus text exposition and as remote-write requests (snappy protobuf, ``--per-request``
samples each, encoded as Prometheus encodes them) in two shapes: as Prometheus sends them,
one sample per series entry (``1 sample/series``), and ``--per-request // --steps`` series
of ``--steps`` samples each (``N samples/series``). Measured in one run, in CPU seconds of
the process doing the work (so the figure is per core):

- ``text``: landing (durable write + manifest) and parsing into bronze rows, then the
  parser alone on the same scrapes (``parse only``: what landing adds is the difference);
- ``remote write, in process``: the same for the protobuf requests (``decode only``: the
  decoder alone);
- ``remote write over HTTP``: the requests POSTed to a real ``opslake serve`` (CPU of the
  server process only: decode, validate, land);
- ``duckdb``: DuckDB's ``read_csv`` of the same exposition text into typed columns.

Each in-process figure is the fastest of ``--repeat`` runs (the one least disturbed by other
work on the machine); HTTP is run once. Prints figures and ratios; asserts nothing. ``make bench`` runs it after the pipeline one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import psutil

from opslake.ingest.parsers import prometheus_text, remote_write
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.storage import Lake
from opslake.settings import Settings
from tests.integration.services import free_port, running
from tests.keys import bearer, ingest_key
from tests.unit.test_remote_write import _key, _label, _len, _uvarint, write_request

T0_MS = 1_772_409_600_000
#: Ingest rate each path should reach, points per second per core (issue 17).
TARGET = 1_000_000


def _labels(i: int) -> dict[str, str]:
    return {
        "__name__": f"node_metric_{i % 20}",
        "entity_id": f"vm-{i:05d}",
        "instance": f"10.0.{i // 250}.{i % 250}:9100",
        "job": "node",
    }


def render_text(series: int, steps: int) -> bytes:
    lines = []
    for step in range(steps):
        ts = T0_MS + step * 15_000
        for i in range(series):
            lab = _labels(i)
            name = lab.pop("__name__")
            body = ",".join(f'{k}="{v}"' for k, v in lab.items())
            lines.append(f"{name}{{{body}}} {_value(i, step)} {ts}")
    return ("\n".join(lines) + "\n").encode()


def _value(i: int, step: int) -> float:
    return (i * 7 + step) % 1000 / 10


def _prometheus_series(labels: dict[str, str], samples: list[tuple[float, int]]) -> bytes:
    """A TimeSeries as Prometheus (gogo protobuf) encodes it: fields in order, zeros left out."""
    body = b"".join(_len(1, _label(k, v)) for k, v in labels.items())
    for value, ts_ms in samples:
        sample = _key(1, 1) + struct.pack("<d", value) if value else b""
        body += _len(2, sample + (_key(2, 0) + _uvarint(ts_ms) if ts_ms else b""))
    return body


def render_remote_write(series: int, steps: int, per_request: int) -> list[bytes]:
    """Requests of ``per_request // steps`` series with all ``steps`` samples each."""
    per_series = max(1, per_request // steps)
    requests = []
    for start in range(0, series, per_series):
        encoded = [
            _prometheus_series(
                _labels(i), [(_value(i, s), T0_MS + s * 15_000) for s in range(steps)]
            )
            for i in range(start, min(series, start + per_series))
        ]
        requests.append(write_request(*encoded))
    return requests


def render_remote_write_as_sent(series: int, steps: int, per_request: int) -> list[bytes]:
    """Requests as Prometheus sends them: ``per_request`` samples, each its own series entry."""
    entries = [
        _prometheus_series(_labels(i), [(_value(i, s), T0_MS + s * 15_000)])
        for s in range(steps)
        for i in range(series)
    ]
    return [
        write_request(*entries[i : i + per_request]) for i in range(0, len(entries), per_request)
    ]


def _cpu() -> float:
    # All threads of the process, in nanoseconds (os.times counts 10 ms clock ticks).
    return time.process_time()


def best(runs: int, measure: Callable[[int], tuple[int, float]]) -> tuple[int, float]:
    """The run of ``measure(i)`` (points, CPU s) that took least CPU: the least disturbed
    by other work on the machine."""
    return min((measure(i) for i in range(runs)), key=lambda r: r[1])


def ingest_in_process(home: Path, payloads: list[bytes], fmt: str, parse) -> tuple[int, float]:
    zone = LandingZone(Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(home)})))
    started, points = _cpu(), 0
    for i, body in enumerate(payloads):
        batch = zone.write(
            "prometheus", body, fmt=fmt, batch_id=f"{fmt}-{i}", received_at=datetime.now(UTC)
        )
        result = parse(zone.read(batch), batch)
        points += result.table.num_rows
    return points, _cpu() - started


def parse_only(payloads: list[bytes], fmt: str, parse) -> tuple[int, float]:
    """The parser alone on the same bodies (no landing): what landing adds is the difference."""
    now = datetime.now(UTC)
    batches = [
        LandedBatch(
            source="prometheus",
            batch_id=f"{fmt}-{i}",
            dt=now.date().isoformat(),
            path="",
            sha256="",
            bytes=len(body),
            received_at=now.isoformat(),
            fmt=fmt,
            connector="bench",
        )
        for i, body in enumerate(payloads)
    ]
    started, points = _cpu(), 0
    for body, batch in zip(payloads, batches, strict=True):
        points += parse(body, batch).table.num_rows
    return points, _cpu() - started


def ingest_over_http(home: Path, requests: list[bytes], log: Path) -> tuple[int, float, float]:
    port = free_port()
    env = {**os.environ, "OPSLAKE_HOME": str(home)}
    key = ingest_key(Settings.from_env({"OPSLAKE_HOME": str(home)}))
    with running(
        [sys.executable, "-m", "opslake", "serve", "--port", str(port)],
        f"http://127.0.0.1:{port}/healthz",
        log,
        env=env,
    ) as proc:
        server = psutil.Process(proc.pid)
        cpu_before = sum(server.cpu_times()[:2])
        url = f"http://127.0.0.1:{port}/v1/ingest/prometheus/remote_write"
        headers = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
            **bearer(key),
        }
        started = time.perf_counter()
        with httpx.Client(timeout=60) as client, ThreadPoolExecutor(4) as pool:
            codes = list(
                pool.map(
                    lambda b: client.post(url, content=b, headers=headers).status_code, requests
                )
            )
        wall = time.perf_counter() - started
        cpu = sum(server.cpu_times()[:2]) - cpu_before
    assert set(codes) == {204}, set(codes)
    zone = LandingZone(Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(home)})))
    points = sum(
        remote_write.parse(zone.read(b), b).table.num_rows
        for d in zone.days("prometheus")
        for b in zone.batches("prometheus", d)
    )
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
    parser.add_argument(
        "--repeat", type=int, default=3, help="in-process runs of each path; the fastest is printed"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="opslake-bench-ingest-"))
    try:
        text = render_text(args.series, args.steps)
        (work / "samples.prom").write_bytes(text)
        shapes = {
            "1 sample/series": render_remote_write_as_sent(
                args.series, args.steps, args.per_request
            ),
            f"{args.steps} samples/series": render_remote_write(
                args.series, args.steps, args.per_request
            ),
        }
        total = args.series * args.steps
        print(
            f"{total:,} samples: {len(text) / 2**20:.0f} MiB of text; remote write "
            + "; ".join(
                f"{shape}: {len(reqs)} requests, {sum(map(len, reqs)) / 2**20:.1f} MiB snappy"
                for shape, reqs in shapes.items()
            )
        )
        # Text arrives as scrapes: one batch per timestamp, like one scrape of every target.
        per_scrape = [text[i:j] for i, j in _scrape_bounds(text, args.steps)]
        duck_name = "duckdb read_csv of the same text (1 thread)"
        runs = args.repeat
        rows = {
            "text: land + parse (in process)": best(
                runs,
                lambda i: ingest_in_process(
                    work / f"text{i}", per_scrape, "prom", prometheus_text.parse
                ),
            ),
            "text: parse only": best(
                runs, lambda _: parse_only(per_scrape, "prom", prometheus_text.parse)
            ),
            duck_name: best(runs, lambda _: duckdb_text(work / "samples.prom")),
        }
        walls = {}
        for n, (shape, reqs) in enumerate(shapes.items()):
            rows[f"remote write, {shape}: land + decode"] = best(
                runs,
                lambda i, n=n, reqs=reqs: ingest_in_process(
                    work / f"rw{n}-{i}", reqs, "pb", remote_write.parse
                ),
            )
            rows[f"remote write, {shape}: decode only"] = best(
                runs, lambda _, reqs=reqs: parse_only(reqs, "pb", remote_write.parse)
            )
            points, cpu, walls[shape] = ingest_over_http(
                work / f"http{n}", reqs, work / f"serve{n}.log"
            )
            rows[f"remote write, {shape}: over HTTP (server CPU)"] = (points, cpu)
        width = max(map(len, rows)) + 2
        print(
            f"{'path':<{width}}{'points':>10}{'CPU s':>8}{'points/s/core':>16}{'duckdb ÷ this':>15}"
        )
        duck_rate = rows[duck_name][0] / rows[duck_name][1]
        for name, (points, cpu) in rows.items():
            print(
                f"{name:<{width}}{points:>10,}{cpu:>8.2f}{points / cpu:>16,.0f}"
                f"{duck_rate / (points / cpu):>14.2f}×"
            )
        met = [
            name
            for name, (points, cpu) in rows.items()
            if name.startswith("remote write") and points / cpu >= TARGET
        ]
        print(f"target {TARGET:,.0f} points/s/core met by: {', '.join(met) or 'none'}")
        for kind, n in (
            ("text", len(per_scrape)),
            *((f"remote write, {shape}", len(reqs)) for shape, reqs in shapes.items()),
        ):
            whole = rows[
                f"{kind}: land + parse (in process)" if kind == "text" else f"{kind}: land + decode"
            ][1]
            alone = rows[f"{kind}: parse only" if kind == "text" else f"{kind}: decode only"][1]
            print(
                f"{kind}: landing (durable write + manifest, read back) adds "
                f"{(whole - alone) / n * 1e3:.2f} ms of CPU per batch"
            )
        for shape, wall in walls.items():
            print(
                f"remote write over HTTP, {shape}: {total / wall:,.0f} points/s wall "
                "(4 client threads, one uvicorn worker)"
            )
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
