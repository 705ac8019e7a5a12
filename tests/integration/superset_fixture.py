"""One real Superset 6.1 over one small simulated estate, started once per test session.

Its own venv is installed by infra/install-superset.sh; the estate (120 objects, one day) is
built beside Superset's first start: the platform's own figures and alert, two handled
incidents, the live alert path's minute, the warehouse. The committed ``dashboards/`` are
imported and the roles provisioned; Superset is stopped by its PID at the session's end.

The screens and the service reports read it. Each module that asks for ``superset`` has the
estate's ``OPSLAKE_*`` environment set while it runs (``Settings.from_env()`` and the CLI
read that estate); other modules never see it. What a module adds to Superset (users, roles)
carries names of its own, so the modules may run in any order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from typer.testing import CliRunner

from opslake.cli import app
from opslake.screens import service
from opslake.screens.server import SupersetConfig, running_pid, start_server
from opslake.settings import Settings
from tests.integration.services import Background, free_port, install_superset, watch_itself


def _cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (
        f"opslake {' '.join(args)}:\n{result.output}\n{result.exception!r}"
    )


def _simulated_day() -> date:
    """Yesterday (UTC), or the day before when yesterday was a Sunday.

    The evening of a Sunday in UTC is Monday in Asia/Shanghai, the next ISO week: the weekly
    report of the newest day's week (test_service_reports) would then hold no "latest hour"
    of business health, which is outside it.
    """
    day = datetime.now(UTC).date() - timedelta(days=1)
    return day - timedelta(days=1) if day.isoweekday() == 7 else day


def _handle_incidents(day: date) -> None:
    """Acknowledge one incident, acknowledge and resolve another (10 and 30 minutes after
    each started) through the handling log, as the API does, and carry the actions to gold."""
    from opslake.alerting.handling import HandlingLog
    from opslake.lake.landing import LandingZone
    from opslake.lake.storage import Lake
    from opslake.orchestration import runner

    settings = Settings.from_env()
    incidents = sorted(
        (
            r
            for r in Lake.from_settings(settings).read_table("gold", "incidents").to_pylist()
            if (r["started_at"] + timedelta(minutes=30)).date() == day
        ),
        key=lambda r: r["incident_id"],
    )
    log = HandlingLog(LandingZone.from_settings(settings))
    for incident, actions in zip(incidents, (["acknowledge"], ["acknowledge", "resolve"])):
        for minutes, action in zip((10, 30), actions):
            at = incident["started_at"] + timedelta(minutes=minutes)
            log.record(incident["incident_id"], action, "screens_ops", via="test", at=at)
    runner.materialize(settings, [day.isoformat()], ["landing/incident_actions+"])


def refresh_live_alerts(settings: Settings) -> None:
    """One run of the live alert path (``alerts_live_refresh``), as its sensor starts it."""
    from opslake.orchestration import runner

    result = (
        runner.definitions()
        .resolve_job_def("alerts_live_refresh")
        .execute_in_process(instance=runner.instance(settings))
    )
    assert result.success


def _build_estate() -> None:
    """The estate in ``OPSLAKE_HOME``: simulated, watched, materialized, handled, built."""
    day = _simulated_day()
    _cli("simulate", "--entities", "120", "--days", "1", "--step", "300", "--start", str(day))
    # The platform's own figures and an alert of its own on that day (平台自身运行).
    watch_itself(Settings.from_env(), datetime(day.year, day.month, day.day, 23, 50, tzinfo=UTC))
    _cli("materialize")
    _handle_incidents(day)
    # The live alert path's minute: today's live incidents, served as views.
    refresh_live_alerts(Settings.from_env())
    _cli("warehouse", "build")


#: Unset for the estate: its state lies under its home, its lake is local, Superset's admin
#: password is generated and its metadata database is SQLite.
_UNSET = (
    "OPSLAKE_STATE_DIR",
    "OPSLAKE_S3_ENDPOINT",
    "OPSLAKE_SUPERSET_ADMIN_PASSWORD",
    "OPSLAKE_SUPERSET_DATABASE_URI",
)


def _apply(mp: pytest.MonkeyPatch, environ: dict[str, str]) -> None:
    for name, value in environ.items():
        mp.setenv(name, value)
    for name in _UNSET:
        mp.delenv(name, raising=False)


@pytest.fixture(scope="session")
def superset_estate(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SupersetConfig, dict[str, str]]]:
    """Superset with the screens imported over the estate, and the environment naming both."""
    install_superset()
    environ = {
        "OPSLAKE_HOME": str(tmp_path_factory.mktemp("screens") / "lake"),
        "OPSLAKE_SUPERSET_PORT": str(free_port()),
        "OPSLAKE_SUPERSET_WORKERS": "1",
    }
    # The environment is the estate's while it is built, and again in each module using it.
    with pytest.MonkeyPatch.context() as mp:
        _apply(mp, environ)
        config = service.config_for(Settings.from_env())
        # Superset's first start (metadata DB, roles) needs no warehouse: both run at once.
        started = time.perf_counter()
        booting = Background(lambda: start_server(config, say=lambda _: None))
        try:
            try:
                _build_estate()
                built = time.perf_counter() - started
            finally:
                booting.thread.join()
            booting.join()  # raises what the start raised
            up = time.perf_counter() - started
            service.start(config, say=lambda _: None)  # import dashboards/, provision roles
        except BaseException:
            service.stop(config, say=lambda _: None)
            raise
    print(
        f"\nlake built in {built:.0f}s, superset up in {up:.0f}s, screens imported "
        f"and roles provisioned at {time.perf_counter() - started:.0f}s"
    )
    try:
        yield config, environ
    finally:
        service.stop(config, say=lambda _: None)
    assert running_pid(config) is None, "superset still runs after stop"


@pytest.fixture(scope="module")
def superset(superset_estate: tuple[SupersetConfig, dict[str, str]]) -> Iterator[SupersetConfig]:
    """The session's Superset, its estate's environment set for this module."""
    config, environ = superset_estate
    with pytest.MonkeyPatch.context() as mp:
        _apply(mp, environ)
        yield config
