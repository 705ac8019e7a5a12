"""Model assets through real Dagster: training when due, champion/challenger, daily scoring."""

from __future__ import annotations

import json
from datetime import date, timedelta

import dagster as dg
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from opslake.assets import models
from opslake.assets.resources import LakeResource
from opslake.cli import app
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.ml import registry, risk, training
from opslake.orchestration import runner
from opslake.settings import Settings
from opslake.simulate import SimulationConfig, simulate

START = date(2026, 3, 2)
DAYS = ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A 60-object estate, four days at 5-minute resolution, up to silver."""
    home = tmp_path_factory.mktemp("lake")
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})
    simulate(
        SimulationConfig(seed=11, entities=60, days=len(DAYS), start=START, step_seconds=300),
        LandingZone.from_settings(settings),
    )
    runner.materialize(settings, DAYS, ["bronze", "silver"])
    return settings


def _run(
    settings: Settings,
    asset: dg.AssetsDefinition,
    *,
    force: bool | None = None,
    partition: str | None = None,
) -> dict:
    """Materialize one asset; its materialization metadata as plain values."""
    config = (
        dg.RunConfig({asset.node_def.name: models.TrainingConfig(force=force)})
        if force is not None
        else None
    )
    result = dg.materialize(
        [asset],
        resources={"lake": LakeResource(home=settings.home)},
        run_config=config,
        partition_key=partition,
    )
    assert result.success
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_incident_risk_is_trained_once_then_kept_until_a_better_model(
    settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake.from_settings(settings)
    # Before any champion the daily scores say so and write nothing.
    empty = _run(settings, models.incident_risk_daily, partition=DAYS[-1])
    assert empty["rows"] == 0 and empty["model"] == "none yet"
    assert not lake.partitions("gold", "incident_risk")

    first = _run(settings, models.incident_risk_model)
    assert first["retrained"] and first["decision"] == "promoted" and first["version"] == 1
    (v1,) = registry.versions(lake, "incident_risk")
    assert v1.primary_metric == "roc_auc" and 0.5 < v1.metrics["roc_auc"] <= 1
    assert 0 < v1.metrics["brier"] < 1 and "brier_base_rate" in v1.metrics
    assert v1.parameters["label_source"] == "simulator ground truth"
    assert v1.parameters["test_days"] == [DAYS[-1]]
    assert registry.champion(lake, "incident_risk").version == 1
    assert "| predicted | observed |" in first["reliability"]

    again = _run(settings, models.incident_risk_model)
    assert again["retrained"] is False and "not due" in again["why"]
    assert again["max_psi"] < registry.PSI_DRIFTED
    assert len(registry.versions(lake, "incident_risk")) == 1

    # A forced retrain on the same data evaluates the same: not better, so refused.
    forced = _run(settings, models.incident_risk_model, force=True)
    assert forced["version"] == 2 and forced["decision"] == "refused"
    assert forced["challenger_roc_auc"] == forced["champion_roc_auc"]
    log = registry.decisions(lake, "incident_risk")
    assert [d.promoted for d in log] == [True, False]
    assert "does not beat" in log[-1].reason
    assert registry.champion(lake, "incident_risk").version == 1
    # Due (every champion is, with a negative age limit), but v2 already saw this data.
    monkeypatch.setattr(training, "MAX_AGE", timedelta(days=-1))
    due = _run(settings, models.incident_risk_model)
    assert due["retrained"] is False and "already trained" in due["why"]
    assert len(registry.versions(lake, "incident_risk")) == 2
    monkeypatch.undo()

    daily = _run(settings, models.incident_risk_daily, partition=DAYS[-1])
    assert daily["model"] == "v1"
    scores = lake.read_table("gold", "incident_risk", dts=[DAYS[-1]])
    assert scores.num_rows == daily["rows"] == 24 * daily["entities"]
    p = scores.column("probability")
    assert pc.min(p).as_py() >= 0 and pc.max(p).as_py() <= 1
    assert set(scores.column("model_version").to_pylist()) == {1}
    risky = scores.filter(pc.greater_equal(p, risk.IMPACT_FROM))
    assert risky.num_rows > 0  # some CIs are risky enough to name what they would hit
    assert all(risky.column("affected_businesses").to_pylist())


def test_multivariate_detector_is_judged_against_fault_windows(settings) -> None:
    lake = Lake.from_settings(settings)
    first = _run(settings, models.anomaly_multivariate_model)
    assert first["retrained"] and first["decision"] == "promoted"
    (v1,) = registry.versions(lake, "anomaly_multivariate")
    assert v1.primary_metric == "roc_auc" and v1.metrics["roc_auc"] > 0.7
    assert 0 <= v1.metrics["alarm_share"] < 0.1
    assert v1.parameters["test_day"] == DAYS[-1]
    again = _run(settings, models.anomaly_multivariate_model)
    assert again["retrained"] is False
    assert len(registry.versions(lake, "anomaly_multivariate")) == 1


def test_cli_trains_through_dagster_and_lists_the_registry(settings) -> None:
    env = {"OPSLAKE_HOME": settings.home, "OPSLAKE_STATE_DIR": str(settings.state_dir)}
    cli = CliRunner()
    trained = cli.invoke(app, ["ml", "train"], env=env)
    assert trained.exit_code == 0, trained.output
    # Both champions exist from the tests above and the silver data has not moved on.
    assert "models/incident_risk: not retrained" in trained.output
    assert "models/anomaly_multivariate: not retrained" in trained.output
    listed = cli.invoke(app, ["ml", "models", "incident_risk"], env=env)
    assert listed.exit_code == 0, listed.output
    shown = json.loads(listed.output)
    assert shown["champion"]["version"] == 1
    assert any(not d["promoted"] for d in shown["decisions"])  # the refused challenger
