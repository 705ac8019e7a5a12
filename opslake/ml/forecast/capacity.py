"""When a series fills up: a robust linear trend, because the baseline's damped trend
deliberately forgets growth after a few days."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from opslake.errors import InputError
from opslake.ml.forecast.common import DAY_S, infer_step, season_length


@dataclass(frozen=True)
class Exhaustion:
    """When a series reaches its capacity: by the point forecast and at the earliest."""

    point: pd.Timestamp | None
    earliest: pd.Timestamp | None
    slope_per_day: float
    level: float


def capacity_exhaustion(
    ts: pd.DatetimeIndex | np.ndarray,
    values: np.ndarray,
    capacity: float,
    horizon: pd.Timedelta | str = "90D",
    level: float = 0.95,
) -> Exhaustion:
    """First time the forecast reaches ``capacity`` within ``horizon`` (None when it does not).

    The trend is Sen's slope over daily means (robust to spikes and to a daily cycle) and the
    forecast adds the median daily profile; ``earliest`` uses the upper confidence slope plus
    the upper ``level`` quantile of the residuals.
    """
    stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(ts)))
    series = pd.Series(np.asarray(values, dtype=float), index=stamps).dropna().sort_index()
    if len(series) < 3:
        raise InputError("capacity_exhaustion needs at least three observed values")
    step = infer_step(series.index)
    per_day = season_length(step)
    origin = series.index[0]
    days = (series.index - origin).total_seconds().to_numpy() / DAY_S
    bucket = pd.Series(series.to_numpy(), index=np.floor(days)).groupby(level=0).mean()
    if len(bucket) < 3:  # under three days: fall back to hourly means for the slope
        bucket = (
            pd.Series(series.to_numpy(), index=np.floor(days * 24) / 24).groupby(level=0).mean()
        )
    slope, slope_hi = _sen_slope(bucket.index.to_numpy(), bucket.to_numpy(), level)
    intercept = float(np.median(series.to_numpy() - slope * days))
    residual = series.to_numpy() - intercept - slope * days
    phase = ((series.index - series.index.normalize()).total_seconds().to_numpy() // step).astype(
        int
    )
    profile = np.zeros(per_day)
    if len(bucket) >= 2 and per_day > 1:
        profile_s = pd.Series(residual).groupby(phase).median()
        profile[profile_s.index.to_numpy() % per_day] = profile_s.to_numpy()
    noise_hi = float(np.quantile(residual - profile[phase % per_day], level))
    span = pd.Timedelta(horizon)
    grid_step = max(step, int(span.total_seconds() // 50_000))
    future = series.index[-1] + pd.to_timedelta(
        np.arange(1, int(span.total_seconds() // grid_step) + 1) * grid_step, unit="s"
    )
    f_days = (future - origin).total_seconds().to_numpy() / DAY_S
    f_phase = ((future - future.normalize()).total_seconds().to_numpy() // step).astype(int)
    seasonal = profile[f_phase % per_day]
    point = intercept + slope * f_days + seasonal
    anchor = intercept + slope * days[-1]
    upper = anchor + max(slope_hi, slope) * (f_days - days[-1]) + seasonal + max(noise_hi, 0.0)
    return Exhaustion(
        _first_at_or_above(future, point, capacity),
        _first_at_or_above(future, upper, capacity),
        slope,
        level,
    )


def _first_at_or_above(
    stamps: pd.DatetimeIndex, values: np.ndarray, capacity: float
) -> pd.Timestamp | None:
    hits = np.flatnonzero(values >= capacity)
    return stamps[hits[0]] if len(hits) else None


def _sen_slope(x: np.ndarray, y: np.ndarray, level: float) -> tuple[float, float]:
    """Sen's slope and its upper confidence bound at ``level`` (two-sided, Kendall variance)."""
    i, j = np.triu_indices(len(x), k=1)
    slopes = np.sort((y[j] - y[i]) / (x[j] - x[i]))
    n, pairs = len(x), len(slopes)
    z = NormalDist().inv_cdf((1 + level) / 2)
    half = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18) / 2
    upper_rank = min(pairs - 1, math.ceil((pairs + 2 * half) / 2))
    return float(np.median(slopes)), float(slopes[upper_rank])
