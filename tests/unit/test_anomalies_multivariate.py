"""The multi-metric champion in anomaly scoring: one function for the daily and live paths."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from opslake.assets import ml
from opslake.assets.resources import LakeResource
from opslake.ingest.parsers import alertmanager
from opslake.lake.landing import LandingZone
from opslake.lake.schemas import METRIC_POINTS
from opslake.lake.storage import Lake
from opslake.metrics_catalog.live import LIVE_POINTS
from opslake.ml import anomalies, multivariate, registry
from opslake.settings import Settings

T0 = datetime(2026, 11, 18, tzinfo=UTC)
DAY = "2026-11-20"
#: Two entity types; each entity's two metrics follow one daily load.
ENTITIES = {"vm-1": 0.5, "vm-2": 0.8, "vm-3": 1.1, "db-1": 0.6, "db-2": 0.9}


def _points(
    start: datetime, minutes: int, entities: list[str], *, seed: int, joint_from: int | None = None
) -> pa.Table:
    """One sample a minute of ``a`` and ``b`` per entity; from ``joint_from`` on, vm-1's ``a``
    is far above and its ``b`` far below what its load says (they move against each other)."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(minutes):
        ts = start + timedelta(minutes=m)
        load = 0.5 + 0.4 * np.sin(2 * np.pi * (ts - T0).total_seconds() / 86400)
        for entity in entities:
            level = ENTITIES[entity]
            a = level * load + rng.normal(0, 0.01)
            b = 100 * level * load + rng.normal(0, 1.0)
            if entity == "vm-1" and joint_from is not None and m >= joint_from:
                a, b = a + 0.6, b - 60
            rows += [
                {
                    "ts": ts,
                    "metric": metric,
                    "entity_id": entity,
                    "value": float(v),
                    "labels": [("job", "node")],
                    "source": "prometheus",
                    "batch_id": "b",
                }
                for metric, v in (("a", a), ("b", b))
            ]
    return pa.Table.from_pylist(rows, schema=METRIC_POINTS)


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(tmp_path)}))


@pytest.fixture(scope="module")
def model() -> multivariate.MultiMetricModel:
    train = _points(T0, 2 * 1440, list(ENTITIES), seed=1)
    return multivariate.fit(
        pa.table({c: train[c] for c in ("ts", "entity_id", "metric", "value")}).to_pandas(),
        min_rows=100,
    )


def _champion(lake: Lake, model: multivariate.MultiMetricModel) -> None:
    version = registry.register(
        lake,
        anomalies.MULTIVARIATE_MODEL,
        model,
        kind="MultiMetricModel",
        train_start=T0,
        train_end=T0 + timedelta(days=2),
        parameters={},
        features=["a", "b"],
        metrics={"roc_auc": 0.9},
        primary_metric="roc_auc",
    )
    registry.promote_if_better(lake, anomalies.MULTIVARIATE_MODEL, version.version)


def test_without_a_champion_the_rows_are_only_sorted_and_no_points_are_read(lake):
    scored = anomalies.score_day(
        lake, DAY, _points(T0 + timedelta(days=2), 120, ["vm-1"], seed=2), save=False
    )

    def unread() -> pa.Table:
        raise AssertionError("points read without a champion")

    out, version = anomalies.with_multivariate(lake, scored, unread)
    assert version == "none yet"
    assert out.anomalies.num_rows == scored.anomalies.num_rows
    assert set(out.anomalies["detector"].to_pylist()) <= {"single"}


def test_live_points_of_one_entity_raise_one_multivariate_episode_landed_once(lake, model):
    _champion(lake, model)
    # Today so far: only vm-1 has reported (no db at all), its metrics moving apart for the
    # last 20 minutes.
    live = _points(T0 + timedelta(days=2, hours=9), 120, ["vm-1"], seed=3, joint_from=100)
    scored, version = anomalies.with_multivariate(
        lake, anomalies.score_day(lake, DAY, live, save=False), live
    )
    assert version == "v1"
    rows = [r for r in scored.anomalies.to_pylist() if r["detector"] == "multivariate"]
    events = [r for r in rows if r["is_event"]]
    assert events and {r["entity_id"] for r in rows} == {"vm-1"}
    assert min(r["ts"] for r in events) >= T0 + timedelta(days=2, hours=9, minutes=100)
    assert all(r["score"] >= anomalies.MULTIVARIATE_EVENT for r in events)
    assert {"a", "b"} & set(events[0]["explanation"].removeprefix("metrics: ").split(", "))
    assert scored.anomalies["ts"].to_pylist() == sorted(scored.anomalies["ts"].to_pylist())
    runs = [r for r in anomalies.episodes(scored.anomalies) if r["detector"] == "multivariate"]
    assert len(runs) == 1 and runs[0]["series"] == "vm-1|multivariate|"
    at = T0 + timedelta(days=2, hours=11)
    batch = anomalies.land_events(lake, DAY, runs, at)
    parsed = alertmanager.parse(LandingZone(lake).read(batch), batch)
    labels = dict(parsed.table.to_pylist()[0]["labels"])
    assert labels["detector"] == "multivariate" and labels["entity_id"] == "vm-1"
    assert parsed.table.to_pylist()[0]["status"] == "firing"
    # The next live run with the same points lands the same notification: nothing new.
    assert anomalies.land_events(lake, DAY, runs, at).batch_id == batch.batch_id
    assert len(LandingZone(lake).batches(anomalies.SOURCE, DAY)) == 1


def test_the_live_prefix_scores_the_steps_it_has_as_the_daily_run_does(lake, model):
    _champion(lake, model)
    start = T0 + timedelta(days=2)
    day = _points(start, 600, list(ENTITIES), seed=4, joint_from=500)
    cut = start + timedelta(minutes=560)  # a 5-minute step boundary
    prefix = day.filter(pa.compute.less(day["ts"], pa.scalar(cut, day.schema.field("ts").type)))

    def multi(points: pa.Table) -> list[tuple]:
        table = anomalies.score_multivariate(model, points)
        return sorted(
            (r["ts"], r["entity_id"], round(r["score"], 12), r["is_event"])
            for r in table.to_pylist()
            if r["ts"] < cut
        )

    full = multi(day)
    assert any(event for *_, event in full)
    assert multi(prefix) == full


def _multivariate_alerts(lake: Lake, day: str) -> list[dict]:
    zone = LandingZone(lake)
    return [
        dict(r["labels"])
        for b in zone.batches(anomalies.SOURCE, day)
        for r in alertmanager.parse(zone.read(b), b).table.to_pylist()
        if dict(r["labels"])["detector"] == "multivariate"
    ]


def test_the_daily_and_the_live_asset_both_land_the_champions_events(tmp_path, model):
    lake = Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(tmp_path)}))
    resources = {"lake": LakeResource(home=str(tmp_path))}
    _champion(lake, model)
    order = [("metric", "ascending"), ("entity_id", "ascending"), ("ts", "ascending")]
    daily = _points(T0 + timedelta(days=2), 600, list(ENTITIES), seed=5, joint_from=500)
    lake.write_table(daily.sort_by(order), "silver", "metric_points", {"dt": DAY})
    result = dg.materialize([ml.anomalies_daily], resources=resources, partition_key=DAY)
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["multivariate_model"].value == "v1"
    assert {a["entity_id"] for a in _multivariate_alerts(lake, DAY)} == {"vm-1"}

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    live = _points(today, 120, ["vm-1", "vm-2"], seed=6, joint_from=100)
    lake.write_table(live, "silver", LIVE_POINTS, {"dt": today.date().isoformat()})
    result = dg.materialize([ml.anomalies_live], resources=resources)
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["multivariate_model"].value == "v1"
    assert {a["entity_id"] for a in _multivariate_alerts(lake, today.date().isoformat())} == {
        "vm-1"
    }
