"""gold/forecasts and gold/capacity through real Dagster, on a small simulated three-day lake."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

import dagster as dg
import duckdb
import pandas as pd
import pytest

from opslake.assets.forecasts import HORIZON, capacity, forecasts
from opslake.assets.resources import LakeResource
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.metrics_catalog.loader import load
from opslake.ml.forecast.catalog import capacity_metrics
from opslake.orchestration import runner
from opslake.settings import Settings
from opslake.simulate import SimulationConfig, simulate

START = date(2026, 3, 2)
DAYS = ["2026-03-02", "2026-03-03", "2026-03-04"]
FILESYSTEM = "node_filesystem_used_ratio"


@dataclass
class Forecasted:
    lake: Lake
    home: str
    results: dict[str, dg.ExecuteInProcessResult]
    seconds: dict[str, float]


def _materialize(home: str, day: str) -> tuple[dg.ExecuteInProcessResult, float]:
    began = time.perf_counter()
    result = dg.materialize(
        [forecasts, capacity], partition_key=day, resources={"lake": LakeResource(home=home)}
    )
    return result, time.perf_counter() - began


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Forecasted:
    """40 objects, three days at 5-minute resolution up to silver; forecasts made on the first
    day (one day of history: the fallback), on the last (baseline and Prophet) and on the day
    before the lake starts (nothing to forecast)."""
    home = str(tmp_path_factory.mktemp("lake"))
    settings = Settings.from_env({"OPSLAKE_HOME": home})
    lake = Lake.from_settings(settings)
    simulate(
        SimulationConfig(seed=7, entities=40, days=3, start=START, step_seconds=300),
        LandingZone.from_settings(settings, lake),
    )
    runner.materialize(settings, DAYS, ["+silver/metric_points"])
    results, seconds = {}, {}
    for day in (DAYS[0], DAYS[-1], "2026-03-01"):
        results[day], seconds[day] = _materialize(home, day)
    return Forecasted(lake, home, results, seconds)


def _read(lake: Lake, table: str, day: str) -> pd.DataFrame:
    return lake.read_table("gold", table, dts=[day]).to_pandas()


def _silver_series(lake: Lake, days: list[str]) -> pd.DataFrame:
    """Every (entity, metric) in silver with the hours it was observed in."""
    con = duckdb.connect()
    try:
        con.register("points", lake.dataset("silver", "metric_points", dts=days))
        return con.execute(
            "SELECT entity_id, metric, "
            "  count(DISTINCT time_bucket(INTERVAL 1 HOUR, ts)) AS hours "
            "FROM points WHERE isfinite(value) GROUP BY ALL"
        ).fetch_df()
    finally:
        con.close()


def _metadata(result: dg.ExecuteInProcessResult, name: str) -> dict:
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["gold", name])
    ]
    return event.materialization.metadata


def _capacity_names() -> set[str]:
    return set(capacity_metrics(load(Settings.from_env().metrics_dir, check_expressions=False)))


def test_materializations_succeed_quickly_and_report_figures(estate: Forecasted) -> None:
    for day, result in estate.results.items():
        assert result.success, day
    meta = _metadata(estate.results[DAYS[-1]], "forecasts")
    assert meta["rows"].value > 0 and meta["series"].value > 0
    assert "validation MASE" in meta["figures"].value
    assert {"baseline", "prophet"} <= set(meta["series_by_method"].value)
    cap_meta = _metadata(estate.results[DAYS[-1]], "capacity")
    assert {"exhausting_within_30_days", "at_risk_within_30_days", "top"} <= set(cap_meta)
    # The short-history day is what the daily pipeline's small lakes see: it must stay fast.
    assert estate.seconds[DAYS[0]] < 30, estate.seconds


def test_every_series_is_forecast_a_week_ahead_with_ordered_intervals(estate: Forecasted) -> None:
    day = DAYS[-1]
    rows = _read(estate.lake, "forecasts", day)
    silver = _silver_series(estate.lake, DAYS)
    baseline = rows[rows["method"] == "baseline"]
    got = set(zip(baseline["entity_id"], baseline["metric"], strict=True))
    assert got == set(zip(silver["entity_id"], silver["metric"], strict=True))
    assert (baseline.groupby(["entity_id", "metric"]).size() == HORIZON).all()
    first = pd.Timestamp(day, tz="UTC") + pd.Timedelta(days=1)
    assert rows["ts"].min() == first
    assert rows["ts"].max() == first + pd.Timedelta(hours=HORIZON - 1)
    assert (rows["made_on"] == date.fromisoformat(day)).all()
    values = rows[["lower_95", "lower_80", "point", "upper_80", "upper_95"]]
    assert values.notna().all().all()
    assert (values.diff(axis=1).iloc[:, 1:] >= 0).all().all()


def test_capacity_series_get_prophet_rows_and_a_capacity_row(estate: Forecasted) -> None:
    day = DAYS[-1]
    names = _capacity_names()
    assert FILESYSTEM in names
    silver = _silver_series(estate.lake, DAYS)
    flagged = silver[silver["metric"].isin(names)]
    wanted = set(zip(flagged["entity_id"], flagged["metric"], strict=True))
    # Prophet needs two days of observations: a VM retired on day two keeps the baseline only.
    fitted = flagged[flagged["hours"] >= 48]
    assert len(fitted) >= 10
    rows = _read(estate.lake, "forecasts", day)
    prophet = rows[rows["method"] == "prophet"]
    assert set(zip(prophet["entity_id"], prophet["metric"], strict=True)) == set(
        zip(fitted["entity_id"], fitted["metric"], strict=True)
    )
    assert (prophet.groupby(["entity_id", "metric"]).size() == HORIZON).all()
    table = _read(estate.lake, "capacity", day)
    assert set(zip(table["entity_id"], table["metric"], strict=True)) == wanted
    assert (table.loc[table["metric"] == FILESYSTEM, "capacity"] == 1.0).all()


def test_growing_filesystems_have_a_positive_slope_or_an_exhaustion_date(
    estate: Forecasted,
) -> None:
    table = _read(estate.lake, "capacity", DAYS[-1])
    disks = table[table["metric"] == FILESYSTEM]
    assert len(disks) >= 5
    # The simulator fills every filesystem by 0.05–0.4 % a day, over noise of 0.05 %.
    grows = (disks["slope_per_day"] > 0) | disks["exhaustion_date"].notna()
    assert grows.mean() >= 0.9, disks[["entity_id", "slope_per_day"]]
    dated = disks[disks["exhaustion_date"].notna()]
    assert (dated["earliest_exhaustion_date"] <= dated["exhaustion_date"]).all()
    assert (dated["days_left"] > 0).all() and (dated["days_left"] <= 90).all()


def test_one_day_of_history_falls_back_and_no_history_writes_nothing(estate: Forecasted) -> None:
    rows = _read(estate.lake, "forecasts", DAYS[0])
    assert set(rows["method"]) == {"naive"}
    assert (rows["lower_95"] <= rows["upper_95"]).all()
    assert len(_read(estate.lake, "capacity", DAYS[0])) > 0
    assert _read(estate.lake, "forecasts", "2026-03-01").empty
    assert _read(estate.lake, "capacity", "2026-03-01").empty
    meta = _metadata(estate.results["2026-03-01"], "forecasts")
    assert "no silver metric points" in meta["note"].value
