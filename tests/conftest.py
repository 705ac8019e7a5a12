"""Shared fixtures: a lake in a temporary OPSLAKE_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.settings import Settings


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for a fresh lake under ``tmp_path`` (also exported to the environment)."""
    monkeypatch.setenv("OPSLAKE_HOME", str(tmp_path / "lake"))
    monkeypatch.delenv("OPSLAKE_STATE_DIR", raising=False)
    monkeypatch.delenv("OPSLAKE_S3_ENDPOINT", raising=False)
    return Settings.from_env()


@pytest.fixture
def lake(settings: Settings) -> Lake:
    """The lake of ``settings``."""
    return Lake.from_settings(settings)


@pytest.fixture
def landing(settings: Settings, lake: Lake) -> LandingZone:
    """The landing zone of ``lake``, with the data key of ``settings`` (for sealed sources)."""
    return LandingZone.from_settings(settings, lake)
