"""What the daily ``gold/forecasts`` and ``gold/capacity`` assets write.

The baseline for every series (seasonal naive, then persistence, when the history is too
short for it), Prophet in addition for the series of the metrics that the catalog tags
``capacity_planning``, and each capacity series' exhaustion dates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from opslake.ml.forecast.baseline import baseline_forecast
from opslake.ml.forecast.capacity import capacity_exhaustion
from opslake.ml.forecast.catalog import CapacityMetric
from opslake.ml.forecast.common import (
    DAY_S,
    Forecast,
    as_panel,
    nanmean_rows,
    season_length,
    split_id,
    stack_rows,
)
from opslake.ml.forecast.metrics import naive_scale
from opslake.ml.forecast.naive import naive_forecast, seasonal_naive
from opslake.ml.forecast.prophet import prophet_forecast

FORECASTS_SCHEMA = pa.schema(
    [
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
    ]
)
CAPACITY_SCHEMA = pa.schema(
    [
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
    ]
)
_DAILY_LEVELS = (0.8, 0.95)


@dataclass(frozen=True)
class DailyForecasts:
    """Rows of ``gold/forecasts`` and, per forecast series, its method and cheap figures."""

    rows: pd.DataFrame
    series: pd.DataFrame  # id, method, insample_mase (baseline), width_80 (MASE-scale units)
    skipped: int  # series with under three observed values
    prophet_capped: int  # capacity series left to the baseline by ``max_prophet``
    prophet_failed: list[str]


def daily_forecasts(
    ids: Sequence[str],
    stamps: pd.DatetimeIndex,
    values: np.ndarray,
    horizon: int,
    made_on: date,
    *,
    prophet_metrics: Mapping[str, float | None] | None = None,
    max_prophet: int = 200,
    timezone: str = "UTC",
) -> DailyForecasts:
    """Forecast every series of ``values`` [series, time] (grid ``stamps``) ``horizon`` ahead.

    The method follows each series' observed span: the baseline from three days on, seasonal
    naive from two, persistence below, nothing under three values. Series of
    ``prophet_metrics`` (raw metric → capacity) with three days also get Prophet, the fullest
    first (last value / capacity) when there are more than ``max_prophet``.
    """
    y = as_panel(values)
    n_series, n = y.shape
    step = int((stamps[1] - stamps[0]).total_seconds()) if len(stamps) > 1 else 3600
    season = season_length(step)
    observed = ~np.isnan(y)
    count = observed.sum(axis=1)
    first = np.where(count > 0, observed.argmax(axis=1), n)
    span = n - first
    method = np.where(
        count < 3,
        "",
        np.where(
            span >= 3 * season, "baseline", np.where(span >= 2 * season, "seasonal_naive", "naive")
        ),
    )
    future = stamps[-1] + pd.to_timedelta(step * np.arange(1, horizon + 1), unit="s")
    if future.tz is None:
        future = future.tz_localize("UTC")
    frames, summaries = [], []
    for name in ("baseline", "seasonal_naive", "naive"):
        rows = np.flatnonzero(method == name)
        if not len(rows):
            continue
        # Only the columns from the group's earliest observation: leading gaps carry nothing.
        history = y[rows, int(first[rows].min()) :]
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
        candidates = [
            i
            for i in np.flatnonzero((method == "baseline") & (count >= 2 * season))
            if split_id(ids[i])[1] in prophet_metrics
        ]
        last = pd.DataFrame(y.T).ffill().to_numpy()[-1] if n else np.zeros(n_series)

        def fullness(i: int) -> float:
            capacity = prophet_metrics[split_id(ids[i])[1]]
            return -last[i] / capacity if capacity else 0.0

        candidates.sort(key=lambda i: (fullness(i), ids[i]))
        capped = max(0, len(candidates) - max_prophet)
        done, forecasts = [], []
        for i in candidates[:max_prophet]:
            try:
                forecasts.append(
                    prophet_forecast(stamps, y[i], horizon, _DAILY_LEVELS, timezone=timezone)
                )
                done.append(i)
            # One series whose fit fails (Stan's optimiser, a degenerate history) must not
            # cost the day's forecasts: it keeps its baseline rows and is reported.
            except Exception:  # noqa: BLE001
                failed.append(ids[i])
        if done:
            fc = stack_rows(forecasts, _DAILY_LEVELS)
            frames.append(_forecast_rows([ids[i] for i in done], "prophet", fc, future, made_on))
            summaries.append(
                _series_figures([ids[i] for i in done], "prophet", fc, y[done], season)
            )
    rows_frame = (
        pd.concat(frames, ignore_index=True)
        if frames
        else FORECASTS_SCHEMA.empty_table().to_pandas()
    )
    rows_frame = rows_frame.sort_values(["entity_id", "metric", "method", "ts"], ignore_index=True)
    series = (
        pd.concat(summaries, ignore_index=True)
        if summaries
        else pd.DataFrame(columns=["id", "method", "insample_mase", "width_80"])
    )
    return DailyForecasts(rows_frame, series, int((count < 3).sum()), capped, failed)


def _forecast_rows(
    ids: list[str], method: str, fc: Forecast, future: pd.DatetimeIndex, made_on: date
) -> pd.DataFrame:
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
    return pd.DataFrame(
        {
            "entity_id": np.repeat([e for e, _ in parts], horizon),
            "metric": np.repeat([m for _, m in parts], horizon),
            "method": method,
            "ts": future[np.tile(np.arange(horizon), n)],
            "point": point.ravel(),
            "lower_80": lo80.ravel(),
            "upper_80": hi80.ravel(),
            "lower_95": lo95.ravel(),
            "upper_95": hi95.ravel(),
            "made_on": made_on,
        }
    )


def _series_figures(
    ids: list[str], method: str, fc: Forecast, history: np.ndarray, season: int
) -> pd.DataFrame:
    """Per series: validation MASE of the baseline's chosen fit, and 80 % width / MASE scale."""
    scale = naive_scale(history, season) if history.shape[1] > season else np.full(len(ids), np.nan)
    insample = fc.score / scale if fc.score is not None else np.full(len(ids), np.nan)
    width = nanmean_rows(fc.bounds[0.8][1] - fc.bounds[0.8][0]) / scale
    return pd.DataFrame(
        {
            "id": ids,
            "method": method,
            "insample_mase": np.where(np.isfinite(insample), insample, np.nan),
            "width_80": width,
        }
    )


def capacity_frame(
    ids: Sequence[str],
    stamps: pd.DatetimeIndex,
    values: np.ndarray,
    capacities: Mapping[str, CapacityMetric],
    made_on: date,
    horizon: pd.Timedelta | str = "90D",
) -> pd.DataFrame:
    """One row per series of a capacity metric: level, trend and when it fills up.

    Days left count from the end of the grid; a metric without a ceiling (no capacity) still
    gets its slope. Series with under three observed values are left out.
    """
    y = as_panel(values)
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
        found = capacity_exhaustion(
            when, used, spec.capacity if spec.capacity else math.inf, horizon
        )
        records.append(
            {
                "entity_id": entity,
                "metric": metric,
                "catalog_metrics": list(spec.catalog_ids),
                "capacity": spec.capacity,
                "current_value": float(used[-1]),
                "slope_per_day": found.slope_per_day,
                "exhaustion_date": found.point.date() if found.point is not None else None,
                "earliest_exhaustion_date": (
                    found.earliest.date() if found.earliest is not None else None
                ),
                "days_left": _days(found.point, as_of),
                "days_left_earliest": _days(found.earliest, as_of),
                "history_days": (when[-1] - when[0]).total_seconds() / DAY_S + step / DAY_S,
                "made_on": made_on,
            }
        )
    frame = pd.DataFrame.from_records(records, columns=CAPACITY_SCHEMA.names)
    return frame.sort_values(["entity_id", "metric"], ignore_index=True)


def _days(when: pd.Timestamp | None, as_of: pd.Timestamp) -> float | None:
    return None if when is None else round((when - as_of).total_seconds() / DAY_S, 2)
