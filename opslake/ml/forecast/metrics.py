"""Forecast accuracy: MASE (scaled by seasonal naive), sMAPE, interval coverage and width."""

from __future__ import annotations

import warnings

import numpy as np

from opslake.ml.forecast.common import as_panel, nanmean_rows


def naive_scale(history: np.ndarray, season: int) -> np.ndarray:
    """In-sample MAE of seasonal naive per series: the denominator of MASE (NaN when zero)."""
    y = as_panel(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = np.nanmean(np.abs(y[:, season:] - y[:, :-season]), axis=1)
    return np.where(scale > 0, scale, np.nan)


def mase(actual: np.ndarray, predicted: np.ndarray, history: np.ndarray, season: int) -> np.ndarray:
    """Mean absolute scaled error per series, scaled by in-sample seasonal naive at ``season``."""
    return nanmean_rows(np.abs(as_panel(actual) - as_panel(predicted))) / naive_scale(
        history, season
    )


def smape(actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Symmetric MAPE per series in percent (0-200); a point where both are zero counts 0."""
    a, p = as_panel(actual), as_panel(predicted)
    denom = np.abs(a) + np.abs(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(denom > 0, 2 * np.abs(a - p) / denom, 0.0)
    return 100 * nanmean_rows(np.where(np.isnan(a) | np.isnan(p), np.nan, ratio))


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Share of observed actuals inside ``[lower, upper]`` per series."""
    a = as_panel(actual)
    inside = ((a >= as_panel(lower)) & (a <= as_panel(upper))).astype(float)
    return nanmean_rows(np.where(np.isnan(a), np.nan, inside))


def interval_width(
    lower: np.ndarray, upper: np.ndarray, history: np.ndarray, season: int
) -> np.ndarray:
    """Mean interval width per series in units of the MASE scale, comparable across series."""
    return nanmean_rows(as_panel(upper) - as_panel(lower)) / naive_scale(history, season)
