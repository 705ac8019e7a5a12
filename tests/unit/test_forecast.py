"""Forecasters, metrics, capacity exhaustion and backtests (opslake.ml.forecast, .backtest)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from opslake.errors import InputError, NotFoundError
from opslake.ml.backtest import (
    Panel,
    backtest_nab,
    estate_panel,
    nab_panels,
    rolling_backtest,
    summarise,
)
from opslake.ml.forecast import (
    baseline_forecast,
    capacity_exhaustion,
    coverage,
    infer_step,
    interval_width,
    mase,
    prophet_forecast,
    season_length,
    seasonal_naive,
    smape,
)

NAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab" / "data" / "realKnownCause"
DAY = 24  # hourly samples per day


def hourly(n: int, start: str = "2026-01-05") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="h")


def trend_season_noise(series: int, n: int, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return (20 + 0.05 * t + 4 * np.sin(2 * np.pi * t / DAY))[None, :] + rng.normal(
        0, noise, (series, n))


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
    y = 50 + 3 * np.sin(2 * np.pi * np.arange(20 * DAY) / DAY)[None, :] + rng.normal(
        0, 2, (200, 20 * DAY))
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
    scores = [rolling_backtest(Panel("p", pd.Timestamp("2026-01-05"), 3600, ["a", "b"], v),
                               DAY, 2, prophet_rows=[]) for v in (y, poisoned)]
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
    scores = pd.DataFrame({
        "panel": "p", "series": ["a", "b", "a", "b", "a"], "fold": 0,
        "method": ["seasonal_naive"] * 2 + ["baseline"] * 2 + ["prophet"],
        "mase": [1.0, 3.0, 0.5, 1.5, 0.8], "smape": 1.0,
    })
    figures = summarise(scores)
    assert figures["baseline"]["mase_ratio"] == pytest.approx(0.5)
    assert figures["prophet"]["mase_ratio"] == pytest.approx(0.8)  # only series a was forecast
    assert figures["prophet"]["n_series"] == 1


def test_nab_panels_need_csv_files(tmp_path: Path):
    with pytest.raises(NotFoundError, match="realKnownCause"):
        nab_panels(tmp_path)


def test_estate_panel_averages_silver_points_per_entity_metric_and_hour(lake):
    ts = pd.date_range("2026-11-10", periods=180, freq="min", tz="UTC")
    frame = pd.DataFrame({
        "ts": np.concatenate([ts, ts[:60]]),
        "metric": ["node_cpu_utilisation_ratio"] * 180 + ["not_forecast"] * 60,
        "entity_id": "host-0001",
        "value": np.concatenate([np.repeat([0.1, 0.2, 0.3], 60), np.ones(60)]),
    })
    target = Path(lake.table_path("silver", "metric_points", {"dt": "2026-11-10"}))
    target.mkdir(parents=True)
    frame.to_parquet(target / "part-0.parquet")
    panel = estate_panel(lake)
    assert panel.ids == ["host-0001/node_cpu_utilisation_ratio"]
    assert panel.step_s == 3600 and panel.start == pd.Timestamp("2026-11-10")
    np.testing.assert_allclose(panel.values, [[0.1, 0.2, 0.3]])
