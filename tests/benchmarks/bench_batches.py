"""Benchmark: what a batch costs landing and bronze, live-sized against large, same samples.

Prometheus remote write sends ``queue_config.max_samples_per_send`` samples a request (2,000
by default), and each request lands as a batch of its own: one landing object and manifest
row, then one bronze Parquet file. The simulator (and so ``bench_pipeline`` and
``bench_scale``) lands hourly files of hundreds of thousands of samples instead. This lands
the same ``--series`` × ``--steps`` samples both ways, as Prometheus sends them
(``--per-request`` samples, one sample per series entry) and in ``--large`` batches, each in
a fresh lake, and times each part in this process: the durable landing writes, then
``landing/prometheus`` and ``bronze/prometheus_samples`` through Dagster (the first
materialization of the process pays Dagster's imports, so a warm-up run comes first).

Prints wall and CPU seconds (all threads) of each, what each batch adds, and what that would
come to for a province's 5.8 billion samples a day sent as 2,000-sample requests. No
assertions; run ``python -m tests.benchmarks.bench_batches``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.settings import Settings
from tests.benchmarks.bench_ingest import render_remote_write_as_sent
from tests.benchmarks.bench_scale import PROVINCE_SAMPLES

DAY = "2026-03-02"
RECEIVED = datetime(2026, 3, 2, 12, tzinfo=UTC)


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall s, CPU s of every thread of this process) of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def run(home: Path, requests: list[bytes]) -> tuple[dict[str, tuple[float, float]], int]:
    """Land ``requests`` as batches in a fresh lake at ``home``, then landing and bronze:
    (wall s, CPU s) of each part, and the bronze rows."""
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})
    zone = LandingZone.from_settings(settings)

    def land() -> None:
        for i, body in enumerate(requests):
            zone.write(
                "prometheus", body, fmt="pb", batch_id=f"rw-{i:07d}", received_at=RECEIVED, dt=DAY
            )

    parts = {
        "landing writes": timed(land),
        "landing/prometheus": timed(
            lambda: runner.materialize(settings, [DAY], ["landing/prometheus"])
        ),
        "bronze/prometheus_samples": timed(
            lambda: runner.materialize(settings, [DAY], ["bronze/prometheus_samples"])
        ),
    }
    lake = Lake.from_settings(settings)
    return parts, lake.read_table("bronze", "prometheus_samples", columns=["value"]).num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--per-request", type=int, default=2000)
    # A request holds at most remote_write.MAX_SERIES series entries (50,000).
    parser.add_argument("--large", type=int, default=50_000)
    args = parser.parse_args()
    samples = args.series * args.steps
    work = Path(tempfile.mkdtemp(prefix="opslake-bench-batches-"))
    try:
        shapes = {
            f"{args.per_request:,} samples a batch": render_remote_write_as_sent(
                args.series, args.steps, args.per_request
            ),
            f"{args.large:,} samples a batch": render_remote_write_as_sent(
                args.series, args.steps, args.large
            ),
        }
        # Dagster's imports and the first run's setup, outside the figures.
        run(work / "warm-up", render_remote_write_as_sent(100, 2, 200))
        results = {
            shape: run(work / str(n), reqs) for n, (shape, reqs) in enumerate(shapes.items())
        }
        rows = {shape: n for shape, (_, n) in results.items()}
        results = {shape: parts for shape, (parts, _) in results.items()}
        if set(rows.values()) != {samples}:
            raise SystemExit(f"bronze rows differ from the {samples:,} samples sent: {rows}")
        print(
            f"{samples:,} remote-write samples, landed and parsed to bronze two ways (bronze "
            f"rows: {', '.join(f'{n:,}' for n in rows.values())})"
        )
        print(f"{'batches':<28}{'part':<28}{'wall s':>8}{'CPU s':>8}{'samples/CPU s':>15}")
        for shape, parts in results.items():
            for part, (wall, cpu) in parts.items():
                print(f"{shape:<28}{part:<28}{wall:>8.2f}{cpu:>8.2f}{samples / cpu:>15,.0f}")
        (small, small_reqs), (large, large_reqs) = ((results[s], len(r)) for s, r in shapes.items())
        extra = {
            part: (small[part][1] - large[part][1]) / (small_reqs - large_reqs) for part in small
        }
        per_batch = sum(extra.values())
        print(
            "each batch adds, in CPU: "
            + ", ".join(f"{part} {ms * 1e3:.2f} ms" for part, ms in extra.items())
        )
        batches = PROVINCE_SAMPLES // args.per_request
        print(
            f"5.8 B samples a day as {args.per_request:,}-sample requests: {batches:,} batches, "
            f"{batches * per_batch / 3600:.1f} CPU-hours a day for the batches alone; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} (2 cores)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
