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
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from opslake.errors import InputError

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
_PHI = 0.98
# Errors beyond this many running scales are clipped before they update the state, so a
# spike or an outage moves the level by a bounded amount (robust Holt-Winters).
_HUBER_C = 3.0
_SCALE_WEIGHT = 0.02
# Origins used for in-sample errors: parameter selection and the interval quantiles.
_SELECT_ORIGINS = 24
_INTERVAL_ORIGINS = 96


@dataclass(frozen=True)
class Forecast:
    """Point forecasts ``[series, horizon]`` and, per level, lower and upper bounds."""

    point: np.ndarray
    bounds: dict[float, tuple[np.ndarray, np.ndarray]]


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
    grid = np.array([(a, a * b, g) for a in _ALPHAS for b in _BETA_SHARES for g in _GAMMAS])
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
        lo, hi = (_sorted_quantile(ordered, count, q) for q in ((1 - level) / 2, (1 + level) / 2))
        bounds[level] = (point + lo, point + hi)
    return Forecast(point, bounds)


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
    states, score = _fit_baseline(y, season, horizon)
    daily = _predict(y, states, horizon, levels)
    if not weekly_season or y.shape[1] < 3 * weekly_season:
        return daily
    weekly_states, weekly_score = _fit_baseline(y, weekly_season, horizon)
    weekly = _predict(y, weekly_states, horizon, levels)
    use = (weekly_score < score)[:, None]
    return Forecast(np.where(use, weekly.point, daily.point),
                    {lv: (np.where(use, weekly.bounds[lv][0], daily.bounds[lv][0]),
                          np.where(use, weekly.bounds[lv][1], daily.bounds[lv][1]))
                     for lv in levels})


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
    with warnings.catch_warnings():
        # Prophet 1.5 still uses pandas idioms that pandas 3 deprecates; nothing to act on here.
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

