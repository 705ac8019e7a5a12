"""Dagster's instance and Superset's metadata in the installation's database, a schema each.

With ``OPSLAKE_DATABASE_URL`` set, OpsLake's own stores take a schema each of that database
(:mod:`opslake.lake.state_db`); the two programs that keep tables of their own follow, into
schemas :data:`DAGSTER` and :data:`SUPERSET`. They connect through SQLAlchemy and create and
migrate their tables themselves, in whatever schema is first on the connection's
``search_path``: :func:`schema_url` sets it through libpq's ``options`` (honoured by
PostgreSQL, openGauss and KingbaseES alike), and :func:`create_schema` makes the schema first.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from opslake.errors import StorageError
from opslake.lake.state_db import libpq_url, redacted

#: The schema of Dagster's instance (runs, event log, schedules).
DAGSTER = "dagster"
#: The schema of Superset's metadata (users, roles, dashboards, charts).
SUPERSET = "superset"
#: SQLSTATEs of a concurrent creator winning the race to the schema: it exists, as wanted.
_RACES = frozenset({"23505", "42P06"})


def sqlalchemy_url(url: str) -> str:
    """``url`` with SQLAlchemy's psycopg2 driver named (it reads a bare ``postgresql://`` as
    psycopg 3, which is not installed)."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg2{sep}{rest}" if scheme in ("postgres", "postgresql") else url


def schema_url(database_url: str, schema: str) -> str:
    """``database_url`` for SQLAlchemy (psycopg2) with every connection's ``search_path`` set to
    ``schema``; its other query parameters (``sslmode``…, ``options`` of its own) kept."""
    parts = urlsplit(sqlalchemy_url(database_url))
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = [v for k, v in query if k == "options"] + [f"-c search_path={schema}"]
    query = [(k, v) for k, v in query if k != "options"] + [("options", " ".join(options))]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def create_schema(database_url: str, schema: str) -> None:
    """Create ``schema`` in the database at ``database_url`` unless it exists (a schema a
    database administrator made beforehand needs no CREATE right on the database)."""
    import psycopg2

    where = f"schema {schema} of {redacted(database_url)}"
    try:
        con = psycopg2.connect(
            libpq_url(database_url), connect_timeout=5, application_name="opslake"
        )
    except psycopg2.Error as exc:
        raise StorageError(
            f"cannot reach the database for {where} ({str(exc).strip()}); "
            "check OPSLAKE_DATABASE_URL and that the database accepts connections from here"
        ) from exc
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    except psycopg2.Error as exc:
        if exc.pgcode in _RACES:
            return
        raise StorageError(
            f"cannot create {where} ({str(exc).strip()}); grant the user CREATE on the "
            f"database, or have its administrator run CREATE SCHEMA {schema} AUTHORIZATION "
            "<user>"
        ) from exc
    finally:
        con.close()
