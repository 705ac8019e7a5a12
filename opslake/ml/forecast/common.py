"""What every forecaster shares: the result type, the sampling grid and the array checks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from opslake.errors import InputError

DAY_S = 86_400
WEEK_S = 7 * DAY_S
#: Interval levels every forecaster returns unless asked otherwise.
LEVELS = (0.8, 0.95)


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
        raise InputError(
            "cannot infer a sampling step from fewer than two timestamps; pass a longer history"
        )
    return max(1, round(float(np.median(np.diff(stamps)))))


def season_length(step_s: int, period_s: int = DAY_S) -> int:
    """Samples per seasonal period (a day by default) at ``step_s``; at least 1."""
    return max(1, round(period_s / step_s))


def as_panel(values: np.ndarray) -> np.ndarray:
    """``values`` as a float array ``[series, time]``; one series may come as a 1-D array."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"expected an array [series, time], got shape {arr.shape}")
    return arr


def check_history(y: np.ndarray, season: int, minimum_seasons: int) -> None:
    """Raise :class:`InputError` when ``y`` holds fewer than ``minimum_seasons`` seasons."""
    if y.shape[1] < minimum_seasons * season:
        raise InputError(
            f"history of {y.shape[1]} samples is shorter than {minimum_seasons} seasons of "
            f"{season}; pass more history or a shorter season"
        )


def stack_rows(parts: Sequence[Forecast], levels: tuple[float, ...]) -> Forecast:
    """Forecasts of consecutive groups of series as one."""
    scores = [p.score for p in parts]
    return Forecast(
        np.vstack([p.point for p in parts]),
        {
            lv: (
                np.vstack([p.bounds[lv][0] for p in parts]),
                np.vstack([p.bounds[lv][1] for p in parts]),
            )
            for lv in levels
        },
        None if any(s is None for s in scores) else np.concatenate(scores),
    )


def nanmean_rows(x: np.ndarray) -> np.ndarray:
    """Mean of each row over its observed values; NaN, without a warning, for an empty row."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=1)


def split_id(series_id: str) -> tuple[str, str]:
    """``entity/metric`` → (entity, metric); metric names never hold a slash, entities may."""
    entity, _, metric = series_id.rpartition("/")
    return entity, metric
