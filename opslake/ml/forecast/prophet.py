"""Prophet: the slower, per-series model for the metrics flagged for capacity planning."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd

from opslake.errors import InputError
from opslake.ml.forecast.common import DAY_S, LEVELS, Forecast, infer_step, season_length


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


def prophet_forecast(
    ts: pd.DatetimeIndex | np.ndarray,
    history: np.ndarray,
    horizon: int,
    levels: tuple[float, ...] = LEVELS,
    *,
    max_points: int = 2000,
    max_days: int = 56,
    samples: int = 300,
    seed: int = 0,
    timezone: str = "UTC",
) -> Forecast:
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
    factor = next(
        (d for d in range(1, per_day + 1) if per_day % d == 0 and len(frame) / d <= max_points),
        per_day,
    )
    coarse = frame
    if factor > 1:
        coarse = frame.set_index("ds").resample(f"{step * factor}s").mean().dropna().reset_index()
    span_days = (frame["ds"].iloc[-1] - frame["ds"].iloc[0]).total_seconds() / DAY_S
    future = pd.DataFrame(
        {"ds": stamps[-1] + pd.to_timedelta(step * np.arange(1, horizon + 1), unit="s")}
    )
    frame, coarse, future = (_with_day_type(f, timezone) for f in (frame, coarse, future))
    days = frame["ds"].dt.normalize().drop_duplicates()
    weekend_days = int(_with_day_type(pd.DataFrame({"ds": days}), timezone)["weekend"].sum())
    # Business load is lower and flatter at weekends: a level and a daily shape per day type
    # fit that even when there is too little history for a weekly seasonality; without the
    # level, the trend bends at every weekend and extrapolates the bend.
    split = span_days >= 2 and weekend_days >= 2 and len(days) - weekend_days >= 2
    model = prophet_class(
        daily_seasonality=span_days >= 2 and not split,
        weekly_seasonality=span_days >= 14,
        yearly_seasonality=False,
        uncertainty_samples=samples,
    )
    if split:
        for name in ("weekday", "weekend"):
            model.add_seasonality(f"daily_{name}", period=1, fourier_order=4, condition_name=name)
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
                rough = np.abs(coarse["y"].to_numpy() - model.predict(coarse)["yhat"].to_numpy())
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
