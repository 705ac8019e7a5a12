"""Retraining without Dagster: silver days, skipping a young lake, due / not due / not again."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from opslake.lake.schemas import LABELS, METRIC_POINTS
from opslake.lake.storage import Lake
from opslake.ml import registry, risk, training
from opslake.settings import Settings

DAYS = ["2026-11-01", "2026-11-02"]
STEP_MIN = 5


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(tmp_path)}))


def _write_points(lake: Lake, day: str, seed: int = 0) -> None:
    """Six VMs whose CPU, requests and latency follow one daily load, every five minutes."""
    rng = np.random.default_rng(seed)
    steps = 24 * 60 // STEP_MIN
    start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)
    ts = [start + timedelta(minutes=STEP_MIN * i) for i in range(steps)]
    load = 0.5 + 0.35 * np.sin(2 * np.pi * np.arange(steps) / steps)
    rows: dict[str, list] = {"ts": [], "metric": [], "entity_id": [], "value": []}
    for i, level in enumerate([0.5, 0.7, 0.9, 1.1, 1.3, 1.5]):
        noisy = load + rng.normal(0, 0.03, steps)
        for metric, values in (
            ("node_cpu_utilisation_ratio", level * (0.3 + 0.6 * noisy)),
            ("http_requests_per_second", 100 * level * noisy),
            ("http_request_duration_p95_seconds", 0.1 + 0.05 * noisy),
        ):
            rows["ts"] += ts
            rows["metric"] += [metric] * steps
            rows["entity_id"] += [f"vm-{i:04d}"] * steps
            rows["value"] += values.tolist()
    n = len(rows["ts"])
    table = pa.table(
        {
            **rows,
            "labels": pa.nulls(n, LABELS),
            "source": pa.nulls(n, pa.string()),
            "batch_id": pa.nulls(n, pa.string()),
        },
        schema=METRIC_POINTS,
    )
    lake.write_table(table, "silver", "metric_points", {"dt": day})


def test_silver_days_join_the_tables_and_leave_out_today(lake: Lake) -> None:
    today = datetime.now(UTC).date().isoformat()
    for table, day in (("metric_points", DAYS[0]), ("metric_points", today), ("events", DAYS[1])):
        lake.write_table(pa.table({"x": [1]}), "silver", table, {"dt": day})
    assert training.silver_days(lake, ("metric_points", "events")) == DAYS
    assert training.silver_days(lake, ("tickets",)) == []
    assert training.day_end("2026-11-02") == datetime(2026, 11, 3, tzinfo=UTC)


def test_a_young_lake_is_skipped_with_what_to_do(lake: Lake) -> None:
    _write_points(lake, DAYS[0])
    detector = training.retrain_multivariate(lake)
    assert detector.skipped.startswith("1 complete day(s) of silver metric points")
    assert detector.version is None
    incident = training.retrain_incident_risk(lake)
    assert "training needs 3" in incident.skipped
    assert registry.models(lake) == []
    assert risk.champion_scores(lake, date.fromisoformat(DAYS[0])) is None  # nothing to score


def test_a_challenger_is_promoted_then_kept_until_due_and_not_trained_twice_on_the_same_data(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed, day in enumerate(DAYS):
        _write_points(lake, day, seed)
    first = training.retrain_multivariate(lake, by="test")
    assert first.verdict is None and first.decision.promoted and first.version.version == 1
    assert first.challenger.train_days == DAYS[:1] and first.challenger.test_day == DAYS[1]
    # No ground truth in this lake: the held-out day is judged by its false-alarm share.
    assert first.version.primary_metric == "alarm_share"
    assert 0 <= first.challenger.metrics["alarm_share"] < 0.1
    assert first.version.created_by == "test" and first.end == training.day_end(DAYS[1])

    again = training.retrain_multivariate(lake)
    assert again.verdict is not None and not again.verdict.retrain and again.version is None

    forced = training.retrain_multivariate(lake, force=True)
    assert forced.verdict is None and forced.version.version == 2
    # Due (with a negative age limit every champion is), but v2 already saw this data.
    monkeypatch.setattr(training, "MAX_AGE", timedelta(days=-1))
    due = training.retrain_multivariate(lake)
    assert due.verdict.retrain and due.version is None
    assert "but v2 was already trained on silver up to 2026-11-03 00:00 UTC" in due.not_again
    assert len(registry.versions(lake, training.MULTIVARIATE_MODEL)) == 2
