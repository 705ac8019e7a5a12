"""Shared fixtures: a lake in a temporary OPSLAKE_HOME."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from xdist.scheduler import LoadFileScheduling

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.settings import Settings

# Failed steps retry 2 s and then 6 s later instead of 10 s and 30 s: the tests check that
# steps are retried and then fail loudly, not how long an outage may last. Set before any
# test module imports the jobs (the retry policy is read when they are defined); the CLI,
# daemon and worker processes the tests start inherit it.
os.environ.setdefault("OPSLAKE_STEP_RETRY_DELAY_S", "2")

# An xdist worker's __main__ (execnet's bootstrap) has neither __spec__ nor __file__, which
# pyspark takes for its own doctest runner and exits (sys.exit(0)) when Great Expectations
# imports it. Give it the spec `python -m pytest` gives a serial run's __main__: importing it
# again (as spawned processes do) runs nothing.
if os.environ.get("PYTEST_XDIST_WORKER") and sys.modules["__main__"].__spec__ is None:
    sys.modules["__main__"].__spec__ = importlib.util.find_spec("pytest.__main__")

#: Modules sharing the session's Superset (``superset_estate``): ``make test``'s workers run
#: them one after another on one worker, so Superset starts once per run.
SUPERSET_MODULES = frozenset(
    f"tests/integration/test_{name}.py"
    for name in (
        "doors_browser",
        "live_push",
        "portal",
        "portal_browser",
        "service_reports",
        "shared_database",
        "superset_screens",
    )
)


def _module(nodeid: str) -> str:
    """The test module's path of ``nodeid``."""
    return nodeid.split("::", 1)[0]


def _scope(nodeid: str) -> str:
    """Where ``make test`` schedules a test: with its module, or with the Superset modules."""
    module = _module(nodeid)
    return "superset" if module in SUPERSET_MODULES else module


class _ModuleScheduling(LoadFileScheduling):
    """``--dist loadfile`` with the Superset modules as one unit (pytest 9 ignores the node
    ids pytest-xdist 3.8 rewrites for ``--dist loadgroup``, so its groups do nothing)."""

    def _split_scope(self, nodeid: str) -> str:
        return _scope(nodeid)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadFileScheduling | None:
    """``make test``'s scheduler (``-n 2 --dist loadfile``): a module's tests on one worker, so
    its module fixtures are built once."""
    return _ModuleScheduling(config, log) if config.getvalue("dist") == "loadfile" else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Check ``SUPERSET_MODULES``, then order the longest units first (the Superset modules,
    then the integration modules): the unit tests, short, even out the workers at the end."""
    missing = {
        _module(item.nodeid) for item in items if "superset_estate" in item.fixturenames
    } - SUPERSET_MODULES
    if missing:
        raise pytest.UsageError(
            f"{', '.join(sorted(missing))} use the session's Superset: add them to "
            "SUPERSET_MODULES in tests/conftest.py"
        )
    items.sort(
        key=lambda item: (
            _scope(item.nodeid) != "superset",
            not item.nodeid.startswith("tests/integration/"),
        )
    )


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


#: The schemas the state stores keep in a PostgreSQL database (one per store).
STATE_SCHEMAS = ("identity", "subscriptions", "workbench", "egress", "collection", "handling")


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL (Debian's, on loopback) for the session, started as ``opslake
    cluster`` starts its own; its URL."""
    from opslake.orchestration.cluster import Cluster
    from tests.integration.services import free_port, install_services

    install_services()  # PostgreSQL's Debian packages, among the others
    # PostgreSQL runs as its own account when the tests run as root: it must be able to pass
    # through the state directory's parents (pytest's own tmp root is 0700).
    base = Path(tempfile.mkdtemp(prefix="opslake-pg-"))
    os.chmod(base, 0o711)
    cluster = Cluster(
        Settings(state_dir=base / "state", postgres_port=free_port(), home=str(base / "lake"))
    )
    try:
        yield cluster.up_database(say=lambda _: None)
    finally:
        cluster.stop("postgres")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """The state stores' backend, each test run on both: None (SQLite files, the default) or
    the session's PostgreSQL with the stores' schemas dropped first."""
    if request.param == "sqlite":
        return None
    url = request.getfixturevalue("postgres_url")
    con = psycopg2.connect(url)
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {', '.join(STATE_SCHEMAS)} CASCADE")
    finally:
        con.close()
    return url
