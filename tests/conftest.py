"""Shared fixtures: a lake in a temporary OPSLAKE_HOME."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.settings import Settings

# Failed steps retry 2 s and then 6 s later instead of 10 s and 30 s: the tests check that
# steps are retried and then fail loudly, not how long an outage may last. Set before any
# test module imports the jobs (the retry policy is read when they are defined); the CLI,
# daemon and worker processes the tests start inherit it.
os.environ.setdefault("OPSLAKE_STEP_RETRY_DELAY_S", "2")


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
