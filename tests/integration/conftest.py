"""Fixtures several integration modules share, built once per test session."""

from __future__ import annotations

import shutil
from datetime import date

import pytest

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.settings import Settings
from opslake.simulate import GroundTruth, SimulationConfig, simulate

# The session's Superset, for every module here (fixtures are found by name).
from tests.integration.superset_fixture import superset, superset_estate  # noqa: F401

START = date(2026, 3, 2)
DAYS = ["2026-03-02", "2026-03-03"]
#: The day of ``day_estate``.
DAY = START


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


def copy_of(settings: Settings, tmp_path_factory: pytest.TempPathFactory, name: str) -> Settings:
    """Settings over a copy of ``settings``' home (lake, state, keys), for a module to act on."""
    home = tmp_path_factory.mktemp(name) / "lake"
    shutil.copytree(settings.home, home)
    return Settings.from_env({"OPSLAKE_HOME": str(home)})


@pytest.fixture(scope="module")
def own_estate(estate, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, GroundTruth]:
    """A copy of the session estate for a module that acts on it (handles incidents, pins
    metrics), so the modules after it still find the estate as its landing built it."""
    settings, truth = estate
    return copy_of(settings, tmp_path_factory, "own"), truth


@pytest.fixture(scope="session")
def day_estate(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A 60-object estate, one day (``DAY``) at 5-minute resolution, materialized end to end
    and served; the API modules each take a copy (``copy_of``) with users of their own."""
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path_factory.mktemp("day") / "lake")})
    simulate(
        SimulationConfig(seed=5, entities=60, days=1, start=DAY, step_seconds=300),
        LandingZone.from_settings(settings),
    )
    runner.materialize(settings, [DAY.isoformat()])
    runner.refresh_serving(settings)
    return settings
