"""Multi-metric detector: joint anomalies no single metric shows, calibration, pickling."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from opslake.errors import InputError
from opslake.ml import multivariate

START = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 3
MINUTES = DAYS * 24 * 60


def _entity(rng: np.random.Generator, entity: str, level: float) -> dict[str, np.ndarray]:
    """One VM a minute at a time: CPU, requests and latency all follow the same daily load."""
    minutes = np.arange(MINUTES)
    load = 0.5 + 0.35 * np.sin(2 * np.pi * minutes / 1440) + rng.normal(0, 0.03, MINUTES)
    return {
        "node_cpu_utilisation_ratio": level * (0.3 + 0.6 * load) + rng.normal(0, 0.01, MINUTES),
        "http_requests_per_second": 100 * level * load + rng.normal(0, 2, MINUTES),
        "http_request_duration_p95_seconds": 0.1 + 0.05 * load + rng.normal(0, 0.003, MINUTES),
    }


def _long(series: dict[str, dict[str, np.ndarray]]) -> pl.DataFrame:
    ts = pl.datetime_range(
        START, START + timedelta(minutes=MINUTES - 1), "1m", time_zone="UTC", eager=True
    )
    return pl.concat(
        [
            pl.DataFrame({"ts": ts, "entity_id": entity, "metric": metric, "value": values})
            for entity, metrics in series.items()
            for metric, values in metrics.items()
        ]
    )


@pytest.fixture(scope="module")
def data() -> tuple[pl.DataFrame, pl.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Two days to train on and a third day to score, for six VMs of different sizes."""
    rng = np.random.default_rng(7)
    series = {
        f"vm-{i:04d}": _entity(rng, f"vm-{i:04d}", level)
        for i, level in enumerate([0.5, 0.7, 0.9, 1.1, 1.3, 1.5])
    }
    points = _long(series)
    split = START + timedelta(days=2)
    return points.filter(pl.col("ts") < split), points.filter(pl.col("ts") >= split), series


@pytest.fixture(scope="module")
def model(data: tuple) -> multivariate.MultiMetricModel:
    return multivariate.fit(data[0], n_estimators=100)


def _at(scored: pl.DataFrame, entity: str, ts: datetime) -> dict:
    return scored.filter((pl.col("entity_id") == entity) & (pl.col("ts") == ts)).row(0, named=True)


def test_joint_anomaly_is_flagged_although_each_metric_is_in_range(
    data: tuple, model: multivariate.MultiMetricModel
) -> None:
    _, test, series = data
    vm = series["vm-0002"]
    day3 = 2 * 1440
    quiet, busy = day3 + 1080, day3 + 360  # load at its daily low and high
    broken, healthy = day3 + 600, day3 + 660  # 10:00 and 11:00 on the scored day
    cpu, req = "node_cpu_utilisation_ratio", "http_requests_per_second"
    # CPU as at the daily peak while requests are as at the daily low: neither value is unusual.
    broken_values = {
        cpu: vm[cpu][busy - 2 : busy + 3].mean(),
        req: vm[req][quiet - 2 : quiet + 3].mean(),
    }
    # The busy-but-healthy case: every metric at its peak together, as each day has it.
    healthy_values = {m: vm[m][busy - 2 : busy + 3].mean() for m in vm}
    for metric, value in broken_values.items():
        seen = data[0].filter((pl.col("entity_id") == "vm-0002") & (pl.col("metric") == metric))
        assert seen["value"].quantile(0.02) < value < seen["value"].quantile(0.98)

    def patch(frame: pl.DataFrame, minute: int, values: dict[str, float]) -> pl.DataFrame:
        ts = START + timedelta(minutes=minute)
        for metric, value in values.items():
            hit = (
                (pl.col("entity_id") == "vm-0002")
                & (pl.col("metric") == metric)
                & (pl.col("ts") >= ts)
                & (pl.col("ts") < ts + timedelta(minutes=5))
            )
            frame = frame.with_columns(value=pl.when(hit).then(value).otherwise(pl.col("value")))
        return frame

    scored = multivariate.score(
        model, patch(patch(test, broken, broken_values), healthy, healthy_values)
    )
    anomaly = _at(scored, "vm-0002", START + timedelta(minutes=broken))
    assert anomaly["score"] > 0.9
    assert set(anomaly["top_metrics"][:2]) == {cpu, req}
    assert _at(scored, "vm-0002", START + timedelta(minutes=healthy))["score"] < 0.9
    others = scored.filter(pl.col("ts") != START + timedelta(minutes=broken))
    assert (others["score"] < 0.9).mean() > 0.85
    assert others["score"].min() >= 0.0 and scored["score"].max() <= 1.0
    assert scored.height == 6 * 288 and scored["entity_type"].unique().to_list() == ["vm"]


def test_missing_metric_is_imputed_and_unknown_entities_are_skipped(
    data: tuple, model: multivariate.MultiMetricModel
) -> None:
    test = data[1].filter(pl.col("metric") != "http_request_duration_p95_seconds")
    stranger = test.filter(pl.col("entity_id") == "vm-0001").with_columns(entity_id=pl.lit("x-1"))
    scored = multivariate.score(model, pl.concat([test, stranger]).to_pandas())
    assert len(scored) == 6 * 288 and "x-1" not in set(scored["entity_id"])
    assert scored["score"].between(0, 1).all()
    assert (scored["score"] < 0.9).mean() > 0.8


def test_model_survives_pickling(data: tuple, model: multivariate.MultiMetricModel) -> None:
    clone = pickle.loads(pickle.dumps(model))
    assert clone.entities == [f"vm-{i:04d}" for i in range(6)]
    assert multivariate.score(clone, data[1]).equals(multivariate.score(model, data[1]))


def test_explicit_types_and_bad_input(data: tuple) -> None:
    train = data[0].filter(pl.col("ts") < START + timedelta(hours=12))
    types = {f"vm-{i:04d}": "web" if i < 3 else "batch" for i in range(6)}
    model = multivariate.fit(train, entity_types=types, n_estimators=20)
    assert sorted(model.types) == ["batch", "web"]
    with pytest.raises(InputError, match="lack the columns"):
        multivariate.fit(train.drop("value"))
    with pytest.raises(InputError, match="min_rows"):
        multivariate.fit(train, min_rows=10_000)
