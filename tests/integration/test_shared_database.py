"""Dagster's instance and Superset's metadata in schemas of the installation's database.

A real PostgreSQL (the session's, ``postgres_url``), real dagster-postgres, Superset's own
``db upgrade`` and ``init`` in its venv (no server started); each asserts with a direct SQL
query that the tables and rows are in the component's schema and not in ``public``.
"""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

import dagster as dg
import psycopg2

from opslake.orchestration import runner
from opslake.screens.server import SupersetConfig, prepare
from opslake.settings import Settings


def _query(url: str, sql: str, *params: object) -> list[tuple]:
    with closing(psycopg2.connect(url)) as con, con, con.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _tables(url: str, schema: str) -> set[str]:
    sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
    return {r[0] for r in _query(url, sql, schema)}


@dg.asset
def tiny() -> int:
    return 1


def test_dagster_runs_and_events_land_in_schema_dagster(tmp_path: Path, postgres_url: str) -> None:
    _query(postgres_url, "DROP SCHEMA IF EXISTS dagster CASCADE")  # an earlier run's
    began = time.monotonic()
    # First on SQLite (the default), then the setting changes: the instance follows it.
    local = Settings(state_dir=tmp_path, home=str(tmp_path / "lake"))
    with runner.instance(local) as instance:
        assert dg.materialize([tiny], instance=instance).success
    shared = Settings(state_dir=tmp_path, home=str(tmp_path / "lake"), database_url=postgres_url)
    with runner.instance(shared) as instance:
        run_id = dg.materialize([tiny], instance=instance).run_id
    took = time.monotonic() - began

    tables = _tables(postgres_url, "dagster")
    assert {"runs", "event_logs", "alembic_version"} <= tables
    assert not {"runs", "event_logs"} & _tables(postgres_url, "public")
    assert _query(postgres_url, "SELECT status FROM dagster.runs WHERE run_id = %s", run_id) == [
        ("SUCCESS",)
    ]
    sql = "SELECT dagster_event_type FROM dagster.event_logs WHERE run_id = %s"
    events = {r[0] for r in _query(postgres_url, sql, run_id)}
    assert {"STEP_SUCCESS", "ASSET_MATERIALIZATION", "PIPELINE_SUCCESS"} <= events
    # The run on SQLite stayed there.
    assert _query(postgres_url, "SELECT count(*) FROM dagster.runs") == [(1,)]

    # Readers that open the instance from its dagster.yaml alone (the portal, self-watch),
    # in a process where runner.instance never ran, see the same run.
    with dg.DagsterInstance.from_config(str(shared.dagster_home)) as instance:
        assert [r.dagster_run.run_id for r in instance.get_run_records()] == [run_id]
    print(f"dagster on PostgreSQL: two materializations, instance switched, {took:.1f} s")


def test_superset_metadata_lands_in_schema_superset(tmp_path: Path, postgres_url: str) -> None:
    _query(postgres_url, "DROP SCHEMA IF EXISTS superset CASCADE")  # an earlier run's
    settings = Settings(state_dir=tmp_path, home=str(tmp_path / "lake"), database_url=postgres_url)
    config = SupersetConfig.from_settings(settings)
    began = time.monotonic()
    prepare(config, say=lambda _: None)  # db upgrade, create-admin, init: no server
    took = time.monotonic() - began

    tables = _tables(postgres_url, "superset")
    assert {"ab_user", "ab_role", "dashboards", "slices", "alembic_version"} <= tables
    assert not {"ab_user", "dashboards"} & _tables(postgres_url, "public")
    users = _query(postgres_url, "SELECT username FROM superset.ab_user")
    assert users == [(config.admin_username,)]
    # init made the built-in roles.
    assert _query(postgres_url, "SELECT count(*) FROM superset.ab_role WHERE name = 'Admin'") == [
        (1,)
    ]
    assert "search_path%3Dsuperset" in config.config_file.read_text()
    print(f"superset db upgrade + create-admin + init on PostgreSQL: {took:.1f} s")
