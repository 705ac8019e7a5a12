"""Settings read from the environment: values parsed, bad ones refused with the fix."""

from __future__ import annotations

import pytest

from opslake.errors import ConfigError
from opslake.settings import Settings


def test_the_broker_and_the_subscription_interval() -> None:
    settings = Settings.from_env(
        {"OPSLAKE_MQTT_BROKER": "[::1]:1883", "OPSLAKE_SUBSCRIPTION_INTERVAL_S": "2.5"}
    )
    assert settings.mqtt_broker == ("::1", 1883)
    assert settings.subscription_interval_s == 2.5
    defaults = Settings.from_env({})
    assert defaults.mqtt_broker is None and defaults.subscription_interval_s == 10.0


def test_the_step_retry_delay() -> None:
    assert Settings.from_env({}).step_retry_delay_s == 10.0
    assert Settings.from_env({"OPSLAKE_STEP_RETRY_DELAY_S": "2"}).step_retry_delay_s == 2.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPSLAKE_MQTT_BROKER", "localhost"),
        ("OPSLAKE_MQTT_BROKER", "host:99999"),
        ("OPSLAKE_SUBSCRIPTION_INTERVAL_S", "-1"),
        ("OPSLAKE_SUBSCRIPTION_INTERVAL_S", "nan"),
        ("OPSLAKE_MAX_PUSH_BYTES", "0"),
        ("OPSLAKE_MAX_DECODED_BYTES", "lots"),
        ("OPSLAKE_STEP_RETRY_DELAY_S", "soon"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_the_directories_follow_their_variables(tmp_path) -> None:
    settings = Settings.from_env(
        {
            "OPSLAKE_TASKS_DIR": str(tmp_path / "t"),
            "OPSLAKE_ALERT_WEBHOOKS_DIR": str(tmp_path / "w"),
        }
    )
    assert (settings.tasks_dir, settings.alert_webhooks_dir) == (tmp_path / "t", tmp_path / "w")
