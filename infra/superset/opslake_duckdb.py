"""Superset's DuckDB connections read the warehouse's live views and no other file, and write
none (runs in Superset's venv, not OpsLake's).

The warehouse serves the streaming tables (``*_live``: today's incidents and alerts) as views
over their Parquet files in the lake; ``_opslake_warehouse`` names the directory each reads
(``location``). DuckDB can be told to reach only chosen directories, but only on an open
database and only before external access is turned off (after that neither setting can
change, and a SQL Lab user cannot turn access back on). So the first connection to a DuckDB
database gets ``allowed_directories`` set to exactly those directories, then
``enable_external_access = false``; the second runs even when the first fails, and a
connection it cannot lock is not used. Both settings belong to the database, which DuckDB
shares between the connections one process opens to one file: a connection to a database
already locked has nothing to do. ``read_csv('/etc/passwd')``, another lake table's files and
``..`` out of an allowed directory are refused.

DuckDB lets an allowed directory be written too (``COPY … TO``, ``ATTACH``), and Superset's own
DML check does not see ``COPY``: :func:`only_select` (``SQL_QUERY_MUTATOR``) refuses any
statement DuckDB's parser does not call a ``SELECT``, in SQL Lab and in charts alike.
"""

import duckdb
from sqlalchemy import event
from sqlalchemy.engine import Engine

LIVE_DIRECTORIES = (
    "SELECT DISTINCT location FROM _opslake_warehouse "
    "WHERE kind = 'live' AND location IS NOT NULL ORDER BY location"
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def live_directories(connection) -> list[str]:
    """The lake directories the warehouse's live views read; none for another DuckDB file or a
    warehouse built before views named them."""
    try:
        return [row[0] for row in connection.execute(LIVE_DIRECTORIES).fetchall()]
    except duckdb.Error:
        return []


def _locked(connection) -> bool:
    setting = "SELECT current_setting('enable_external_access')"
    return connection.execute(setting).fetchone()[0] is False


def lock_down(dbapi_connection, _record) -> None:
    """SQLAlchemy ``connect`` listener: a DuckDB connection may read the live directories only."""
    # duckdb_engine hands SQLAlchemy a wrapper of DuckDB's connection; other databases pass.
    wrapped = type(dbapi_connection).__module__.split(".")[0] == "duckdb_engine"
    if not wrapped and not isinstance(dbapi_connection, duckdb.DuckDBPyConnection):
        return
    try:
        if _locked(dbapi_connection):
            return  # another connection to this database locked it
        allowed = live_directories(dbapi_connection)
        if allowed:
            listed = ", ".join(_literal(d) for d in allowed)
            try:
                dbapi_connection.execute(f"SET allowed_directories = [{listed}]")
            except duckdb.InvalidInputException:
                if not _locked(dbapi_connection):
                    raise
                # Another connection to this database locked it meanwhile, with these.
    finally:
        dbapi_connection.execute("SET enable_external_access = false")


def only_select(sql: str, database=None, **_kwargs) -> str:
    """``SQL_QUERY_MUTATOR``: on a DuckDB database, every statement must be a ``SELECT``."""
    if database is not None and database.backend == "duckdb":
        for statement in duckdb.extract_statements(sql):
            if statement.type != duckdb.StatementType.SELECT:
                from superset.exceptions import SupersetDMLNotAllowedException

                raise SupersetDMLNotAllowedException()
    return sql


def install() -> None:
    """Lock down every DuckDB connection any engine of this process opens."""
    event.listen(Engine, "connect", lock_down)
