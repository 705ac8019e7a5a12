"""Forecasters, metrics, capacity exhaustion and backtests (opslake.ml.forecast.*, .backtest)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opslake.errors import ConfigError, InputError, NotFoundError
from opslake.metrics_catalog.loader import load, load_texts
from opslake.ml.backtest import (
    Panel,
    backtest_estate,
    backtest_nab,
    estate_panel,
    nab_panels,
    rolling_backtest,
    summarise,
)
from opslake.ml.forecast import baseline as baseline_mod
from opslake.ml.forecast.baseline import baseline_forecast
from opslake.ml.forecast.capacity import capacity_exhaustion
from opslake.ml.forecast.catalog import CapacityMetric, capacity_metrics
from opslake.ml.forecast.common import infer_step, season_length
from opslake.ml.forecast.daily import capacity_frame, daily_forecasts
from opslake.ml.forecast.metrics import coverage, interval_width, mase, smape
from opslake.ml.forecast.naive import naive_forecast, seasonal_naive
from opslake.ml.forecast.prophet import prophet_forecast

REPO_METRICS = Path(__file__).resolve().parents[2] / "metrics"
NAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab" / "data" / "realKnownCause"
DAY = 24  # hourly samples per day


def hourly(n: int, start: str = "2026-01-05") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="h")


def trend_season_noise(series: int, n: int, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return (20 + 0.05 * t + 4 * np.sin(2 * np.pi * t / DAY))[None, :] + rng.normal(
        0, noise, (series, n)
    )


# -- metrics -----------------------------------------------------------------------------------
def test_seasonal_naive_is_exact_on_a_perfectly_seasonal_series():
    y = np.tile(np.arange(DAY, dtype=float), 5)[None, :]
    history, actual = y[:, :-DAY], y[:, -DAY:]
    fc = seasonal_naive(history, DAY, DAY)
    np.testing.assert_allclose(fc.point, actual)
    assert smape(actual, fc.point)[0] == 0
    # In-sample seasonal differences are all zero: no scale, so MASE is undefined, not infinite.
    assert np.isnan(mase(actual, fc.point, history, DAY)[0])


def test_mase_smape_coverage_and_width_on_hand_made_arrays():
    history = np.array([[0.0, 2.0, 2.0, 4.0]])  # season 1: naive MAE = (2 + 0 + 2) / 3
    actual = np.array([[4.0, 4.0]])
    predicted = np.array([[5.0, 2.0]])
    assert mase(actual, predicted, history, 1)[0] == pytest.approx(1.5 / (4 / 3))
    assert smape(actual, predicted)[0] == pytest.approx(100 * (2 / 9 + 4 / 6) / 2)
    assert smape(np.zeros((1, 2)), np.zeros((1, 2)))[0] == 0
    lower, upper = np.array([[3.0, 4.5]]), np.array([[5.0, 6.0]])
    assert coverage(actual, lower, upper)[0] == 0.5
    assert interval_width(lower, upper, history, 1)[0] == pytest.approx(1.75 / (4 / 3))
    # A missing actual is skipped, not counted as a miss.
    assert coverage(np.array([[4.0, np.nan]]), lower, upper)[0] == 1.0


def test_step_and_season_are_inferred_from_timestamps():
    stamps = pd.date_range("2026-01-01", periods=10, freq="5min").delete([3, 4])
    assert infer_step(stamps) == 300
    assert season_length(300) == 288
    with pytest.raises(InputError):
        infer_step(stamps[:1])


# -- baseline ----------------------------------------------------------------------------------
def test_baseline_beats_seasonal_naive_on_trend_season_noise():
    y = trend_season_noise(30, 15 * DAY)
    history, actual = y[:, :-DAY], y[:, -DAY:]
    base = baseline_forecast(history, DAY, DAY)
    naive = seasonal_naive(history, DAY, DAY)
    assert base.point.shape == (30, DAY)
    base_mase = mase(actual, base.point, history, DAY).mean()
    naive_mase = mase(actual, naive.point, history, DAY).mean()
    assert base_mase < 0.85 * naive_mase


def test_baseline_intervals_cover_near_nominal_on_gaussian_noise():
    rng = np.random.default_rng(1)
    y = (
        50
        + 3 * np.sin(2 * np.pi * np.arange(20 * DAY) / DAY)[None, :]
        + rng.normal(0, 2, (200, 20 * DAY))
    )
    history, actual = y[:, :-DAY], y[:, -DAY:]
    fc = baseline_forecast(history, DAY, DAY, levels=(0.8, 0.95))
    assert coverage(actual, *fc.bounds[0.8]).mean() == pytest.approx(0.8, abs=0.06)
    assert coverage(actual, *fc.bounds[0.95]).mean() == pytest.approx(0.95, abs=0.04)
    lo80, hi80 = fc.bounds[0.8]
    lo95, hi95 = fc.bounds[0.95]
    assert np.all(lo95 <= lo80) and np.all(hi80 <= hi95)


def test_baseline_tolerates_gaps_and_an_empty_series():
    y = trend_season_noise(3, 6 * DAY)
    y[0, 30:60] = np.nan
    y[2] = np.nan
    fc = baseline_forecast(y, DAY, DAY)
    assert np.isfinite(fc.point[:2]).all()
    assert np.isnan(fc.point[2]).all()


def test_baseline_refuses_a_history_shorter_than_three_seasons():
    with pytest.raises(InputError, match="shorter than 3 seasons"):
        baseline_forecast(np.ones((1, 2 * DAY)), DAY, DAY)


# -- capacity ----------------------------------------------------------------------------------
def test_capacity_exhaustion_finds_the_crossing_of_a_linear_ramp():
    stamps = hourly(30 * DAY)
    rng = np.random.default_rng(2)
    used = 40 + 1.0 * np.arange(len(stamps)) / DAY + rng.normal(0, 0.3, len(stamps))
    found = capacity_exhaustion(stamps, used, capacity=100, horizon="120D")
    expected = stamps[0] + pd.Timedelta(days=60)  # 40 % + 1 % a day reaches 100 % on day 60
    assert found.slope_per_day == pytest.approx(1.0, rel=0.02)
    assert abs(found.point - expected) < pd.Timedelta(hours=18)
    assert found.earliest is not None and found.earliest <= found.point
    assert capacity_exhaustion(stamps, used, capacity=100, horizon="10D").point is None


@pytest.mark.parametrize("drift", [0.0, -0.5])
def test_capacity_exhaustion_is_none_for_flat_or_shrinking_usage(drift):
    stamps = hourly(20 * DAY)
    rng = np.random.default_rng(3)
    used = 55 + drift * np.arange(len(stamps)) / DAY + rng.normal(0, 0.5, len(stamps))
    found = capacity_exhaustion(stamps, used, capacity=100, horizon="365D")
    assert found.point is None and found.earliest is None


# -- Prophet -----------------------------------------------------------------------------------
def test_prophet_intervals_contain_most_actuals():
    y = trend_season_noise(1, 10 * DAY, seed=4)[0]
    stamps = hourly(len(y))
    fc = prophet_forecast(stamps[:-DAY], y[:-DAY], DAY, levels=(0.8, 0.95), samples=200)
    actual = y[None, -DAY:]
    assert fc.point.shape == (1, DAY)
    assert coverage(actual, *fc.bounds[0.95])[0] >= 0.8
    assert mase(actual, fc.point, y[None, :-DAY], DAY)[0] < 1.0


# -- backtests ---------------------------------------------------------------------------------
def test_rolling_backtest_never_looks_ahead():
    y = trend_season_noise(2, 10 * DAY)
    poisoned = y.copy()
    poisoned[:, -DAY:] = 1e9  # only ever an actual of the last fold, never a history
    scores = [
        rolling_backtest(
            Panel("p", pd.Timestamp("2026-01-05"), 3600, ["a", "b"], v), DAY, 2, prophet_rows=[]
        )
        for v in (y, poisoned)
    ]
    first = [s[s["fold"] == 0].drop(columns="panel") for s in scores]
    pd.testing.assert_frame_equal(first[0], first[1])


@pytest.fixture
def nab_sample(tmp_path: Path) -> Path:
    if not NAB.is_dir():
        pytest.skip(f"NAB data not found at {NAB}")
    for name in ("ambient_temperature_system_failure", "ec2_request_latency_system_failure"):
        shutil.copy(NAB / f"{name}.csv", tmp_path)
    return tmp_path


def test_backtest_on_nab_files_beats_seasonal_naive(nab_sample: Path):
    panels = nab_panels(nab_sample)
    assert [p.step_s for p in panels] == [3600, 300]
    report = backtest_nab(nab_sample, folds=2)
    methods = report["methods"]
    assert set(methods) == {"baseline", "prophet", "seasonal_naive"}
    assert methods["seasonal_naive"]["mase_ratio"] == pytest.approx(1.0)
    assert methods["baseline"]["mase_ratio"] < 1.0
    assert methods["prophet"]["mase_ratio"] < 1.0
    assert methods["baseline"]["n_series"] == 2 and methods["baseline"]["n_folds"] == 2
    assert 0.5 < methods["baseline"]["coverage_0.95"] <= 1.0


def test_summarise_pairs_each_method_with_seasonal_naive_on_the_same_cuts():
    scores = pd.DataFrame(
        {
            "panel": "p",
            "series": ["a", "b", "a", "b", "a"],
            "fold": 0,
            "method": ["seasonal_naive"] * 2 + ["baseline"] * 2 + ["prophet"],
            "mase": [1.0, 3.0, 0.5, 1.5, 0.8],
            "smape": 1.0,
        }
    )
    figures = summarise(scores)
    assert figures["baseline"]["mase_ratio"] == pytest.approx(0.5)
    assert figures["prophet"]["mase_ratio"] == pytest.approx(0.8)  # only series a was forecast
    assert figures["prophet"]["n_series"] == 1


def test_nab_panels_need_csv_files(tmp_path: Path):
    with pytest.raises(NotFoundError, match="realKnownCause"):
        nab_panels(tmp_path)


def test_estate_panel_averages_silver_points_per_entity_metric_and_hour(lake):
    ts = pd.date_range("2026-11-10", periods=180, freq="min", tz="UTC")
    frame = pd.DataFrame(
        {
            "ts": np.concatenate([ts, ts[:60]]),
            "metric": ["node_cpu_utilisation_ratio"] * 180 + ["not_forecast"] * 60,
            "entity_id": "host-0001",
            "value": np.concatenate([np.repeat([0.1, 0.2, 0.3], 60), np.ones(60)]),
        }
    )
    target = Path(lake.table_path("silver", "metric_points", {"dt": "2026-11-10"}))
    target.mkdir(parents=True)
    frame.to_parquet(target / "part-0.parquet")
    panel = estate_panel(lake)
    assert panel.ids == ["host-0001/node_cpu_utilisation_ratio"]
    assert panel.step_s == 3600 and panel.start == pd.Timestamp("2026-11-10")
    np.testing.assert_allclose(panel.values, [[0.1, 0.2, 0.3]])


def test_estate_panel_window_fixes_the_grid_and_reads_only_its_days(lake):
    ts = pd.date_range("2026-11-10 05:00", periods=3, freq="h", tz="UTC")
    for day, back, value in (("2026-11-09", 1, 9.0), ("2026-11-10", 0, 1.0)):
        frame = pd.DataFrame(
            {"ts": ts - pd.Timedelta(days=back), "metric": "m", "entity_id": "a/b", "value": value}
        )
        target = Path(lake.table_path("silver", "metric_points", {"dt": day}))
        target.mkdir(parents=True)
        frame.to_parquet(target / "part-0.parquet")
    end = pd.Timestamp("2026-11-11")
    panel = estate_panel(lake, None, window=(end - pd.Timedelta(days=1), end))
    assert panel.ids == ["a/b/m"] and panel.start == pd.Timestamp("2026-11-10")
    assert panel.values.shape == (1, 24)
    assert np.nansum(panel.values) == 3.0 and np.isnan(panel.values[0, -1])
    with pytest.raises(NotFoundError, match="materialize"):
        estate_panel(lake, None, window=(end, end + pd.Timedelta(days=1)))


# -- the catalog's capacity flag ---------------------------------------------------------------
CAPACITY_YAML = """\
family: hand
category: cloud
owner: team:test
model: metric_points
metrics:
  - id: t.disk.used
    names: {zh-CN: 盘, en: Disk, zh-TW: 盤}
    description: Disk used.
    unit: ratio
    type: simple
    measure: {agg: max, expr: value}
    filter: metric = 'disk_used_ratio' AND object_type IN ('host', 'vm')
    tags: [capacity_planning]
  - id: t.pool.bytes
    names: {zh-CN: 池, en: Pool, zh-TW: 池}
    description: Pool bytes.
    unit: bytes
    type: simple
    measure: {agg: last, expr: value}
    filter: metric IN ('pool_used_bytes', 'pool_free_bytes')
  - id: t.pool.share
    names: {zh-CN: 池比, en: Pool share, zh-TW: 池比}
    description: Pool share.
    unit: ratio
    type: ratio
    numerator: t.pool.bytes
    denominator: t.pool.bytes
    tags: [capacity_planning]
  - id: t.cpu
    names: {zh-CN: 处理器, en: CPU, zh-TW: 處理器}
    description: CPU, not for capacity planning.
    unit: ratio
    type: simple
    measure: {agg: avg, expr: value}
    filter: metric = 'cpu_ratio'
"""


def test_capacity_metrics_reads_raw_names_from_the_tagged_definitions():
    found = capacity_metrics(load_texts({"hand.yaml": CAPACITY_YAML}, check_expressions=False))
    assert set(found) == {"disk_used_ratio", "pool_used_bytes", "pool_free_bytes"}
    assert found["disk_used_ratio"] == CapacityMetric("disk_used_ratio", ("t.disk.used",), 1.0)
    # Through a ratio: the raw series are bytes, which have no ceiling of their own.
    assert found["pool_used_bytes"].catalog_ids == ("t.pool.share",)
    assert found["pool_used_bytes"].capacity is None


def test_capacity_metrics_name_the_fix_for_a_tag_without_a_metric_filter():
    text = CAPACITY_YAML.replace(
        "    filter: metric = 'cpu_ratio'\n",
        "    filter: object_type = 'host'\n    tags: [capacity_planning]\n",
    )
    metrics = load_texts({"hand.yaml": text}, check_expressions=False)
    with pytest.raises(ConfigError, match=r"t\.cpu is tagged capacity_planning.*remove the tag"):
        capacity_metrics(metrics)
    assert "cpu_ratio" not in capacity_metrics(metrics, strict=False)


def test_the_repository_flags_filesystems_and_storage_pools_for_capacity_planning():
    found = capacity_metrics(load(REPO_METRICS, check_expressions=False))
    assert {"node_filesystem_used_ratio", "storage_pool_used_ratio"} <= set(found)
    assert found["node_filesystem_used_ratio"].catalog_ids == ("cloud.node.filesystem_used",)
    assert all(c.capacity == 1.0 for c in found.values())


# -- the daily forecasts -----------------------------------------------------------------------
def test_baseline_gives_the_same_numbers_in_batches(monkeypatch):
    y = trend_season_noise(7, 5 * DAY, seed=5)
    whole = baseline_forecast(y, DAY, DAY)
    monkeypatch.setattr(baseline_mod, "_BATCH_ELEMENTS", 32 * 24 * DAY * 3)  # 3 series a batch
    batched = baseline_forecast(y, DAY, DAY)
    np.testing.assert_allclose(batched.point, whole.point)
    np.testing.assert_allclose(batched.bounds[0.95][1], whole.bounds[0.95][1])
    np.testing.assert_allclose(batched.score, whole.score)


def test_baseline_intervals_stay_open_and_widen_beyond_the_history():
    y = trend_season_noise(4, 4 * DAY, seed=6)
    fc = baseline_forecast(y, 7 * DAY, DAY)  # a week ahead of four days
    lower, upper = fc.bounds[0.8]
    width = upper - lower
    assert (width > 0).all()
    assert (width[:, -DAY:].mean(axis=1) > width[:, :DAY].mean(axis=1)).all()


def test_naive_forecast_carries_the_last_value_with_widening_intervals():
    y = np.array([[1.0, 2.0, 1.5, 2.5, np.nan], [np.nan] * 5])
    fc = naive_forecast(y, 4)
    np.testing.assert_allclose(fc.point[0], 2.5)
    assert np.isnan(fc.point[1]).all()
    lower, upper = fc.bounds[0.95]
    assert (np.diff(upper[0] - lower[0]) > 0).all()


def test_daily_forecasts_choose_the_method_by_each_series_history():
    n = 4 * DAY
    stamps = pd.date_range("2026-03-01", periods=n, freq="h", tz="UTC")
    y = trend_season_noise(4, n, seed=7)
    y[1, : n - DAY] = np.nan  # one day of history
    y[2, : n - 2 * DAY - 6] = np.nan  # two and a quarter days
    y[3, :-2] = np.nan  # two values
    made = daily_forecasts(
        ["h/a/m", "h/b/m", "h/c/m", "h/d/m"],
        stamps,
        y,
        2 * DAY,
        date(2026, 3, 4),
        prophet_metrics={"m": None},
        max_prophet=0,
    )
    methods = dict(zip(made.series["id"], made.series["method"], strict=True))
    assert methods == {"h/a/m": "baseline", "h/b/m": "naive", "h/c/m": "seasonal_naive"}
    assert made.skipped == 1 and made.prophet_capped == 1
    rows = made.rows
    assert set(rows["entity_id"]) == {"h/a", "h/b", "h/c"} and set(rows["metric"]) == {"m"}
    assert rows["ts"].min() == pd.Timestamp("2026-03-05", tz="UTC")
    assert len(rows) == 3 * 2 * DAY
    ordered = rows[["lower_95", "lower_80", "point", "upper_80", "upper_95"]].diff(axis=1)
    assert (ordered.iloc[:, 1:] >= 0).all().all()
    assert np.isfinite(made.series.set_index("id").loc["h/a/m", "insample_mase"])


def test_prophet_gives_the_same_intervals_run_after_run():
    y = trend_season_noise(1, 4 * DAY, seed=8)[0]
    stamps = hourly(len(y))
    first, second = (prophet_forecast(stamps, y, DAY, samples=50) for _ in range(2))
    np.testing.assert_array_equal(first.bounds[0.8][0], second.bounds[0.8][0])


def test_capacity_frame_dates_a_growing_series_and_skips_others():
    n = 10 * DAY
    stamps = pd.date_range("2026-03-01", periods=n, freq="h", tz="UTC")
    grow = 0.5 + 0.01 * np.arange(n) / DAY  # 1 % a day from 50 %: full 50 days on
    flat = np.full(n, 0.3)
    spec = {"used": CapacityMetric("used", ("t.used",), 1.0)}
    frame = capacity_frame(
        ["a/used", "b/used", "c/other"],
        stamps,
        np.vstack([grow, flat, grow]),
        spec,
        date(2026, 3, 10),
    )
    assert list(frame["entity_id"]) == ["a", "b"]
    a, b = frame.iloc[0], frame.iloc[1]
    assert a["slope_per_day"] == pytest.approx(0.01, rel=0.01)
    assert a["days_left"] == pytest.approx(40, abs=1.5)
    assert a["earliest_exhaustion_date"] <= a["exhaustion_date"]
    assert a["catalog_metrics"] == ["t.used"] and a["capacity"] == 1.0
    assert b["exhaustion_date"] is None and pd.isna(b["days_left"])


def test_backtest_estate_runs_prophet_on_capacity_series_and_reports_both_groups(lake):
    n = 6 * DAY
    ts = pd.date_range("2026-11-10", periods=n, freq="h", tz="UTC")
    y = trend_season_noise(2, n, seed=9) / 100
    frame = pd.concat(
        [
            pd.DataFrame({"ts": ts, "metric": metric, "entity_id": "host-0001", "value": y[i]})
            for i, metric in enumerate(("node_filesystem_used_ratio", "node_cpu_utilisation_ratio"))
        ]
    )
    frame["dt"] = frame["ts"].dt.date.astype(str)
    for day, part in frame.groupby("dt"):
        target = Path(lake.table_path("silver", "metric_points", {"dt": day}))
        target.mkdir(parents=True)
        part.drop(columns="dt").to_parquet(target / "part-0.parquet")
    report = backtest_estate(lake, folds=1, metrics_dir=REPO_METRICS)
    groups = report["by_capacity"]
    assert report["prophet_on"] == "capacity" and groups["prophet_series"] == 1
    assert set(groups["capacity"]) == {"baseline", "prophet", "seasonal_naive"}
    assert set(groups["other"]) == {"baseline", "seasonal_naive"}
    assert groups["capacity"]["prophet"]["n_series"] == 1


def test_backtest_cli_prints_ratios_against_seasonal_naive(tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from opslake.cli import app

    shutil.copy(NAB / "ambient_temperature_system_failure.csv", tmp_path)
    result = CliRunner().invoke(app, ["ml", "backtest", "--nab", str(tmp_path), "--folds", "2"])
    assert result.exit_code == 0, result.output
    methods = json.loads(result.output)["nab"]["methods"]
    assert methods["seasonal_naive"]["mase_ratio"] == 1.0
    assert methods["baseline"]["mase_ratio"] < 1.0  # beats seasonal naive on this series
    missing = CliRunner().invoke(app, ["ml", "backtest"])
    assert isinstance(missing.exception, ConfigError) and "--nab" in str(missing.exception)
