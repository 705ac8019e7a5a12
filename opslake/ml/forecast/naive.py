"""The benchmarks: seasonal naive (the value one season earlier) and persistence."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from opslake.ml.forecast.common import LEVELS, Forecast, as_panel, check_history


def seasonal_naive(
    history: np.ndarray, horizon: int, season: int, levels: tuple[float, ...] = LEVELS
) -> Forecast:
    """Repeat the last season; intervals from quantiles of in-sample seasonal differences."""
    y = as_panel(history)
    check_history(y, season, 2)
    steps = np.arange(horizon)
    # The latest observed value of each phase, so a gap in the last season is not propagated.
    last = pd.DataFrame(y[:, -2 * season :].T).ffill().to_numpy().T[:, -season:]
    point = last[:, steps % season]
    diffs = y[:, season:] - y[:, :-season]
    seasons_ahead = np.sqrt(steps // season + 1)
    bounds = {}
    for level in levels:
        lo, hi = np.nanquantile(diffs, [(1 - level) / 2, (1 + level) / 2], axis=1)
        bounds[level] = (point + lo[:, None] * seasons_ahead, point + hi[:, None] * seasons_ahead)
    return Forecast(point, bounds)


def naive_forecast(
    history: np.ndarray, horizon: int, levels: tuple[float, ...] = LEVELS
) -> Forecast:
    """The last observed value; intervals from one-step changes, widened like a random walk.

    The fallback for series with under two days of history, where no daily profile exists.
    """
    y = as_panel(history)
    last = pd.DataFrame(y.T).ffill().to_numpy()[-1] if y.shape[1] else np.full(len(y), np.nan)
    point = np.repeat(last[:, None], horizon, axis=1)
    diffs = np.diff(y, axis=1)
    grow = np.sqrt(np.arange(1, horizon + 1))[None, :]
    bounds = {}
    for level in levels:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a series without two values
            lo, hi = (
                np.nanquantile(diffs, q, axis=1) if diffs.shape[1] else np.full(len(y), np.nan)
                for q in ((1 - level) / 2, (1 + level) / 2)
            )
        lo, hi = np.nan_to_num(lo)[:, None], np.nan_to_num(hi)[:, None]
        bounds[level] = (point + lo * grow, point + hi * grow)
    return Forecast(point, bounds)
