"""Forecasts with intervals: a vectorised statistical baseline, Prophet, and seasonal naive.

Series live on a regular grid as a 2-D array ``[series, time]`` with NaN for gaps. The
baseline is additive Holt-Winters with a damped trend (ETS(A,Ad,A) in error-correction form)
run for a small grid of smoothing parameters over every series at once; each series keeps the
parameters whose forecasts were best on the last stretch of its own history, and its intervals
are empirical quantiles of its in-sample errors at each step ahead, so they need no Gaussian
assumption. Prophet is the slower, per-series model for metrics flagged for capacity
planning. Seasonal naive (the value one day earlier) is the benchmark every method must beat;
MASE is scaled by its in-sample error with the daily season.

:func:`capacity_exhaustion` answers "when does this fill up" with a robust linear trend,
because the damped trend of the baseline deliberately forgets growth after a few days.

:func:`daily_forecasts` and :func:`capacity_frame` are what the daily ``gold/forecasts`` and
``gold/capacity`` assets write: the baseline for every series (seasonal naive, then persistence,
when the history is too short for it), Prophet in addition for the series of the metrics that
the catalog tags ``capacity_planning`` (:func:`capacity_metrics`).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from opslake.errors import ConfigError, InputError

if TYPE_CHECKING:
    from opslake.metrics_catalog.definition import MetricDefinition
    from opslake.metrics_catalog.loader import MetricSet

DAY_S = 86_400
WEEK_S = 7 * DAY_S
#: Interval levels every forecaster returns unless asked otherwise.
LEVELS = (0.8, 0.95)

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
class Forecast:
    """Point forecasts ``[series, horizon]`` and, per level, lower and upper bounds.

    ``score`` (baseline only) is each series' validation MAE of its chosen parameters.
    """

    point: np.ndarray
    bounds: dict[float, tuple[np.ndarray, np.ndarray]]
    score: np.ndarray | None = None


def infer_step(ts: pd.Series | pd.DatetimeIndex | np.ndarray) -> int:
    """The sampling step in seconds: the median gap between consecutive distinct timestamps."""
    # as_unit: pandas may parse to s, ms, us or ns, and asi8 counts in that unit.
    stamps = np.unique(pd.DatetimeIndex(pd.to_datetime(np.asarray(ts))).as_unit("s").asi8)
    if len(stamps) < 2:
        raise InputError("cannot infer a sampling step from fewer than two timestamps; "
                         "pass a longer history")
    return max(1, round(float(np.median(np.diff(stamps)))))


def season_length(step_s: int, period_s: int = DAY_S) -> int:
    """Samples per seasonal period (a day by default) at ``step_s``; at least 1."""
    return max(1, round(period_s / step_s))


def _as_panel(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"expected an array [series, time], got shape {arr.shape}")
    return arr


def _check_history(y: np.ndarray, season: int, minimum_seasons: int) -> None:
    if y.shape[1] < minimum_seasons * season:
        raise InputError(
            f"history of {y.shape[1]} samples is shorter than {minimum_seasons} seasons of "
            f"{season}; pass more history or a shorter season")


# -- seasonal naive --------------------------------------------------------------------------
def seasonal_naive(history: np.ndarray, horizon: int, season: int,
                   levels: tuple[float, ...] = LEVELS) -> Forecast:
    """Repeat the last season; intervals from quantiles of in-sample seasonal differences."""
    y = _as_panel(history)
    _check_history(y, season, 2)
    steps = np.arange(horizon)
    # The latest observed value of each phase, so a gap in the last season is not propagated.
    last = pd.DataFrame(y[:, -2 * season:].T).ffill().to_numpy().T[:, -season:]
    point = last[:, steps % season]
    diffs = y[:, season:] - y[:, :-season]
    seasons_ahead = np.sqrt(steps // season + 1)
    bounds = {}
    for level in levels:
        lo, hi = np.nanquantile(diffs, [(1 - level) / 2, (1 + level) / 2], axis=1)
        bounds[level] = (point + lo[:, None] * seasons_ahead, point + hi[:, None] * seasons_ahead)
    return Forecast(point, bounds)


# -- statistical baseline --------------------------------------------------------------------
@dataclass(frozen=True)
class _States:
    """Holt-Winters states after each time step, ``[batch, time]`` each."""

    level: np.ndarray
    trend: np.ndarray
    season_value: np.ndarray  # the seasonal term updated at each time (for that time's phase)
    season: int


def _holt_winters(y: np.ndarray, season: int, alpha: np.ndarray, beta: np.ndarray,
                  gamma: np.ndarray) -> _States:
    """Run robust additive damped Holt-Winters over ``y`` [batch, time]."""
    batch, n = y.shape
    first, second = y[:, :season], y[:, season:2 * season]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series stay NaN
        fallback = np.nanmean(y, axis=1)
        level = np.where(np.isnan(m1 := np.nanmean(first, axis=1)), fallback, m1)
        m2 = np.nanmean(second, axis=1)
        trend = np.where(np.isnan(m2), 0.0, (m2 - level) / season)
        ring = np.nan_to_num(first - level[:, None])
        scale = np.nanstd(np.diff(y[:, :2 * season], axis=1), axis=1)
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
    damp = np.cumsum(_PHI ** k)
    m = states.season
    # The seasonal term for time t+k is the one last updated at the same phase, at or before t.
    seasonal_at = origins[:, None] + k[None, :] - m * np.ceil(k / m).astype(int)[None, :]
    return (states.level[:, origins, None] + damp * states.trend[:, origins, None]
            + states.season_value[:, seasonal_at])


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


def _fit_baseline(y: np.ndarray, season: int,
                  horizon: int) -> tuple[_States, np.ndarray]:
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


def _predict(y: np.ndarray, states: _States, horizon: int,
             levels: tuple[float, ...]) -> Forecast:
    """Point forecast from the last state and bounds from in-sample errors at each step."""
    n = y.shape[1]
    point = _from_origins(states, np.array([n - 1]), horizon)[:, 0, :]
    errors = _errors(y, states, _origins(2 * states.season, n - 1, _INTERVAL_ORIGINS), horizon)
    ordered = np.sort(errors, axis=1)  # NaN sorts last
    count = np.sum(~np.isnan(errors), axis=1, keepdims=True)
    bounds = {}
    for level in levels:
        lo, hi = (_extend_steps(_sorted_quantile(ordered, count, q), count[:, 0, :])
                  for q in ((1 - level) / 2, (1 + level) / 2))
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


def baseline_forecast(history: np.ndarray, horizon: int, season: int,
                      levels: tuple[float, ...] = LEVELS,
                      weekly_season: int | None = None) -> Forecast:
    """Robust damped Holt-Winters for every series at once, with empirical intervals.

    ``season`` is in samples (a day); with ``weekly_season`` and at least three weeks of
    history a weekly profile is fitted too and kept for the series where it validates better.
    """
    y = _as_panel(history)
    _check_history(y, season, 3)
    rows = max(1, _BATCH_ELEMENTS // (len(_GRID) * _SELECT_ORIGINS * horizon))
    if y.shape[0] > rows:  # series are independent: batches give the same numbers
        return _stack_rows([baseline_forecast(y[i:i + rows], horizon, season, levels,
                                              weekly_season)
                            for i in range(0, y.shape[0], rows)], levels)
    states, score = _fit_baseline(y, season, horizon)
    daily = _predict(y, states, horizon, levels)
    if not weekly_season or y.shape[1] < 3 * weekly_season:
        return Forecast(daily.point, daily.bounds, score)
    weekly_states, weekly_score = _fit_baseline(y, weekly_season, horizon)
    weekly = _predict(y, weekly_states, horizon, levels)
    use = (weekly_score < score)[:, None]
    return Forecast(np.where(use, weekly.point, daily.point),
                    {lv: (np.where(use, weekly.bounds[lv][0], daily.bounds[lv][0]),
                          np.where(use, weekly.bounds[lv][1], daily.bounds[lv][1]))
                     for lv in levels},
                    np.where(use[:, 0], weekly_score, score))


def _stack_rows(parts: Sequence[Forecast], levels: tuple[float, ...]) -> Forecast:
    """Forecasts of consecutive groups of series as one."""
    scores = [p.score for p in parts]
    return Forecast(np.vstack([p.point for p in parts]),
                    {lv: (np.vstack([p.bounds[lv][0] for p in parts]),
                          np.vstack([p.bounds[lv][1] for p in parts])) for lv in levels},
                    None if any(s is None for s in scores) else np.concatenate(scores))


# -- persistence -----------------------------------------------------------------------------
def naive_forecast(history: np.ndarray, horizon: int,
                   levels: tuple[float, ...] = LEVELS) -> Forecast:
    """The last observed value; intervals from one-step changes, widened like a random walk.

    The fallback for series with under two days of history, where no daily profile exists.
    """
    y = _as_panel(history)
    last = pd.DataFrame(y.T).ffill().to_numpy()[-1] if y.shape[1] else np.full(len(y), np.nan)
    point = np.repeat(last[:, None], horizon, axis=1)
    diffs = np.diff(y, axis=1)
    grow = np.sqrt(np.arange(1, horizon + 1))[None, :]
    bounds = {}
    for level in levels:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a series without two values
            lo, hi = (np.nanquantile(diffs, q, axis=1) if diffs.shape[1]
                      else np.full(len(y), np.nan) for q in ((1 - level) / 2, (1 + level) / 2))
        lo, hi = np.nan_to_num(lo)[:, None], np.nan_to_num(hi)[:, None]
        bounds[level] = (point + lo * grow, point + hi * grow)
    return Forecast(point, bounds)


# -- Prophet ---------------------------------------------------------------------------------
def _import_prophet() -> type:
    """Prophet's class, with its and cmdstanpy's progress chatter kept out of the logs."""
    # prophet.plot reports the missing plotly while being imported, so this comes first.
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    stan = logging.getLogger("cmdstanpy")
    # cmdstanpy installs an INFO handler (and lowers the level) on first use unless the
    # logger already has a handler.
    if not stan.handlers:
        stan.addHandler(logging.NullHandler())
    stan.setLevel(logging.WARNING)
    from prophet import Prophet

    return Prophet


def prophet_forecast(ts: pd.DatetimeIndex | np.ndarray, history: np.ndarray, horizon: int,
                     levels: tuple[float, ...] = LEVELS, *, max_points: int = 2000,
                     max_days: int = 56, samples: int = 300, seed: int = 0,
                     timezone: str = "UTC") -> Forecast:
    """Prophet on one series (``ts`` on a regular grid) with daily and weekly seasonality.

    To keep a fit around a second, at most ``max_days`` of history are used and they are
    averaged into buckets (a divisor of the day) until at most ``max_points`` remain; the
    forecast is still made at the original step, with intervals widened by how much noisier
    the series is at that step than at the fitted one.
    """
    prophet_class = _import_prophet()
    stamps = pd.DatetimeIndex(pd.to_datetime(np.asarray(ts))).tz_localize(None)
    y = np.asarray(history, dtype=float).ravel()
    if len(stamps) != len(y):
        raise InputError(f"{len(stamps)} timestamps for {len(y)} values; pass one per value")
    step = infer_step(stamps)
    keep = stamps > stamps[-1] - pd.Timedelta(days=max_days)
    frame = pd.DataFrame({"ds": stamps[keep], "y": y[keep]}).dropna()
    if len(frame) < 2 * season_length(step) and len(frame) < 48:
        raise InputError(f"only {len(frame)} observed values; Prophet needs about two days")
    per_day = season_length(step)
    factor = next((d for d in range(1, per_day + 1)
                   if per_day % d == 0 and len(frame) / d <= max_points), per_day)
    coarse = frame
    if factor > 1:
        coarse = (frame.set_index("ds").resample(f"{step * factor}s").mean().dropna()
                  .reset_index())
    span_days = (frame["ds"].iloc[-1] - frame["ds"].iloc[0]).total_seconds() / DAY_S
    future = pd.DataFrame({"ds": stamps[-1] + pd.to_timedelta(step * np.arange(1, horizon + 1),
                                                              unit="s")})
    frame, coarse, future = (_with_day_type(f, timezone) for f in (frame, coarse, future))
    days = frame["ds"].dt.normalize().drop_duplicates()
    weekend_days = int(_with_day_type(pd.DataFrame({"ds": days}), timezone)["weekend"].sum())
    # Business load is lower and flatter at weekends: a level and a daily shape per day type
    # fit that even when there is too little history for a weekly seasonality; without the
    # level, the trend bends at every weekend and extrapolates the bend.
    split = span_days >= 2 and weekend_days >= 2 and len(days) - weekend_days >= 2
    model = prophet_class(daily_seasonality=span_days >= 2 and not split,
                          weekly_seasonality=span_days >= 14, yearly_seasonality=False,
                          uncertainty_samples=samples)
    if split:
        for name in ("weekday", "weekend"):
            model.add_seasonality(f"daily_{name}", period=1, fourier_order=4,
                                  condition_name=name)
        model.add_regressor("weekend_level", standardize=False)
    widen = 1.0
    # Prophet draws its uncertainty samples from NumPy's global generator: seed it (and put it
    # back afterwards) so the same history gives the same intervals, run after run.
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            # Prophet 1.5 still uses pandas idioms that pandas 3 deprecates; nothing to act on.
            warnings.filterwarnings("ignore", module="prophet")
            model.fit(coarse, seed=seed)
            point = model.predict(future)["yhat"].to_numpy()
            draws = model.predictive_samples(future)["yhat"]
            if factor > 1:
                fitted = model.predict(frame.tail(max_points))["yhat"].to_numpy()
                fine = np.abs(frame["y"].tail(max_points).to_numpy() - fitted)
                rough = np.abs(coarse["y"].to_numpy()
                               - model.predict(coarse)["yhat"].to_numpy())
                widen = max(1.0, float(np.median(fine) / max(np.median(rough), 1e-12)))
    finally:
        np.random.set_state(saved)
    spread = (draws - point[:, None]) * widen
    bounds = {}
    for level in levels:
        lo, hi = np.quantile(spread, [(1 - level) / 2, (1 + level) / 2], axis=1)
        bounds[level] = ((point + lo)[None, :], (point + hi)[None, :])
    return Forecast(point[None, :], bounds)


def _with_day_type(frame: pd.DataFrame, timezone: str) -> pd.DataFrame:
    """``frame`` with day-type columns in ``timezone``'s calendar: boolean conditions for
    Prophet's seasonalities and a numeric ``weekend_level`` for its regressor."""
    local = pd.DatetimeIndex(frame["ds"]).tz_localize("UTC").tz_convert(timezone)
    weekend = np.asarray(local.day_of_week >= 5)
    return frame.assign(weekend=weekend, weekday=~weekend, weekend_level=weekend.astype(float))


# -- metrics ---------------------------------------------------------------------------------
def naive_scale(history: np.ndarray, season: int) -> np.ndarray:
    """In-sample MAE of seasonal naive per series: the denominator of MASE (NaN when zero)."""
    y = _as_panel(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = np.nanmean(np.abs(y[:, season:] - y[:, :-season]), axis=1)
    return np.where(scale > 0, scale, np.nan)


def mase(actual: np.ndarray, predicted: np.ndarray, history: np.ndarray,
         season: int) -> np.ndarray:
    """Mean absolute scaled error per series, scaled by in-sample seasonal naive at ``season``."""
    return _nanmean_rows(np.abs(_as_panel(actual) - _as_panel(predicted))) / naive_scale(
        history, season)


def smape(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Symmetric MAPE per series in percent (0-200); a point where both are zero counts 0."""
    a, p = _as_panel(actual), _as_panel(predicted)
    denom = np.abs(a) + np.abs(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(denom > 0, 2 * np.abs(a - p) / denom, 0.0)
    return 100 * _nanmean_rows(np.where(np.isnan(a) | np.isnan(p), np.nan, ratio))


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Share of observed actuals inside ``[lower, upper]`` per series."""
    a = _as_panel(actual)
    inside = ((a >= _as_panel(lower)) & (a <= _as_panel(upper))).astype(float)
    return _nanmean_rows(np.where(np.isnan(a), np.nan, inside))


def interval_width(lower: np.ndarray, upper: np.ndarray, history: np.ndarray,
                   season: int) -> np.ndarray:
    """Mean interval width per series in units of the MASE scale, comparable across series."""
    return _nanmean_rows(_as_panel(upper) - _as_panel(lower)) / naive_scale(history, season)


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=1)


# -- capacity --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exhaustion:
    """When a series reaches its capacity: by the point forecast and at the earliest."""

    point: pd.Timestamp | None
    earliest: pd.Timestamp | None
    slope_per_day: float
    level: float


def capacity_exhaustion(ts: pd.DatetimeIndex | np.ndarray, values: np.ndarray,
                        capacity: float, horizon: pd.Timedelta | str = "90D",
                        level: float = 0.95) -> Exhaustion:
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
        bucket = pd.Series(series.to_numpy(), index=np.floor(days * 24) / 24).groupby(
            level=0).mean()
    slope, slope_hi = _sen_slope(bucket.index.to_numpy(), bucket.to_numpy(), level)
    intercept = float(np.median(series.to_numpy() - slope * days))
    residual = series.to_numpy() - intercept - slope * days
    phase = ((series.index - series.index.normalize()).total_seconds().to_numpy()
             // step).astype(int)
    profile = np.zeros(per_day)
    if len(bucket) >= 2 and per_day > 1:
        profile_s = pd.Series(residual).groupby(phase).median()
        profile[profile_s.index.to_numpy() % per_day] = profile_s.to_numpy()
    noise_hi = float(np.quantile(residual - profile[phase % per_day], level))
    span = pd.Timedelta(horizon)
    grid_step = max(step, int(span.total_seconds() // 50_000))
    future = series.index[-1] + pd.to_timedelta(
        np.arange(1, int(span.total_seconds() // grid_step) + 1) * grid_step, unit="s")
    f_days = (future - origin).total_seconds().to_numpy() / DAY_S
    f_phase = ((future - future.normalize()).total_seconds().to_numpy() // step).astype(int)
    seasonal = profile[f_phase % per_day]
    point = intercept + slope * f_days + seasonal
    anchor = intercept + slope * days[-1]
    upper = anchor + max(slope_hi, slope) * (f_days - days[-1]) + seasonal + max(noise_hi, 0.0)
    return Exhaustion(_first_at_or_above(future, point, capacity),
                      _first_at_or_above(future, upper, capacity), slope, level)


def _first_at_or_above(stamps: pd.DatetimeIndex, values: np.ndarray,
                       capacity: float) -> pd.Timestamp | None:
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



# -- the catalog's capacity flag -------------------------------------------------------------
#: Catalog tag of the metrics whose capacity is planned: Prophet and exhaustion dates for them.
CAPACITY_TAG = "capacity_planning"
_METRIC_EQUALS = re.compile(r"\bmetric\s*=\s*'([^']+)'", re.IGNORECASE)
_METRIC_IN = re.compile(r"\bmetric\s+IN\s*\(([^)]*)\)", re.IGNORECASE)
#: What "full" is in a catalog unit; other units have no ceiling to exhaust.
_UNIT_CAPACITY = {"ratio": 1.0, "percent": 100.0}


@dataclass(frozen=True)
class CapacityMetric:
    """A raw silver metric behind catalog metrics tagged for capacity planning."""

    metric: str
    catalog_ids: tuple[str, ...]
    capacity: float | None  # 1.0 for ratios, 100 for percent, None without a ceiling


def silver_metric_names(definition: MetricDefinition) -> list[str]:
    """Raw ``metric_points.metric`` names a simple metric_points definition selects."""
    if definition.type != "simple" or definition.model != "metric_points":
        return []
    text = " ".join(t for t in (definition.filter,
                                definition.measure.expr if definition.measure else None) if t)
    names = _METRIC_EQUALS.findall(text)
    for listed in _METRIC_IN.findall(text):
        names += re.findall(r"'([^']+)'", listed)
    return list(dict.fromkeys(names))


def capacity_metrics(metrics: MetricSet, tag: str = CAPACITY_TAG, *,
                     strict: bool = True) -> dict[str, CapacityMetric]:
    """Raw silver metric names behind the catalog metrics tagged ``tag``, by name.

    The names come from the definitions' ``metric = '…'`` / ``metric IN (…)`` filters; a
    ratio, derived or cumulative metric contributes those of the metrics it is computed
    from. A tagged metric that names none raises :class:`ConfigError` (skipped when not
    ``strict``).
    """
    found: dict[str, tuple[list[str], float | None]] = {}
    for metric_id, definition in sorted(metrics.metrics.items()):
        if tag not in definition.tags:
            continue
        sources = [definition, *(metrics.metrics[u] for u in metrics.upstream_closure(metric_id))]
        named = [(name, d) for d in sources for name in silver_metric_names(d)]
        if not named and strict:
            raise ConfigError(
                f"{definition.source_file}:{definition.source_line}: {metric_id} is tagged "
                f"{tag} but neither it nor its inputs filter metric_points by metric = '...'; "
                "add such a filter or remove the tag")
        for name, source in named:
            ids = found.setdefault(name, ([], _UNIT_CAPACITY.get(source.unit)))[0]
            if metric_id not in ids:
                ids.append(metric_id)
    return {name: CapacityMetric(name, tuple(ids), capacity)
            for name, (ids, capacity) in sorted(found.items())}


# -- the daily forecasts ---------------------------------------------------------------------
FORECASTS_SCHEMA = pa.schema([
    ("entity_id", pa.string()),
    ("metric", pa.string()),
    ("method", pa.string()),
    ("ts", pa.timestamp("us", tz="UTC")),
    ("point", pa.float64()),
    ("lower_80", pa.float64()),
    ("upper_80", pa.float64()),
    ("lower_95", pa.float64()),
    ("upper_95", pa.float64()),
    ("made_on", pa.date32()),
])
CAPACITY_SCHEMA = pa.schema([
    ("entity_id", pa.string()),
    ("metric", pa.string()),
    ("catalog_metrics", pa.list_(pa.string())),
    ("capacity", pa.float64()),
    ("current_value", pa.float64()),
    ("slope_per_day", pa.float64()),
    ("exhaustion_date", pa.date32()),
    ("earliest_exhaustion_date", pa.date32()),
    ("days_left", pa.float64()),
    ("days_left_earliest", pa.float64()),
    ("history_days", pa.float64()),
    ("made_on", pa.date32()),
])
_DAILY_LEVELS = (0.8, 0.95)


@dataclass(frozen=True)
class DailyForecasts:
    """Rows of ``gold/forecasts`` and, per forecast series, its method and cheap figures."""

    rows: pd.DataFrame
    series: pd.DataFrame  # id, method, insample_mase (baseline), width_80 (MASE-scale units)
    skipped: int  # series with under three observed values
    prophet_capped: int  # capacity series left to the baseline by ``max_prophet``
    prophet_failed: list[str]


def split_id(series_id: str) -> tuple[str, str]:
    """``entity/metric`` → (entity, metric); metric names never hold a slash, entities may."""
    entity, _, metric = series_id.rpartition("/")
    return entity, metric


def daily_forecasts(ids: Sequence[str], stamps: pd.DatetimeIndex, values: np.ndarray,
                    horizon: int, made_on: date, *,
                    prophet_metrics: Mapping[str, float | None] | None = None,
                    max_prophet: int = 200, timezone: str = "UTC") -> DailyForecasts:
    """Forecast every series of ``values`` [series, time] (grid ``stamps``) ``horizon`` ahead.

    The method follows each series' observed span: the baseline from three days on, seasonal
    naive from two, persistence below, nothing under three values. Series of
    ``prophet_metrics`` (raw metric → capacity) with three days also get Prophet, the fullest
    first (last value / capacity) when there are more than ``max_prophet``.
    """
    y = _as_panel(values)
    n_series, n = y.shape
    step = int((stamps[1] - stamps[0]).total_seconds()) if len(stamps) > 1 else 3600
    season = season_length(step)
    observed = ~np.isnan(y)
    count = observed.sum(axis=1)
    first = np.where(count > 0, observed.argmax(axis=1), n)
    span = n - first
    method = np.where(count < 3, "", np.where(
        span >= 3 * season, "baseline", np.where(span >= 2 * season, "seasonal_naive", "naive")))
    future = stamps[-1] + pd.to_timedelta(step * np.arange(1, horizon + 1), unit="s")
    if future.tz is None:
        future = future.tz_localize("UTC")
    frames, summaries = [], []
    for name in ("baseline", "seasonal_naive", "naive"):
        rows = np.flatnonzero(method == name)
        if not len(rows):
            continue
        # Only the columns from the group's earliest observation: leading gaps carry nothing.
        history = y[rows, int(first[rows].min()):]
        if name == "baseline":
            fc = baseline_forecast(history, horizon, season, _DAILY_LEVELS)
        elif name == "seasonal_naive":
            fc = seasonal_naive(history, horizon, season, _DAILY_LEVELS)
        else:
            fc = naive_forecast(history, horizon, _DAILY_LEVELS)
        frames.append(_forecast_rows([ids[i] for i in rows], name, fc, future, made_on))
        summaries.append(_series_figures([ids[i] for i in rows], name, fc, history, season))
    capped, failed = 0, []
    if prophet_metrics:
        # Prophet wants about two days of observed values, not only a three-day span.
        candidates = [i for i in np.flatnonzero((method == "baseline") & (count >= 2 * season))
                      if split_id(ids[i])[1] in prophet_metrics]
        last = pd.DataFrame(y.T).ffill().to_numpy()[-1] if n else np.zeros(n_series)

        def fullness(i: int) -> float:
            capacity = prophet_metrics[split_id(ids[i])[1]]
            return -last[i] / capacity if capacity else 0.0

        candidates.sort(key=lambda i: (fullness(i), ids[i]))
        capped = max(0, len(candidates) - max_prophet)
        done, forecasts = [], []
        for i in candidates[:max_prophet]:
            try:
                forecasts.append(prophet_forecast(stamps, y[i], horizon, _DAILY_LEVELS,
                                                  timezone=timezone))
                done.append(i)
            # One series whose fit fails (Stan's optimiser, a degenerate history) must not
            # cost the day's forecasts: it keeps its baseline rows and is reported.
            except Exception:  # noqa: BLE001
                failed.append(ids[i])
        if done:
            fc = _stack_rows(forecasts, _DAILY_LEVELS)
            frames.append(_forecast_rows([ids[i] for i in done], "prophet", fc, future,
                                         made_on))
            summaries.append(_series_figures([ids[i] for i in done], "prophet", fc,
                                             y[done], season))
    rows_frame = (pd.concat(frames, ignore_index=True) if frames
                  else FORECASTS_SCHEMA.empty_table().to_pandas())
    rows_frame = rows_frame.sort_values(["entity_id", "metric", "method", "ts"],
                                        ignore_index=True)
    series = (pd.concat(summaries, ignore_index=True) if summaries else
              pd.DataFrame(columns=["id", "method", "insample_mase", "width_80"]))
    return DailyForecasts(rows_frame, series, int((count < 3).sum()), capped, failed)


def _forecast_rows(ids: list[str], method: str, fc: Forecast, future: pd.DatetimeIndex,
                   made_on: date) -> pd.DataFrame:
    """Long rows (series × step) with nested intervals around the point."""
    n, horizon = fc.point.shape
    point = fc.point
    # A fit biased over its whole history has error quantiles on one side of zero; widening
    # to the point keeps lower ≤ point ≤ upper (and 80 % inside 95 %) for every consumer.
    lo80 = np.minimum(fc.bounds[0.8][0], point)
    hi80 = np.maximum(fc.bounds[0.8][1], point)
    lo95 = np.minimum(fc.bounds[0.95][0], lo80)
    hi95 = np.maximum(fc.bounds[0.95][1], hi80)
    parts = [split_id(i) for i in ids]
    return pd.DataFrame({
        "entity_id": np.repeat([e for e, _ in parts], horizon),
        "metric": np.repeat([m for _, m in parts], horizon),
        "method": method,
        "ts": future[np.tile(np.arange(horizon), n)],
        "point": point.ravel(), "lower_80": lo80.ravel(), "upper_80": hi80.ravel(),
        "lower_95": lo95.ravel(), "upper_95": hi95.ravel(),
        "made_on": made_on,
    })


def _series_figures(ids: list[str], method: str, fc: Forecast, history: np.ndarray,
                    season: int) -> pd.DataFrame:
    """Per series: validation MASE of the baseline's chosen fit, and 80 % width / MASE scale."""
    scale = (naive_scale(history, season) if history.shape[1] > season
             else np.full(len(ids), np.nan))
    insample = (fc.score / scale if fc.score is not None
                else np.full(len(ids), np.nan))
    width = _nanmean_rows(fc.bounds[0.8][1] - fc.bounds[0.8][0]) / scale
    return pd.DataFrame({"id": ids, "method": method,
                         "insample_mase": np.where(np.isfinite(insample), insample, np.nan),
                         "width_80": width})


def capacity_frame(ids: Sequence[str], stamps: pd.DatetimeIndex, values: np.ndarray,
                   capacities: Mapping[str, CapacityMetric], made_on: date,
                   horizon: pd.Timedelta | str = "90D") -> pd.DataFrame:
    """One row per series of a capacity metric: level, trend and when it fills up.

    Days left count from the end of the grid; a metric without a ceiling (no capacity) still
    gets its slope. Series with under three observed values are left out.
    """
    y = _as_panel(values)
    step = int((stamps[1] - stamps[0]).total_seconds()) if len(stamps) > 1 else 3600
    as_of = stamps[-1] + pd.Timedelta(seconds=step) if len(stamps) else pd.Timestamp(made_on)
    records = []
    for i, series_id in enumerate(ids):
        entity, metric = split_id(series_id)
        spec = capacities.get(metric)
        ok = ~np.isnan(y[i])
        if spec is None or ok.sum() < 3:
            continue
        when, used = stamps[ok], y[i][ok]
        found = capacity_exhaustion(when, used, spec.capacity if spec.capacity else math.inf,
                                    horizon)
        records.append({
            "entity_id": entity, "metric": metric, "catalog_metrics": list(spec.catalog_ids),
            "capacity": spec.capacity, "current_value": float(used[-1]),
            "slope_per_day": found.slope_per_day,
            "exhaustion_date": found.point.date() if found.point is not None else None,
            "earliest_exhaustion_date": (found.earliest.date() if found.earliest is not None
                                         else None),
            "days_left": _days(found.point, as_of), "days_left_earliest": _days(found.earliest,
                                                                                 as_of),
            "history_days": (when[-1] - when[0]).total_seconds() / DAY_S + step / DAY_S,
            "made_on": made_on,
        })
    frame = pd.DataFrame.from_records(records, columns=CAPACITY_SCHEMA.names)
    return frame.sort_values(["entity_id", "metric"], ignore_index=True)


def _days(when: pd.Timestamp | None, as_of: pd.Timestamp) -> float | None:
    return None if when is None else round((when - as_of).total_seconds() / DAY_S, 2)
