"""Forecasting domain (S6.7): a week of hourly forecasts for every series, and capacity runway.

Thin wiring around opslake.ml.forecast: ``gold/forecasts`` forecasts every (entity, metric)
series from its hourly means over the last two weeks, with the statistical baseline for all
and Prophet in addition for the metrics the catalog tags ``capacity_planning``;
``gold/capacity`` says when each of those series fills up.
"""

import logging
import time
from datetime import date, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from opslake.assets.keys import OWNER, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.errors import ConfigError, NotFoundError
from opslake.metrics_catalog.loader import load
from opslake.ml.backtest import Panel, estate_panel
from opslake.ml.forecast.catalog import CapacityMetric, capacity_metrics
from opslake.ml.forecast.daily import (
    CAPACITY_SCHEMA,
    FORECASTS_SCHEMA,
    capacity_frame,
    daily_forecasts,
)
from opslake.settings import Settings

#: Days of silver history each forecast is made from (ending with the partition's day).
HISTORY_DAYS = 14
#: Hourly steps forecast: the seven days after the partition's day.
HORIZON = 7 * 24
STEP_S = 3600
#: Prophet takes about 0.3 s a series; beyond this many capacity series the fullest are kept.
MAX_PROPHET = 200
#: Capacity runway is looked for this far ahead.
CAPACITY_HORIZON = "90D"


def _panel(lake: LakeResource, day: str, metrics: list[str] | None = None) -> Panel | None:
    """Hourly means of the series (of ``metrics``, default all) over the history window;
    None when it has no points."""
    end = pd.Timestamp(day) + pd.Timedelta(days=1)
    try:
        return estate_panel(
            lake.lake(), metrics, STEP_S, window=(end - pd.Timedelta(days=HISTORY_DAYS), end)
        )
    except NotFoundError:
        return None


def _trim(panel: Panel) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The grid from the first hour any series was observed (a young lake has less history)."""
    seen = np.flatnonzero(~np.isnan(panel.values).all(axis=0))
    first = int(seen[0]) if len(seen) else max(0, panel.values.shape[1] - 1)
    return panel.timestamps[first:].tz_localize("UTC"), panel.values[:, first:]


def _capacity_metrics(
    settings: Settings, log: logging.Logger | dg.DagsterLogManager
) -> dict[str, CapacityMetric]:
    """The raw metrics behind the catalog's capacity-planning tags."""
    metrics = load(settings.metrics_dir, check_expressions=False)
    try:
        return capacity_metrics(metrics)
    except ConfigError as exc:  # one bad tag must not stop the day's forecasts
        log.warning(f"{exc}; forecasting the other capacity metrics")
        return capacity_metrics(metrics, strict=False)


def _figures_table(series: pd.DataFrame) -> str:
    """Markdown: per method, series and the medians of the cheap in-sample figures."""
    # Validation MASE: the baseline's chosen fit on the last stretch of history, all steps
    # ahead (so above the one-day figures of a backtest); widths in the same MASE scale.
    lines = [
        "| method | series | validation MASE (median) | 80 % width / scale (median) |",
        "|---|---:|---:|---:|",
    ]
    for method, group in series.groupby("method", sort=True):
        cells = [
            f"{v:.3f}" if np.isfinite(v) else "–"
            for v in (group["insample_mase"].median(), group["width_80"].median())
        ]
        lines.append(f"| {method} | {len(group)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


@dg.asset(
    key=key("gold", "forecasts"),
    group_name="gold",
    kinds={"pandas", "parquet"},
    owners=[OWNER],
    partitions_def=DAILY,
    deps=[key("silver", "metric_points")],
    description=(
        "指标预测 / forecasts made on day D: for every (entity, metric) series, the hourly "
        "means of up to 14 days of silver metric points ending with D, forecast hourly for "
        "the 7 days after D with 80 % and 95 % intervals. method = baseline (robust damped "
        "Holt-Winters, empirical intervals; seasonal_naive with 2–3 days of history, naive "
        "below), plus prophet rows for the metrics the catalog tags capacity_planning "
        f"(at most {MAX_PROPHET} series, the fullest first). Definitions in opslake.ml.forecast."
    ),
)
def forecasts(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Forecast every series a week ahead and write the rows."""
    began = time.perf_counter()
    day = context.partition_key
    settings = lake.settings()
    panel = _panel(lake, day)
    metadata: dict = {"rows": 0, "series": 0}
    rows = FORECASTS_SCHEMA.empty_table()
    if panel is not None:
        stamps, values = _trim(panel)
        capacity = _capacity_metrics(settings, context.log)
        made = daily_forecasts(
            panel.ids,
            stamps,
            values,
            HORIZON,
            date.fromisoformat(day),
            prophet_metrics={m: c.capacity for m, c in capacity.items()},
            max_prophet=MAX_PROPHET,
            timezone=settings.timezone,
        )
        rows = pa.Table.from_pandas(made.rows, schema=FORECASTS_SCHEMA, preserve_index=False)
        methods = made.series["method"].value_counts().sort_index()
        metadata.update(
            {
                "rows": rows.num_rows,
                "series": int(made.series.query("method != 'prophet'").shape[0]),
                "series_by_method": dg.MetadataValue.json({k: int(v) for k, v in methods.items()}),
                "series_skipped_under_3_values": made.skipped,
                "history_hours": int(values.shape[1]),
                "prophet_capped": made.prophet_capped,
                "prophet_failed": dg.MetadataValue.json(made.prophet_failed[:20]),
                "figures": dg.MetadataValue.md(_figures_table(made.series)),
            }
        )
    else:
        metadata["note"] = f"no silver metric points in the {HISTORY_DAYS} days up to {day}"
    lake.lake().write_table(rows, "gold", "forecasts", {"dt": day})
    metadata["seconds"] = round(time.perf_counter() - began, 2)
    return dg.MaterializeResult(metadata=metadata)


def _top_table(frame: pd.DataFrame) -> str:
    """Markdown: the ten series that may fill up first."""
    soon = (
        frame[frame["days_left_earliest"].notna()]
        .sort_values(["days_left_earliest", "days_left", "entity_id", "metric"], na_position="last")
        .head(10)
    )
    if soon.empty:
        return "none within the horizon"
    lines = [
        "| entity | metric | now | per day | full on | earliest | days left |",
        "|---|---|---:|---:|---|---|---:|",
    ]
    for r in soon.itertuples():
        full = r.exhaustion_date.isoformat() if isinstance(r.exhaustion_date, date) else "–"
        left = f"{r.days_left:.1f}" if pd.notna(r.days_left) else "–"
        lines.append(
            f"| {r.entity_id} | {r.metric} | {r.current_value:.3f} | "
            f"{r.slope_per_day:+.4f} | {full} | {r.earliest_exhaustion_date} | {left} |"
        )
    return "\n".join(lines)


@dg.asset(
    key=key("gold", "capacity"),
    group_name="gold",
    kinds={"pandas", "parquet"},
    owners=[OWNER],
    partitions_def=DAILY,
    deps=[key("silver", "metric_points")],
    description=(
        "容量预测 / capacity runway on day D: one row per series of the metrics the catalog "
        "tags capacity_planning, from the hourly means of up to 14 days ending with D: current "
        "value, robust trend per day (Sen's slope), the date the point forecast reaches "
        "capacity (1.0 for ratios) and the earliest date its upper bound does, within 90 "
        "days, and the days left until each."
    ),
)
def capacity(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Estimate when each capacity-planning series fills up and write the rows."""
    began = time.perf_counter()
    day = context.partition_key
    specs = _capacity_metrics(lake.settings(), context.log)
    # Only the capacity metrics' points are read, not the whole estate's two weeks.
    panel = _panel(lake, day, sorted(specs)) if specs else None
    frame = pd.DataFrame(columns=CAPACITY_SCHEMA.names)
    if panel is not None:
        stamps, values = _trim(panel)
        frame = capacity_frame(
            panel.ids, stamps, values, specs, date.fromisoformat(day), CAPACITY_HORIZON
        )
    table = pa.Table.from_pandas(frame, schema=CAPACITY_SCHEMA, preserve_index=False)
    lake.lake().write_table(table, "gold", "capacity", {"dt": day})
    month = date.fromisoformat(day) + timedelta(days=30)
    within = frame["exhaustion_date"].map(lambda d: isinstance(d, date) and d <= month)
    at_risk = frame["earliest_exhaustion_date"].map(lambda d: isinstance(d, date) and d <= month)
    return dg.MaterializeResult(
        metadata={
            "rows": table.num_rows,
            "series": table.num_rows,
            "exhausting_within_30_days": int(within.sum()),
            "at_risk_within_30_days": int(at_risk.sum()),
            "top": dg.MetadataValue.md(_top_table(frame)),
            "seconds": round(time.perf_counter() - began, 2),
        }
    )


defs = dg.Definitions(assets=[forecasts, capacity])
