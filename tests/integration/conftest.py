"""Fixtures several integration modules share, built once per test session."""

from __future__ import annotations

from datetime import date

import pytest

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.settings import Settings
from opslake.simulate import GroundTruth, SimulationConfig, simulate

START = date(2026, 3, 2)
DAYS = ["2026-03-02", "2026-03-03"]


@pytest.fixture(scope="session")
def estate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, GroundTruth]:
    """A 60-object estate, two days at 5-minute resolution, materialized end to end."""
    home = tmp_path_factory.mktemp("lake")
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})
    lake = Lake.from_settings(settings)
    truth = simulate(
        SimulationConfig(seed=11, entities=60, days=2, start=START, step_seconds=300),
        LandingZone.from_settings(settings, lake),
    )
    runner.materialize(settings, DAYS)
    runner.refresh_serving(settings)
    return settings, truth
