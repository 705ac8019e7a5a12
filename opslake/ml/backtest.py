"""Rolling-origin backtests of the forecasters against seasonal naive.

A :class:`Panel` holds series on one regular grid. :func:`rolling_backtest` cuts it at several
origins one horizon apart, forecasts the next ``horizon`` samples from what came before only,
and scores every (method, series, fold); :func:`summarise` pools the scores into the figures
of the closing note. :func:`backtest_nab` and :func:`backtest_estate` run the two reference
data sets: NAB's realKnownCause files and the silver metric points of a simulated lake; the
estate's figures come for all series and split into the capacity-planning metrics (where
production runs Prophet) and the rest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from opslake.errors import InputError, NotFoundError, StorageError
from opslake.lake import duck
from opslake.lake.storage import Lake
from opslake.ml.forecast.baseline import baseline_forecast
from opslake.ml.forecast.catalog import capacity_metrics
from opslake.ml.forecast.common import (
    LEVELS,
    WEEK_S,
    Forecast,
    infer_step,
    season_length,
    split_id,
    stack_rows,
)
from opslake.ml.forecast.metrics import coverage, interval_width, mase, smape
from opslake.ml.forecast.naive import seasonal_naive
from opslake.ml.forecast.prophet import prophet_forecast

METHODS = ("baseline", "prophet", "seasonal_naive")

#: Simulated metrics backtested on the estate: utilisation, capacity, latency and load.
ESTATE_METRICS = (
    "node_cpu_utilisation_ratio",
    "node_memory_utilisation_ratio",
    "node_filesystem_used_ratio",
    "container_cpu_utilisation_ratio",
    "storage_pool_used_ratio",
    "storage_pool_latency_seconds",
    "switch_interface_utilisation_ratio",
    "http_requests_per_second",
    "http_request_duration_p95_seconds",
    "db_connections_in_use",
)


@dataclass(frozen=True)
class Panel:
    """Series ``values[series, time]`` on the grid ``start + step_s × i``; NaN marks a gap."""

    name: str
    start: pd.Timestamp
    step_s: int
    ids: list[str]
    values: np.ndarray

    @property
    def timestamps(self) -> pd.DatetimeIndex:
        """The grid's timestamps."""
        return self.start + pd.to_timedelta(np.arange(self.values.shape[1]) * self.step_s, unit="s")


def to_grid(ts: pd.Series, values: pd.Series, step_s: int) -> tuple[pd.Timestamp, np.ndarray]:
    """Mean of ``values`` per ``step_s`` bucket from the first timestamp on, NaN in gaps."""
    stamps = pd.to_datetime(ts)
    start = stamps.min().floor(f"{step_s}s")
    slot = ((stamps - start).dt.total_seconds() // step_s).astype(int).to_numpy()
    sums = np.bincount(slot, weights=values.to_numpy(dtype=float))
    counts = np.bincount(slot)
    with np.errstate(invalid="ignore"):
        return start, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def nab_panels(data_dir: str | Path) -> list[Panel]:
    """One single-series panel per NAB CSV (``timestamp,value``) at the file's median step."""
    files = sorted(Path(data_dir).glob("*.csv"))
    if not files:
        raise NotFoundError(
            f"no CSV files in {data_dir}; point it at NAB's data/realKnownCause directory"
        )
    panels = []
    for path in files:
        frame = pd.read_csv(path)
        if not {"timestamp", "value"} <= set(frame.columns):
            raise InputError(f"{path} lacks the columns timestamp,value; is it a NAB data file?")
        frame["timestamp"] = pd.to_datetime(frame["timestamp"])
        step = infer_step(frame["timestamp"])
        start, grid = to_grid(frame["timestamp"], frame["value"], step)
        panels.append(Panel(path.stem, start, step, [path.stem], grid[None, :]))
    return panels


def estate_panel(
    lake: Lake,
    metrics: Sequence[str] | None = ESTATE_METRICS,
    step_s: int = 3600,
    *,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> Panel:
    """Silver metric points averaged per (entity, metric) over ``step_s`` buckets.

    ``metrics=None`` takes every metric. With ``window`` (UTC start, end) only its days are
    read and the grid covers ``[start, end)`` exactly, so the last bucket is the one before
    ``end`` even when it is empty.
    """
    dts = None
    if window is not None:
        start, end = (
            pd.Timestamp(w).tz_localize(None) if pd.Timestamp(w).tz else pd.Timestamp(w)
            for w in window
        )
        dts = [
            d.date().isoformat()
            for d in pd.date_range(start.floor("D"), end - pd.Timedelta(seconds=1))
        ]
    try:
        points = lake.dataset("silver", "metric_points", dts=dts)
    except StorageError:
        points = None
    if points is None:
        raise NotFoundError(
            "silver/metric_points has no data for the days asked; "
            "materialize the silver layer first"
        )
    where, params = ["isfinite(value)"], [step_s]
    if metrics is not None:
        where.append("metric IN (SELECT unnest(?))")
        params.append(list(metrics))
    if window is not None:
        where.append("ts >= ? AND ts < ?")
        params += [start.tz_localize("UTC").to_pydatetime(), end.tz_localize("UTC").to_pydatetime()]
    con = duck.connect()
    try:
        con.register("points", points)
        frame = con.execute(
            "SELECT entity_id || '/' || metric AS id, "
            "  epoch(time_bucket(to_seconds(?), ts)) AS bucket, avg(value) AS value "
            f"FROM points WHERE {' AND '.join(where)} GROUP BY ALL",
            params,
        ).fetch_df()
    finally:
        con.close()
    if frame.empty:
        wanted = "any metric" if metrics is None else ", ".join(metrics)
        raise NotFoundError(
            f"silver/metric_points has none of {wanted} there; "
            "materialize the silver layer of a simulated lake first"
        )
    first = int(frame["bucket"].min()) if window is None else int(start.timestamp())
    last = int(frame["bucket"].max()) if window is None else int(end.timestamp()) - step_s
    frame["slot"] = ((frame["bucket"] - first) // step_s).astype(int)
    wide = frame.pivot(index="id", columns="slot", values="value").sort_index()
    wide = wide.reindex(columns=range((last - first) // step_s + 1))
    return Panel(
        "estate",
        pd.Timestamp(first, unit="s"),
        step_s,
        list(wide.index),
        wide.to_numpy(dtype=float),
    )


def rolling_backtest(
    panel: Panel,
    horizon: int,
    folds: int,
    *,
    prophet_rows: Sequence[int] | None = None,
    levels: tuple[float, ...] = LEVELS,
    timezone: str = "UTC",
) -> pd.DataFrame:
    """Scores per (method, series, fold) at origins one horizon apart ending at the last sample.

    Each fold sees only the samples before its origin. Prophet runs on ``prophet_rows``
    (every series when None) because it costs about a second per fit; ``timezone`` says
    where its weekends are.
    """
    season = season_length(panel.step_s)
    weekly = season_length(panel.step_s, WEEK_S)
    n = panel.values.shape[1]
    origins = [n - horizon * (folds - i) for i in range(folds)]
    if origins[0] < 3 * season:
        raise InputError(
            f"{panel.name}: {n} samples leave under three days before the first "
            f"of {folds} folds of {horizon}; use fewer folds or a shorter horizon"
        )
    rows = range(len(panel.ids)) if prophet_rows is None else prophet_rows
    stamps = panel.timestamps
    records = []
    for fold, origin in enumerate(origins):
        history = panel.values[:, :origin]
        actual = panel.values[:, origin : origin + horizon]
        forecasts = {
            "baseline": (
                np.arange(len(panel.ids)),
                baseline_forecast(history, horizon, season, levels, weekly),
            ),
            "seasonal_naive": (
                np.arange(len(panel.ids)),
                seasonal_naive(history, horizon, season, levels),
            ),
        }
        if rows:
            prophet = [
                prophet_forecast(stamps[:origin], history[r], horizon, levels, timezone=timezone)
                for r in rows
            ]
            forecasts["prophet"] = (np.asarray(rows), stack_rows(prophet, levels))
        for method, (index, fc) in forecasts.items():
            records.append(
                _score(
                    panel, method, fold, index, fc, history[index], actual[index], season, levels
                )
            )
    return pd.concat(records, ignore_index=True)


def _score(
    panel: Panel,
    method: str,
    fold: int,
    index: np.ndarray,
    fc: Forecast,
    history: np.ndarray,
    actual: np.ndarray,
    season: int,
    levels: tuple[float, ...],
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "panel": panel.name,
            "method": method,
            "fold": fold,
            "series": [panel.ids[i] for i in index],
            "mase": mase(actual, fc.point, history, season),
            "smape": smape(actual, fc.point),
        }
    )
    for level in levels:
        lower, upper = fc.bounds[level]
        frame[f"coverage_{level:g}"] = coverage(actual, lower, upper)
        frame[f"width_{level:g}"] = interval_width(lower, upper, history, season)
    return frame


def summarise(scores: pd.DataFrame) -> dict[str, dict[str, float | int]]:
    """Pooled figures per method; ``mase_ratio`` compares with seasonal naive on the same cuts."""
    key = ["panel", "series", "fold"]
    naive = scores[scores["method"] == "seasonal_naive"].set_index(key)["mase"]
    summary: dict[str, dict[str, float | int]] = {}
    for method, group in scores.groupby("method", sort=False):
        valid = group[np.isfinite(group["mase"])]
        paired = naive.reindex(valid.set_index(key).index).to_numpy()
        ok = np.isfinite(paired)
        figures: dict[str, float | int] = {
            "mase_mean": float(valid["mase"].mean()),
            "mase_median": float(valid["mase"].median()),
            "mase_ratio": float(valid["mase"].to_numpy()[ok].mean() / paired[ok].mean()),
            "beats_naive_share": float((valid["mase"].to_numpy()[ok] < paired[ok]).mean()),
            "smape_mean": float(group["smape"].mean()),
            "n_series": int(group[["panel", "series"]].drop_duplicates().shape[0]),
            "n_folds": int(group["fold"].nunique()),
            "n_forecasts": len(group),
        }
        for column in group.columns:
            if column.startswith(("coverage_", "width_")):
                figures[column] = float(group[column].mean())
        summary[str(method)] = {
            k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()
        }
    return summary


def backtest_nab(data_dir: str | Path, folds: int = 5, horizon_s: int = 86_400) -> dict:
    """Backtest every method on each NAB file (one day ahead by default); JSON-able figures."""
    began = time.perf_counter()
    scores = pd.concat(
        [
            rolling_backtest(panel, season_length(panel.step_s, horizon_s), folds)
            for panel in nab_panels(data_dir)
        ],
        ignore_index=True,
    )
    return _report(scores, began, "MASE scaled by in-sample seasonal naive, season = one day")


def backtest_estate(
    lake: Lake,
    folds: int = 3,
    horizon_s: int = 86_400,
    step_s: int = 3600,
    prophet_per_metric: int = 4,
    timezone: str = "Asia/Shanghai",
    *,
    prophet: str = "capacity",
    metrics_dir: Path | None = None,
) -> dict:
    """Backtest on the simulated estate's silver metric points, figures split by capacity.

    ``prophet="capacity"`` runs Prophet on every series of the catalog's capacity-planning
    metrics (as production does; the catalog in ``metrics_dir``, by default
    ``OPSLAKE_METRICS_DIR``), ``"sample"`` on ``prophet_per_metric`` series per metric.
    ``timezone`` is the estate's business calendar (``Settings.timezone``).
    """
    if prophet not in ("capacity", "sample"):
        raise InputError(f"prophet={prophet!r}: use 'capacity' or 'sample'")
    began = time.perf_counter()
    capacity = set(_capacity_names(metrics_dir))
    panel = estate_panel(lake, sorted(set(ESTATE_METRICS) | capacity), step_s=step_s)
    metric = pd.Series([split_id(s)[1] for s in panel.ids])
    horizon = season_length(step_s, horizon_s)
    # Prophet refuses a history of under two days: series of entities that left the estate
    # early keep only the other methods.
    seen = (~np.isnan(panel.values[:, : max(0, panel.values.shape[1] - folds * horizon)])).sum(
        axis=1
    ) >= 2 * season_length(step_s)
    if prophet == "capacity":
        rows = [int(i) for i in np.flatnonzero(metric.isin(capacity).to_numpy() & seen)]
    else:
        rows = [
            int(i)
            for _, idx in metric[seen].groupby(metric[seen]).groups.items()
            for i in list(idx)[:prophet_per_metric]
        ]
    scores = rolling_backtest(panel, horizon, folds, prophet_rows=rows, timezone=timezone)
    scores["group"] = scores["series"].map(lambda s: split_id(s)[1])
    report = _report(scores, began, "MASE scaled by in-sample seasonal naive, season = one day")
    flagged = scores["group"].isin(capacity)
    report["by_capacity"] = {
        "capacity": summarise(scores[flagged]) if flagged.any() else {},
        "other": summarise(scores[~flagged]) if (~flagged).any() else {},
        "capacity_metrics": sorted(capacity),
        "prophet_series": len(rows),
    }
    report["prophet_on"] = prophet
    report["seconds"] = round(time.perf_counter() - began, 1)
    return report


def _capacity_names(metrics_dir: Path | None) -> list[str]:
    """Raw names of the capacity-planning metrics of the catalog in ``metrics_dir``."""
    from opslake.metrics_catalog.loader import load
    from opslake.settings import Settings

    directory = metrics_dir or Settings.from_env().metrics_dir
    return list(capacity_metrics(load(Path(directory), check_expressions=False)))


def _report(scores: pd.DataFrame, began: float, note: str) -> dict:
    group = "group" if "group" in scores else "panel"
    by_group = scores.groupby([group, "method"])["mase"].mean().unstack("method").round(3)
    return {
        "methods": summarise(scores),
        "mase_by_group": {
            str(k): {m: float(v) for m, v in row.items() if np.isfinite(v)}
            for k, row in by_group.iterrows()
        },
        "note": note,
        "seconds": round(time.perf_counter() - began, 1),
    }
