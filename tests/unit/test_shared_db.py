"""The URLs that put Dagster's instance and Superset's metadata in a schema of the database."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy

from opslake.errors import StorageError
from opslake.lake import shared_db
from opslake.orchestration import runner
from opslake.screens.server import SupersetConfig
from opslake.settings import Settings

URL = "postgresql://ops%40lake:p%2Fw@db.example:5432/opslake?sslmode=require"


def test_the_schema_url_sets_the_search_path_and_keeps_the_rest() -> None:
    url = sqlalchemy.engine.make_url(shared_db.schema_url(URL, "dagster"))
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.host, url.database) == (
        "ops@lake",
        "p/w",
        "db.example",
        "opslake",
    )
    assert dict(url.query) == {"sslmode": "require", "options": "-c search_path=dagster"}
    # An options parameter of the operator's own is kept, the search path added to it.
    own = shared_db.schema_url("postgres://u@h/d?options=-c%20statement_timeout%3D5000", "x")
    assert sqlalchemy.engine.make_url(own).query["options"] == (
        "-c statement_timeout=5000 -c search_path=x"
    )


def test_dagster_and_superset_follow_the_database_url(tmp_path: Path) -> None:
    plain = Settings(state_dir=tmp_path)
    assert runner.dagster_url(plain) is None
    assert SupersetConfig.from_settings(plain).metadata_database.startswith("sqlite:///")

    shared = Settings(state_dir=tmp_path, database_url=URL)
    assert runner.dagster_url(shared) == shared_db.schema_url(URL, "dagster")
    superset = SupersetConfig.from_settings(shared)
    assert superset.metadata_database == shared_db.schema_url(URL, "superset")
    assert superset.metadata_schema == "superset"

    # Settings of their own win: Dagster's OPSLAKE_POSTGRES_URL, Superset's URI, as given.
    own = Settings(
        state_dir=tmp_path,
        database_url=URL,
        postgres_url="postgresql://d@h/dagster",
        superset_database_uri="postgresql+psycopg2://s@h/superset",
    )
    assert runner.dagster_url(own) == "postgresql+psycopg2://d@h/dagster"
    superset = SupersetConfig.from_settings(own)
    assert superset.metadata_database == "postgresql+psycopg2://s@h/superset"
    assert superset.metadata_schema is None


def test_the_instance_config_follows_the_setting(tmp_path: Path) -> None:
    config = runner.write_config(tmp_path, None, step_logs=True)
    assert "postgres" not in config.read_text()
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_coordinator.dequeue_interval_seconds == 1
    url = shared_db.schema_url(URL, "dagster")
    runner.write_config(tmp_path, url, step_logs=True)
    assert url in config.read_text()
    assert config.stat().st_mode & 0o777 == 0o600  # it holds the password
    runner.write_config(tmp_path, {"env": "DAGSTER_POSTGRES_URL"}, step_logs=False)
    assert "p%2Fw" not in config.read_text()
    assert "NoOpComputeLogManager" in config.read_text()


def test_an_unreachable_database_says_which_setting_to_check() -> None:
    with pytest.raises(StorageError, match="OPSLAKE_DATABASE_URL") as err:
        shared_db.create_schema("postgresql://u:secret@127.0.0.1:1/d", "dagster")
    assert "secret" not in str(err.value)
