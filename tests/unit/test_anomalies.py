"""Estate anomaly scoring: series grid, carried detector state, episodes and landed alerts."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pytest

from opslake.ingest.parsers import alertmanager
from opslake.lake.landing import LandingZone
from opslake.lake.schemas import METRIC_POINTS
from opslake.lake.storage import Lake
from opslake.ml import anomalies, detect
from opslake.settings import Settings

DAY = "2026-11-20"
T0 = datetime(2026, 11, 20, tzinfo=UTC)


def _points(minutes: int, *, spike_at: int | None = None, day_offset: int = 0) -> pa.Table:
    rng = np.random.default_rng(day_offset)
    rows = []
    for m in range(minutes):
        ts = T0 + timedelta(days=day_offset, minutes=m)
        for host, level in (("host-1", 0.3), ("host-2", 0.6)):
            value = level + 0.02 * np.sin(m / 60) + rng.normal(0, 0.005)
            if host == "host-1" and spike_at is not None and spike_at <= m < spike_at + 5:
                value = 0.99
            rows.append(
                {
                    "ts": ts,
                    "metric": "node_cpu_utilisation_ratio",
                    "entity_id": host,
                    "value": float(value),
                    "labels": [("job", "node"), ("cpu", "all")],
                    "source": "prometheus",
                    "batch_id": "b",
                }
            )
        # A point no CI owns is left out of scoring, not guessed.
        rows.append(
            {
                "ts": ts,
                "metric": "up",
                "entity_id": None,
                "value": 1.0,
                "labels": [],
                "source": "prometheus",
                "batch_id": "b",
            }
        )
    return pa.Table.from_pylist(rows, schema=METRIC_POINTS)


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(tmp_path)}))


def test_grid_keys_series_by_entity_metric_and_labels_without_source_labels():
    g = anomalies.grid(_points(30), T0, T0 + timedelta(days=1))
    assert g.keys == [
        "host-1|node_cpu_utilisation_ratio|cpu=all",
        "host-2|node_cpu_utilisation_ratio|cpu=all",
    ]
    assert g.values.shape == (2, 1440)
    assert np.isfinite(g.values[:, :30]).all() and np.isnan(g.values[:, 30:]).all()
    assert (
        anomalies.series_key("host-1", "node_cpu_utilisation_ratio", {"cpu": "all", "job": "node"})
        == g.keys[0]
    )


def test_a_spike_after_a_quiet_day_is_an_event_episode_and_lands_as_an_alert(lake):
    quiet = anomalies.score_day(lake, DAY, _points(1440))
    assert quiet.anomalies.num_rows == 0 or not any(quiet.anomalies["is_event"].to_pylist()[300:])
    nxt = (T0 + timedelta(days=1)).date().isoformat()
    scored = anomalies.score_day(lake, nxt, _points(600, spike_at=500, day_offset=1))
    events = [r for r in scored.anomalies.to_pylist() if r["is_event"]]
    assert events and {r["entity_id"] for r in events} == {"host-1"}
    assert min(r["ts"] for r in events) == T0 + timedelta(days=1, minutes=500)
    runs = anomalies.episodes(scored.anomalies)
    assert len(runs) == 1 and runs[0]["series"].startswith("host-1|")
    batch = anomalies.land_events(lake, nxt, runs, T0 + timedelta(days=2))
    parsed = alertmanager.parse(LandingZone(lake).read(batch), batch)
    assert not parsed.rejects
    row = parsed.table.to_pylist()[0]
    assert row["status"] == "resolved"  # the episode ended long before the run
    assert dict(row["labels"])["entity_id"] == "host-1"
    # The same episodes landed again are the same batch.
    again = anomalies.land_events(lake, nxt, runs, T0 + timedelta(days=2))
    assert again.batch_id == batch.batch_id


def test_state_is_saved_per_day_and_carried_so_two_days_equal_one_long_run(lake):
    day1, day2 = _points(1440), _points(1440, day_offset=1, spike_at=700)
    first = anomalies.score_day(lake, DAY, day1)
    saved = anomalies.load_state(lake, DAY)
    assert saved is not None and saved[0] == first.keys
    np.testing.assert_array_equal(saved[1].level_mean, first.state.level_mean)
    nxt = (T0 + timedelta(days=1)).date().isoformat()
    carried = anomalies.score_day(lake, nxt, day2)
    both = anomalies.grid(pa.concat_tables([day1, day2]), T0, T0 + timedelta(days=2))
    whole = anomalies.score_grid(both, None).anomalies
    second = whole.filter(
        pa.compute.greater_equal(
            whole["ts"], pa.scalar(T0 + timedelta(days=1), whole.schema.field("ts").type)
        )
    )
    assert carried.anomalies.num_rows > 0
    assert (
        carried.anomalies.select(["ts", "series", "score"]).to_pylist()
        == second.select(["ts", "series", "score"]).to_pylist()
    )


def test_series_with_gaps_score_the_same_however_they_are_split_into_calls():
    rng = np.random.default_rng(5)
    n, steps = 6, 3000
    ts = np.datetime64("2026-11-20T00:00") + np.arange(steps) * np.timedelta64(60, "s")
    values = rng.normal(0, 1, (n, steps)).cumsum(axis=1) + 50 * np.sin(np.arange(steps) / 229)
    values[rng.random((n, steps)) < 0.03] = np.nan  # scattered missing samples
    values[2, 1000:1400] = np.nan  # a long outage across a split
    values[4, :200] = np.nan  # a series that starts late
    whole = detect.score_matrix(detect.DetectorState.new(n, 60.0), ts, values)
    state = detect.DetectorState.new(n, 60.0)
    parts = [
        detect.score_matrix(state, ts[a:b], values[:, a:b])
        for a, b in ((0, 150), (150, 1001), (1001, 1777), (1777, steps))
    ]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)


def test_a_new_series_gets_a_fresh_state_beside_the_carried_ones(lake):
    anomalies.score_day(lake, DAY, _points(1440))
    keys, state = anomalies.load_state(lake, DAY)
    grown = anomalies.align(state, keys, [*keys, "host-9|x|"], 60, state.config)
    assert grown.n_series == 3
    np.testing.assert_array_equal(grown.level_mean[:2], state.level_mean)
    assert np.isnan(grown.level_mean[2])


def test_a_day_scored_in_slices_of_whole_series_equals_one_grid(lake, tmp_path):
    day1 = _points(1440)
    day2 = _points(1440, day_offset=1, spike_at=700)
    nxt = (T0 + timedelta(days=1)).date().isoformat()
    for day, points in ((DAY, day1), (nxt, day2)):
        # Silver order: metric, entity, labels, ts (the contract the slices rely on).
        lake.write_table(
            points.sort_by(
                [("metric", "ascending"), ("entity_id", "ascending"), ("ts", "ascending")]
            ),
            "silver",
            "metric_points",
            {"dt": day},
        )
    slices = list(anomalies.point_slices(lake, nxt, rows=1000))
    assert len(slices) >= 3
    pairs = [
        {(m, e) for m, e in zip(s["metric"].to_pylist(), s["entity_id"].to_pylist(), strict=True)}
        for s in slices
    ]
    for i, mine in enumerate(pairs):  # no (metric, entity) pair is cut between slices
        assert not any(mine & other for other in pairs[i + 1 :])
    previous = anomalies.score_slices(DAY, [day1], None)
    whole = anomalies.score_slices(nxt, [day2], (previous.keys, previous.state))
    sliced = anomalies.score_slices(nxt, slices, (previous.keys, previous.state))
    assert sliced.anomalies.num_rows > 0
    key = [("ts", "ascending"), ("series", "ascending")]
    assert sliced.anomalies.sort_by(key).equals(whole.anomalies.sort_by(key))
    assert sorted(sliced.keys) == sorted(whole.keys)
    order = [sliced.keys.index(k) for k in whole.keys]
    np.testing.assert_array_equal(sliced.state.level_mean[order], whole.state.level_mean)
    np.testing.assert_array_equal(sliced.state.profile[order], whole.state.profile)
