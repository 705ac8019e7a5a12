"""Model registry: versions in the lake, champion/challenger with its log, integrity, drift."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from opslake.errors import InputError, NotFoundError
from opslake.lake.storage import Lake
from opslake.ml import registry
from opslake.settings import Settings

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 11, 8, tzinfo=UTC)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(tmp_path)}))


def _features(seed: int, shift: float = 0.0, n: int = 2000) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {"cpu": rng.normal(0.4 + shift, 0.1, n), "latency": rng.lognormal(-3.0, 0.5, n)}
    )


def _register(lake: Lake, auc: float, model: object = None, **kw: object) -> registry.ModelVersion:
    return registry.register(
        lake,
        "vm-anomaly",
        model if model is not None else {"weights": [auc]},
        kind="isolation_forest",
        train_start=START,
        train_end=END,
        parameters={"n_estimators": 100},
        features=["cpu", "latency"],
        metrics={"auc": auc, "f1": auc / 2},
        primary_metric="auc",
        profile=registry.profile(_features(0)),
        **kw,
    )


def test_versions_are_numbered_stored_and_listed(lake: Lake, tmp_path: Path) -> None:
    first, second = _register(lake, 0.80), _register(lake, 0.85, created_by="ci")
    assert (first.version, second.version) == (1, 2)
    base = tmp_path / "ml" / "models" / "vm-anomaly"
    assert {p.name for p in (base / "v2").iterdir()} == {"artifact.bin", "meta.json"}
    assert [v.version for v in registry.versions(lake, "vm-anomaly")] == [1, 2]
    assert registry.models(lake) == ["vm-anomaly"]
    stored = registry.version(lake, "vm-anomaly", 2)
    assert stored == second
    assert stored.created_by == "ci" and stored.train_end == END
    assert stored.metrics == {"auc": 0.85, "f1": 0.425} and stored.score == 0.85
    assert set(stored.profile) == {"cpu", "latency"}
    model, meta = registry.load(lake, "vm-anomaly", 1)
    assert model == {"weights": [0.80]} and meta == first


def test_champion_challenger_promotes_only_a_better_version(lake: Lake) -> None:
    with pytest.raises(NotFoundError, match="no champion yet"):
        registry.load(lake, "vm-anomaly")
    for auc in (0.80, 0.805, 0.90):
        _register(lake, auc)

    first = registry.promote_if_better(lake, "vm-anomaly", 1)
    assert first.promoted and first.champion is None
    refused = registry.promote_if_better(lake, "vm-anomaly", 2, margin=0.01)
    assert not refused.promoted
    assert (refused.challenger_value, refused.champion_value) == (0.805, 0.80)
    assert registry.champion(lake, "vm-anomaly").version == 1
    won = registry.promote_if_better(lake, "vm-anomaly", 3, margin=0.01, decided_by="nightly")
    assert won.promoted and won.champion == 1

    pointer = registry.champion(lake, "vm-anomaly")
    assert (pointer.version, pointer.previous, pointer.promoted_by) == (3, 1, "nightly")
    model, meta = registry.load(lake, "vm-anomaly")
    assert model == {"weights": [0.90]} and meta.version == 3
    log = registry.decisions(lake, "vm-anomaly")
    assert [(d.challenger, d.champion, d.promoted) for d in log] == [
        (1, None, True),
        (2, 1, False),
        (3, 1, True),
    ]
    assert log[1].margin == 0.01 and "does not beat" in log[1].reason


def test_lower_is_better_metrics_compare_the_other_way(lake: Lake) -> None:
    for mae in (2.0, 2.5):
        registry.register(
            lake,
            "forecast",
            [mae],
            kind="prophet",
            train_start=START,
            train_end=END,
            parameters={},
            features=["y"],
            metrics={"mae": mae},
            primary_metric="mae",
            higher_is_better=False,
        )
    registry.promote_if_better(lake, "forecast", 1)
    assert not registry.promote_if_better(lake, "forecast", 2).promoted
    assert registry.champion(lake, "forecast").version == 1


def test_tampered_artifact_is_not_unpickled(lake: Lake, tmp_path: Path) -> None:
    _register(lake, 0.8)
    artifact = tmp_path / "ml" / "models" / "vm-anomaly" / "v1" / "artifact.bin"
    artifact.write_bytes(pickle.dumps({"weights": [0.99]}))
    with pytest.raises(registry.ArtifactIntegrityError, match="altered"):
        registry.load(lake, "vm-anomaly", 1)


def test_versions_are_never_rewritten(lake: Lake, tmp_path: Path) -> None:
    _register(lake, 0.8)
    v1 = tmp_path / "ml" / "models" / "vm-anomaly" / "v1"
    before = {p.name: p.read_bytes() for p in v1.iterdir()}
    _register(lake, 0.9, model={"other": True})
    assert {p.name: p.read_bytes() for p in v1.iterdir()} == before
    # A folder left by an unfinished registration is skipped, not reused.
    (v1.parent / "v3").mkdir()
    assert _register(lake, 0.7).version == 4
    assert [v.version for v in registry.versions(lake, "vm-anomaly")] == [1, 2, 4]


def test_bad_input_and_missing_versions_say_what_to_do(lake: Lake) -> None:
    with pytest.raises(NotFoundError, match="no version 7"):
        registry.load(lake, "vm-anomaly", 7)
    with pytest.raises(InputError, match="primary metric"):
        registry.register(
            lake,
            "m",
            1,
            kind="k",
            train_start=START,
            train_end=END,
            parameters={},
            features=[],
            metrics={"f1": 0.5},
            primary_metric="auc",
        )
    with pytest.raises(InputError, match="time zone"):
        registry.register(
            lake,
            "m",
            1,
            kind="k",
            train_start=datetime(2026, 1, 1),
            train_end=END,
            parameters={},
            features=[],
            metrics={"auc": 0.5},
            primary_metric="auc",
        )
    with pytest.raises(InputError, match="not allowed"):
        registry.versions(lake, "../etc")


def test_drift_flags_shifted_data_and_not_the_same_distribution(lake: Lake) -> None:
    reference = registry.profile(_features(0))
    same = registry.drift(reference, _features(1))
    assert not same.drifted and max(same.psi.values()) < 0.05
    shifted = registry.drift(reference, _features(2, shift=0.1))
    assert shifted.drifted and shifted.drifted_features == ["cpu"]
    assert shifted.psi["cpu"] > 0.5 and shifted.psi["latency"] < 0.05
    # Values going missing is drift too.
    gappy = _features(3).with_columns(
        latency=pl.when(pl.int_range(pl.len()) % 2 == 0).then(None).otherwise(pl.col("latency"))
    )
    assert registry.drift(reference, gappy).drifted_features == ["latency"]
    with pytest.raises(InputError, match="lacks the profiled features"):
        registry.drift(reference, {"cpu": [0.1]})


def test_retraining_is_due_by_age_or_by_drift(lake: Lake) -> None:
    assert registry.needs_retraining(lake, "vm-anomaly", max_age=timedelta(days=7)).retrain
    _register(lake, 0.8)
    registry.promote_if_better(lake, "vm-anomaly", 1)
    fresh = END + timedelta(days=1)
    calm = registry.needs_retraining(
        lake, "vm-anomaly", _features(1).to_pandas(), max_age=timedelta(days=7), now=fresh
    )
    assert not calm.retrain and calm.reasons == [] and calm.version == 1
    moved = registry.needs_retraining(
        lake, "vm-anomaly", _features(2, shift=0.1), max_age=timedelta(days=7), now=fresh
    )
    assert moved.retrain and "cpu" in moved.reasons[0]
    old = registry.needs_retraining(
        lake, "vm-anomaly", max_age=timedelta(days=7), now=END + timedelta(days=8)
    )
    assert old.retrain and old.age == timedelta(days=8) and "ago" in old.reasons[0]
