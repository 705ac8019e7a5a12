"""Issue 18's detector features, each causal: the tail cap on z-rarity (``gauss_cap``), the
capped z scale with records kept (``z_cap``), the weekly residual profile (``week_alpha``)
and the value density (``density_slots``). For each: a prefix scores as the full run does,
the run split into calls scores the same, and series in one matrix score as each alone."""

import dataclasses
import io
import json

import numpy as np
import pytest

from opslake.lake.storage import Lake
from opslake.ml import anomalies, detect
from opslake.settings import Settings

STEP = 1800
#: Every new feature off: the detector as it was before them.
BEFORE = detect.DetectorConfig(gauss_cap=0.0, z_cap=0.0, week_alpha=0.0, density_slots=0)
FEATURES = {"gauss_cap": 8.0, "z_cap": 11.0, "week_alpha": 0.3, "density_slots": 4096}


def _weekly(n: int = 48 * 7 * 5, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Half-hourly series with a daily cycle, quiet weekends, noise, a spike, a level shift and
    a gap (NaN)."""
    rng = np.random.default_rng(seed)
    stamps = np.datetime64("2026-01-05T00:00:00") + np.arange(n) * np.timedelta64(STEP, "s")
    hour = np.arange(n) * STEP / 3600.0
    day = (hour // 24).astype(int)
    values = 100 + 30 * np.sin(2 * np.pi * hour / 24) - 40 * (day % 7 >= 5)
    values += rng.normal(0, 3, n)
    values[1500] += 80
    values[2000:] += 25
    values[1200:1230] = np.nan
    return stamps, values


@pytest.mark.parametrize("name", ["all", *FEATURES])
def test_each_new_feature_is_causal_and_split_invariant(name):
    cfg = (
        detect.DetectorConfig()
        if name == "all"
        else dataclasses.replace(BEFORE, **{name: FEATURES[name]})
    )
    stamps, values = _weekly()
    whole = detect.score_series(stamps, values, cfg)
    assert np.isfinite(whole).all() and whole.max() > 0.5
    # A prefix scores as the full run does, whatever comes after it.
    cut = 48 * 7 * 3 + 7
    changed = values.copy()
    changed[cut:] = changed[cut:] * 3 + 50
    other = detect.score_series(stamps, changed, cfg)
    np.testing.assert_array_equal(whole[:cut], other[:cut])
    assert not np.array_equal(whole[cut:], other[cut:])
    # The run split into calls (cuts inside an hour, a day and the gap) scores the same.
    state = detect.DetectorState.new(1, float(STEP), cfg)
    parts = [
        detect.score_matrix(state, stamps[a:b], values[None, a:b])[0]
        for a, b in ((0, 99), (99, 101), (101, 1215), (1215, 3001), (3001, len(values)))
    ]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # Series in one matrix score as each alone.
    both = detect.score_matrix(
        detect.DetectorState.new(2, float(STEP), cfg), stamps, np.stack([values, changed])
    )
    np.testing.assert_array_equal(both[0], whole)
    np.testing.assert_array_equal(both[1], other)


def test_the_defaults_turn_every_new_feature_on():
    cfg = detect.DetectorConfig()
    assert all(getattr(cfg, k) for k in FEATURES)


def test_gauss_cap_keeps_short_history_wobbles_ordinary():
    rng = np.random.default_rng(3)
    n = 1500
    stamps = np.datetime64("2026-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")
    values = rng.normal(10, 1, n)
    values[1200] = 30.0  # a 20-sigma spike
    capped = detect.score_series(stamps, values, dataclasses.replace(BEFORE, gauss_cap=8.0))
    plain = detect.score_series(stamps, values, BEFORE)
    noise = np.r_[200:1190]
    assert (capped[noise] >= 0.6).sum() < (plain[noise] >= 0.6).sum()
    assert capped[1200] >= 0.9 and capped[1200] == capped.max()


def test_z_cap_ties_the_extremes_but_a_record_beyond_them_stays_a_record():
    rng = np.random.default_rng(4)
    n = 3000
    stamps = np.datetime64("2026-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")
    values = rng.normal(10, 1, n)
    values[[800, 1400]] = [40.0, 35.0]  # two far-out spikes, the second less so
    values[2500] = 200.0  # a record far beyond both
    cfg = dataclasses.replace(BEFORE, z_cap=11.0)
    capped = detect.score_series(stamps, values, cfg)
    # Beyond the cap the second spike ties with the first: as rare as one in two events.
    assert capped[1400] < capped[800]
    assert capped[2500] >= capped[800] - 1e-9 and capped[2500] >= 0.9


def test_week_profile_finds_a_weekday_that_looks_like_a_weekend():
    rng = np.random.default_rng(5)
    n = 48 * 7 * 6
    stamps = np.datetime64("2026-01-05T00:00:00") + np.arange(n) * np.timedelta64(STEP, "s")
    hour = np.arange(n) * STEP / 3600.0
    day = (hour // 24).astype(int)
    values = 100 + 30 * np.sin(2 * np.pi * hour / 24) - 40 * (day % 7 >= 5)
    values += rng.normal(0, 3, n)
    holiday = day == 7 * 5 + 2  # a Wednesday as quiet as a Sunday
    values[holiday] -= 40
    normal = np.r_[48 * 7 * 3 : 48 * 7 * 5]
    weekly = detect.score_series(stamps, values, dataclasses.replace(BEFORE, week_alpha=0.3))
    daily = detect.score_series(stamps, values, BEFORE)
    # With only a daily profile every weekend is as odd as the holiday; with the week's, not.
    assert daily[holiday].max() < daily[normal].max()
    assert weekly[holiday].max() > weekly[normal].max()


def test_density_finds_a_new_level_and_lets_it_become_the_new_normal():
    # A quantised flat series (cloud metrics often are) with rare steps between two levels,
    # then a step to a level it has never been at, where it stays.
    n = 4000
    stamps = np.datetime64("2026-01-01T00:00:00") + np.arange(n) * np.timedelta64(300, "s")
    rng = np.random.default_rng(6)
    values = np.where(rng.random(n) < 0.02, 3.0, 2.0)
    values[3000:] = 5.0
    cfg = dataclasses.replace(BEFORE, density_slots=4096, density_width=0.35)
    state = detect.DetectorState.new(1, 300.0, cfg)
    feats = []
    orig = detect._density

    def spy(*args):
        out = orig(*args)
        feats.append(np.where(out[1], out[0], np.nan))
        return out

    detect._density = spy
    try:
        detect.score_matrix(state, stamps, values[None, :])
    finally:
        detect._density = orig
    density = np.concatenate(feats, axis=1)[0]
    old_steps = np.flatnonzero(values[:3000] == 3.0)
    old_steps = old_steps[old_steps > 1000]
    assert density[3000] > 0.9  # a level never seen
    assert density[3000] > density[old_steps].max()  # the old steps are familiar
    assert density[3500:].max() < 0.5  # the new level is the new normal


def test_a_state_saved_before_the_new_features_carries_on(tmp_path):
    """A lake whose last saved state came from issue 6's detector (its config, no arrays of
    the new features) scores the next day with the current one through load and align."""
    from tests.unit.test_anomalies import _points

    lake = Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(tmp_path)}))
    first = anomalies.score_day(lake, "2026-11-20", _points(1440))
    path = lake.path(anomalies.STATE_DIR, "dt=2026-11-20.npz")
    with np.load(io.BytesIO(lake.read_bytes(path)), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    for name in (
        "z_top",
        "density_w",
        "density_counts",
        "density_hist",
        "density_recent",
        "week_profile",
        "week_acc",
        "week_bin",
    ):
        del arrays[name]
    for name in (
        "gauss_cap",
        "z_cap",
        "week_alpha",
        "week_bin_s",
        "density_slots",
        "density_width",
    ):
        del meta["config"][name]
    meta["config"].update(damp=0.8, feature_suppress=500)
    assert arrays["counts"].shape[1:] == (4, 100) and arrays["feature_recent"].shape[1:] == (4, 500)
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta)), **arrays)
    lake.put_atomic(path, [buf.getvalue()])
    nxt = anomalies.score_day(lake, "2026-11-21", _points(600, spike_at=500, day_offset=1))
    assert nxt.keys == first.keys and np.isfinite(nxt.state.density_w).all()
    assert nxt.state.config == detect.DetectorConfig()
    events = [r for r in nxt.anomalies.to_pylist() if r["is_event"]]
    assert events and {r["entity_id"] for r in events} == {"host-1"}


def test_density_scores_do_not_depend_on_how_many_series_are_scored_together():
    """The chunk width follows the number of series scored at once (a day shard scores fewer
    together): with few hashed slots, bins that share a slot must count alike whether the
    earlier point fell in this chunk or an earlier one."""
    config = dataclasses.replace(detect.DetectorConfig(), density_slots=8)
    rng = np.random.default_rng(5)
    steps = 1440
    ts = np.datetime64("2026-11-20T00:00") + np.arange(steps) * np.timedelta64(60, "s")
    values = np.round(rng.normal(0, 1, (1500, steps)).cumsum(axis=1), 1)
    many = detect.score_matrix(detect.DetectorState.new(1500, 60.0, config), ts, values)
    few = detect.score_matrix(detect.DetectorState.new(20, 60.0, config), ts, values[:20])
    np.testing.assert_array_equal(many[:20], few)
