"""Benchmark: anomaly scoring throughput and training time, against baselines in the same run.

A day of one-minute samples for ``--entities`` series (2,000 by default: daily cycle, noise,
a few level shifts) is generated in memory. Measured, on one core (threads pinned to 1):

- ``detector (matrix)``: the production single-metric detector scoring all series at once
  (``opslake.ml.detect.score_matrix``), after a day of warm-up so the seasonal part is on;
- ``detector (per series)``: the same detector called series by series — the loop the
  matrix form avoids;
- ``rolling z-score``: a pandas rolling-window z-score over the same matrix, the cheapest
  detector an engineer would write, as a floor;
- training per 1,000 series: the detector's warm-up over one day (its state is its model),
  the multi-metric isolation forest (opslake.ml.multivariate.fit) on the entities' metric
  vectors, and the statistical forecast baseline (opslake.ml.forecast, 14 days hourly, 7
  days ahead) beside seasonal naive.

Prints points per second per core and the ratios. No assertions: figures go in the closing
note. Run with ``make bench`` or ``python -m tests.benchmarks.bench_ml --entities 2000``.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

STEP_S = 60
DAY = 1440


def _day(n: int, day: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` series × one day: a daily cycle, noise and a level shift in a tenth of them."""
    t0 = np.datetime64("2026-11-01T00:00:00") + np.timedelta64(day * 86_400, "s")
    stamps = t0 + np.arange(DAY) * np.timedelta64(STEP_S, "s")
    phase = np.arange(DAY) / DAY * 2 * np.pi
    base = rng.uniform(10, 100, (n, 1))
    values = base * (1 + 0.3 * np.sin(phase)[None, :]) + rng.normal(0, 1, (n, DAY)) * base * 0.05
    shifted = rng.random(n) < 0.1
    values[shifted, DAY // 2 :] += base[shifted] * 0.5
    return stamps, values


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=2000)
    args = parser.parse_args()
    import pandas as pd

    from opslake.ml.detect import DetectorState, score_matrix, score_series

    rng = np.random.default_rng(7)
    n = args.entities
    warm_ts, warm = _day(n, 0, rng)
    ts, values = _day(n, 1, rng)
    points = values.size

    state = DetectorState.new(n, STEP_S)
    warmup_s = _timed(lambda: score_matrix(state, warm_ts, warm))
    matrix_s = _timed(lambda: score_matrix(state, ts, values))

    sample = min(n, 200)  # the per-series loop is slow; time a slice and scale
    both = np.concatenate([warm, values], axis=1)
    both_ts = np.concatenate([warm_ts, ts])
    loop_s = _timed(lambda: [score_series(both_ts, both[i]) for i in range(sample)])
    loop_s = loop_s * n / sample / 2  # two days were scored per series; count one

    def rolling() -> None:
        frame = pd.DataFrame(both.T)
        mean = frame.rolling(60, min_periods=10).mean().shift(1)
        std = frame.rolling(60, min_periods=10).std().shift(1)
        ((frame - mean) / std).abs().to_numpy()

    rolling_s = _timed(rolling) / 2

    print(f"anomaly scoring: {n} series x {DAY} one-minute points ({points:,} points), 1 core")
    rows = [
        ("detector (matrix)", matrix_s),
        ("detector (per series)", loop_s),
        ("rolling z-score (pandas)", rolling_s),
    ]
    for name, secs in rows:
        print(
            f"  {name:28s} {secs:8.2f} s  {points / secs:14,.0f} points/s/core  "
            f"ratio to matrix {secs / matrix_s:6.2f}"
        )
    print("training per 1,000 series (one day of history):")
    print(f"  detector warm-up (its state is the model)  {warmup_s * 1000 / n:8.2f} s")
    try:
        import polars as pl

        from opslake.ml import multivariate

        k = min(n, 1000)
        metrics = 4
        ents = k // metrics
        long = pl.DataFrame(
            {
                "ts": np.tile(warm_ts.astype("datetime64[us]"), ents * metrics),
                "entity_id": np.repeat([f"e{i}" for i in range(ents)], metrics * DAY),
                "metric": np.tile(np.repeat([f"m{j}" for j in range(metrics)], DAY), ents),
                "value": warm[: ents * metrics].reshape(-1),
            }
        ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
        types = {f"e{i}": "vm" for i in range(ents)}  # entities of one type share a model
        fit_s = _timed(lambda: multivariate.fit(long, entity_types=types))
        print(
            f"  multi-metric isolation forest               {fit_s * 1000 / (ents * metrics):8.2f} s"
            f"  ({ents} entities x {metrics} metrics)"
        )
    except ImportError as exc:
        print(f"  multi-metric isolation forest: not available ({exc})")
    from opslake.ml.forecast.baseline import baseline_forecast
    from opslake.ml.forecast.naive import seasonal_naive

    hourly = rng.uniform(10, 100, (1000, 1)) * (
        1 + 0.3 * np.sin(np.arange(14 * 24) / 24 * 2 * np.pi)
    )[None, :] + rng.normal(0, 1, (1000, 14 * 24))
    fit_s = _timed(lambda: baseline_forecast(hourly, 168, 24))
    naive_s = _timed(lambda: seasonal_naive(hourly, 168, 24))
    print(
        f"  forecast baseline (14 days hourly, 7 days ahead) {fit_s:8.2f} s"
        f"  (seasonal naive: {naive_s:.3f} s, ratio {fit_s / max(naive_s, 1e-9):.0f})"
    )


if __name__ == "__main__":
    main()
