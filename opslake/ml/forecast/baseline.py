"""The statistical baseline: robust damped Holt-Winters over a parameter grid, every series at once.

Additive Holt-Winters with a damped trend (ETS(A,Ad,A) in error-correction form) is run for a
small grid of smoothing parameters over every series at once; each series keeps the parameters
whose forecasts were best on the last stretch of its own history, and its intervals are
empirical quantiles of its in-sample errors at each step ahead, so they need no Gaussian
assumption.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from opslake.ml.forecast.common import LEVELS, Forecast, as_panel, check_history, stack_rows

# Smoothing grid of the baseline: level, trend (as a share of the level weight) and season.
# Small alphas with large gammas behave like seasonal naive, large alphas like persistence,
# so selection can fall back to either when the smoother forms do not help.
_ALPHAS = (0.02, 0.1, 0.3, 0.6)
_BETA_SHARES = (0.0, 0.05)
_GAMMAS = (0.05, 0.2, 0.5, 0.9)
_GRID = np.array([(a, a * b, g) for a in _ALPHAS for b in _BETA_SHARES for g in _GAMMAS])
_PHI = 0.98
# Errors beyond this many running scales are clipped before they update the state, so a
# spike or an outage moves the level by a bounded amount (robust Holt-Winters).
_HUBER_C = 3.0
_SCALE_WEIGHT = 0.02
# Origins used for in-sample errors: parameter selection and the interval quantiles.
_SELECT_ORIGINS = 24
_INTERVAL_ORIGINS = 96
# A step's interval needs this many in-sample errors; a quantile of one or two errors is
# that error, and the interval collapses onto one side of the point.
_MIN_ERRORS = 10
# Series per batch: the grid's in-sample forecasts [series × grid, origins, horizon] are held
# at once, so a week-long hourly horizon over a whole estate would need gigabytes unbatched.
_BATCH_ELEMENTS = 8_000_000


@dataclass(frozen=True)
class _States:
    """Holt-Winters states after each time step, ``[batch, time]`` each."""

    level: np.ndarray
    trend: np.ndarray
    season_value: np.ndarray  # the seasonal term updated at each time (for that time's phase)
    season: int


def _holt_winters(
    y: np.ndarray, season: int, alpha: np.ndarray, beta: np.ndarray, gamma: np.ndarray
) -> _States:
    """Run robust additive damped Holt-Winters over ``y`` [batch, time]."""
    batch, n = y.shape
    first, second = y[:, :season], y[:, season : 2 * season]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series stay NaN
        fallback = np.nanmean(y, axis=1)
        level = np.where(np.isnan(m1 := np.nanmean(first, axis=1)), fallback, m1)
        m2 = np.nanmean(second, axis=1)
        trend = np.where(np.isnan(m2), 0.0, (m2 - level) / season)
        ring = np.nan_to_num(first - level[:, None])
        scale = np.nanstd(np.diff(y[:, : 2 * season], axis=1), axis=1)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    out_level = np.empty((batch, n))
    out_trend = np.empty((batch, n))
    out_season = np.empty((batch, n))
    for t in range(n):
        phase = t % season
        prior = ring[:, phase]
        err = y[:, t] - (level + _PHI * trend + prior)
        err = np.where(np.isnan(err), 0.0, err)
        limit = _HUBER_C * scale
        clipped = np.clip(err, -limit, limit)
        scale = np.sqrt((1 - _SCALE_WEIGHT) * scale**2 + _SCALE_WEIGHT * clipped**2)
        level = level + _PHI * trend + alpha * clipped
        trend = _PHI * trend + beta * clipped
        ring[:, phase] = prior + gamma * clipped
        out_level[:, t], out_trend[:, t], out_season[:, t] = level, trend, ring[:, phase]
    return _States(out_level, out_trend, out_season, season)


def _from_origins(states: _States, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Forecasts ``[batch, origins, horizon]`` made with the state at each origin."""
    k = np.arange(1, horizon + 1)
    damp = np.cumsum(_PHI**k)
    m = states.season
    # The seasonal term for time t+k is the one last updated at the same phase, at or before t.
    seasonal_at = origins[:, None] + k[None, :] - m * np.ceil(k / m).astype(int)[None, :]
    return (
        states.level[:, origins, None]
        + damp * states.trend[:, origins, None]
        + states.season_value[:, seasonal_at]
    )


def _errors(y: np.ndarray, states: _States, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Actual minus forecast ``[batch, origins, horizon]``; NaN beyond the history."""
    fc = _from_origins(states, origins, horizon)
    target = origins[:, None] + np.arange(1, horizon + 1)[None, :]
    inside = target < y.shape[1]
    actual = np.full(fc.shape, np.nan)
    actual[:, inside] = y[:, target[inside]]
    return actual - fc


def _origins(start: int, stop: int, count: int) -> np.ndarray:
    """Up to ``count`` evenly spread origins in ``[start, stop)``."""
    if stop <= start:
        return np.array([], dtype=int)
    return np.unique(np.linspace(start, stop - 1, min(count, stop - start)).astype(int))


def _fit_baseline(y: np.ndarray, season: int, horizon: int) -> tuple[_States, np.ndarray]:
    """Run the parameter grid over every series; the states of the best, and its score."""
    grid = _GRID
    n_series, n = y.shape
    size = len(grid)
    stacked = np.repeat(y, size, axis=0)
    params = np.tile(grid, (n_series, 1))
    states = _holt_winters(stacked, season, params[:, 0], params[:, 1], params[:, 2])
    # Validate on forecasts whose targets fall in the last stretch of the history, after the
    # two seasons the initial state is built from.
    stretch = max(horizon, 2 * season)
    origins = _origins(max(2 * season, n - stretch - horizon), n - 1, _SELECT_ORIGINS)
    score = np.full((n_series, size), np.inf)
    if len(origins):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series score NaN
            mae = np.nanmean(np.abs(_errors(stacked, states, origins, horizon)), axis=(1, 2))
        score = np.where(np.isnan(mae), np.inf, mae).reshape(n_series, size)
    pick = np.arange(n_series) * size + np.argmin(score, axis=1)
    chosen = _States(states.level[pick], states.trend[pick], states.season_value[pick], season)
    return chosen, np.min(score, axis=1)


def _predict(y: np.ndarray, states: _States, horizon: int, levels: tuple[float, ...]) -> Forecast:
    """Point forecast from the last state and bounds from in-sample errors at each step."""
    n = y.shape[1]
    point = _from_origins(states, np.array([n - 1]), horizon)[:, 0, :]
    errors = _errors(y, states, _origins(2 * states.season, n - 1, _INTERVAL_ORIGINS), horizon)
    ordered = np.sort(errors, axis=1)  # NaN sorts last
    count = np.sum(~np.isnan(errors), axis=1, keepdims=True)
    bounds = {}
    for level in levels:
        lo, hi = (
            _extend_steps(_sorted_quantile(ordered, count, q), count[:, 0, :])
            for q in ((1 - level) / 2, (1 + level) / 2)
        )
        bounds[level] = (point + lo, point + hi)
    return Forecast(point, bounds)


def _extend_steps(quantile: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Quantiles for steps few in-sample forecasts reached, from the last step enough did.

    A horizon longer than the history leaves the far steps with few or no errors; they take
    the nearest earlier step's quantile grown like a random walk (by the root of the step
    ratio) instead of a degenerate interval. A series short of enough errors at every step
    keeps what it has.
    """
    enough = count >= _MIN_ERRORS
    have = np.where(enough.any(axis=1, keepdims=True), enough, count > 0)
    if have.all():
        return quantile
    steps = np.arange(1, quantile.shape[1] + 1)
    nearest = np.maximum.accumulate(np.where(have, steps[None, :] - 1, -1), axis=1)
    known = np.take_along_axis(quantile, np.maximum(nearest, 0), axis=1)
    grown = known * np.sqrt(steps[None, :] / (np.maximum(nearest, 0) + 1))
    return np.where(have, quantile, np.where(nearest >= 0, grown, 0.0))


def _sorted_quantile(ordered: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated quantile along axis 1 of NaN-last sorted data; 0 when none valid.

    np.nanquantile falls back to a Python loop per series and step when any NaN is present.
    """
    pos = q * np.maximum(count - 1, 0)
    below = np.floor(pos).astype(int)
    above = np.minimum(below + 1, np.maximum(count - 1, 0))
    low = np.take_along_axis(ordered, below, axis=1)
    high = np.take_along_axis(ordered, above, axis=1)
    value = (low + (pos - below) * (high - low))[:, 0, :]
    return np.where(count[:, 0, :] > 0, value, 0.0)


def baseline_forecast(
    history: np.ndarray,
    horizon: int,
    season: int,
    levels: tuple[float, ...] = LEVELS,
    weekly_season: int | None = None,
) -> Forecast:
    """Robust damped Holt-Winters for every series at once, with empirical intervals.

    ``season`` is in samples (a day); with ``weekly_season`` and at least three weeks of
    history a weekly profile is fitted too and kept for the series where it validates better.
    """
    y = as_panel(history)
    check_history(y, season, 3)
    rows = max(1, _BATCH_ELEMENTS // (len(_GRID) * _SELECT_ORIGINS * horizon))
    if y.shape[0] > rows:  # series are independent: batches give the same numbers
        return stack_rows(
            [
                baseline_forecast(y[i : i + rows], horizon, season, levels, weekly_season)
                for i in range(0, y.shape[0], rows)
            ],
            levels,
        )
    states, score = _fit_baseline(y, season, horizon)
    daily = _predict(y, states, horizon, levels)
    if not weekly_season or y.shape[1] < 3 * weekly_season:
        return Forecast(daily.point, daily.bounds, score)
    weekly_states, weekly_score = _fit_baseline(y, weekly_season, horizon)
    weekly = _predict(y, weekly_states, horizon, levels)
    use = (weekly_score < score)[:, None]
    return Forecast(
        np.where(use, weekly.point, daily.point),
        {
            lv: (
                np.where(use, weekly.bounds[lv][0], daily.bounds[lv][0]),
                np.where(use, weekly.bounds[lv][1], daily.bounds[lv][1]),
            )
            for lv in levels
        },
        np.where(use[:, 0], weekly_score, score),
    )
