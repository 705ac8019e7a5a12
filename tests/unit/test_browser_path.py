"""The browser reports render with comes from a setting (OPSLAKE_BROWSER): any Chromium-based
build, such as a domestic one; unset, Debian's chromium from PATH. The real rendering through
the setting is tests/integration/test_service_reports.py's weekly report."""

from __future__ import annotations

from pathlib import Path

import pytest

from opslake.errors import ConfigError
from opslake.screens import browser
from opslake.screens.server import SupersetConfig
from opslake.settings import Settings


def test_the_setting_reaches_the_screens_config_and_the_launch(tmp_path: Path) -> None:
    binary = tmp_path / "qax-browser"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path), "OPSLAKE_BROWSER": str(binary)})
    assert settings.browser == binary
    config = SupersetConfig.from_settings(settings)
    assert config.browser == binary
    assert browser.chromium_path(config.browser) == str(binary)


def test_unset_means_chromium_from_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path)})
    assert settings.browser is None and SupersetConfig.from_settings(settings).browser is None
    found = tmp_path / "bin" / "chromium"
    found.parent.mkdir()
    found.write_text("#!/bin/sh\n")
    found.chmod(0o755)
    monkeypatch.setenv("PATH", str(found.parent))
    assert browser.chromium_path(None) == str(found)


def test_a_browser_path_that_is_not_an_executable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="OPSLAKE_BROWSER=.*is not an executable file"):
        browser.chromium_path(tmp_path / "missing")
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    with pytest.raises(ConfigError, match="Chromium-based browser"):
        browser.chromium_path(plain)
