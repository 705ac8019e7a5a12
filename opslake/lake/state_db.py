"""The installation's relational state (identity, subscriptions, workbench…): the one helper.

Two backends with one surface, picked by :func:`open_state`:

- **SQLite** (the embedded default): one file per store under the state directory, WAL mode,
  a fresh connection per call (safe across threads and processes), the file 0600, write
  transactions taken ``IMMEDIATE`` so that read-check-update sequences cannot interleave.
- **PostgreSQL-compatible** (``OPSLAKE_DATABASE_URL``): one schema per store in one database,
  shared by every host. A write transaction first locks a one-row table of its schema
  (``LOCK TABLE … IN EXCLUSIVE MODE``), which serializes the store's writers across hosts
  exactly as ``BEGIN IMMEDIATE`` does on one; readers are not blocked.

Stores write their SQL once, in what SQLite, PostgreSQL, openGauss and KingbaseES all accept:
``?`` placeholders (turned into psycopg2's ``%s`` here), ``ON CONFLICT``, ``RETURNING``,
``"user"`` quoted (a reserved word in PostgreSQL), no extensions. DDL differs in two words
only (``BLOB``, ``AUTOINCREMENT``), translated here; append-only tables are declared and get
each backend's own trigger.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from opslake.errors import StorageError, space_error, state_writes

#: Writers of one file in this process queue here before SQLite's write lock: SQLite's own
#: busy handler sleeps up to 100 ms between retries, which under many concurrent requests is
#: most of the time.
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


class Row(Protocol):
    """A fetched row: by column name or position (``sqlite3.Row``, psycopg2's ``DictRow``)."""

    def __getitem__(self, key: str | int) -> Any: ...
    def keys(self) -> Any: ...


class Cursor(Protocol):
    """What a statement returns."""

    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    """A connection of either backend."""

    def execute(self, sql: str, params: Any = ...) -> Cursor: ...
    def executemany(self, sql: str, seq: Any) -> Cursor: ...


def _lock_for(key: str) -> threading.Lock:
    with _LOCKS_LOCK:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


def _sqlite_ddl(schema: str, append_only: Mapping[str, str]) -> str:
    triggers = "".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{what} is append-only'); END;\n"
        for table, what in append_only.items()
        for verb in ("update", "delete")
    )
    return schema + triggers


class StateDB:
    """The SQLite file ``path`` with ``schema`` applied; ``what`` names it in errors.

    ``append_only`` maps tables to what they are ("the delivery log"): updates and deletes of
    their rows are refused by the database itself.
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: Path,
        schema: str,
        what: str,
        *,
        foreign_keys: bool = False,
        append_only: Mapping[str, str] | None = None,
    ) -> None:
        self.path, self._what, self._foreign_keys = Path(path), what, foreign_keys
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = _lock_for(str(self.path.resolve()))
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_sqlite_ddl(schema, append_only or {}))
        os.chmod(self.path, 0o600)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode with rows by name; closed afterwards."""
        # Every read and write of the store passes here: a full disk becomes one StorageError.
        with state_writes(f"{self._what} {self.path}"):
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            try:
                if self._foreign_keys:
                    conn.execute("PRAGMA foreign_keys=ON")
                yield conn
            finally:
                conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, committed when the block ends and rolled back if it raises."""
        with self._write_lock, self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                # SQLite may have rolled back already (a full disk does); say what failed.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def counter(self) -> AbstractContextManager[sqlite3.Connection]:
        """An autocommit connection for hot counters, each statement atomic by itself."""
        return self.connect()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold the mutex ``name`` of this store against every thread and process."""
        lock_path = self.path.with_name(f"{self.path.stem}.{name}.lock")
        with _lock_for(str(lock_path)), open(lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# --- PostgreSQL ------------------------------------------------------------------------------

#: Connections one process keeps per store; more concurrent callers wait for one.
POOL_SIZE = 16
#: SQLSTATEs of a concurrent creator winning the race to a schema object (retry: it exists).
_CREATE_RACES = frozenset({"23505", "42P06", "42P07", "42710"})
_LITERAL_OR_MARK = re.compile(r"'(?:[^']|'')*'|\?")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg2's ``%s`` (outside string literals); ``%`` escaped."""
    escaped = sql.replace("%", "%%")
    return _LITERAL_OR_MARK.sub(lambda m: "%s" if m.group() == "?" else m.group(), escaped)


def _pg_ddl(schema: str) -> str:
    return schema.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY").replace(
        "BLOB", "BYTEA"
    )


def libpq_url(url: str) -> str:
    """``url`` as libpq (psycopg2) takes it: without SQLAlchemy's ``+driver`` suffix."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql{sep}{rest}" if scheme.startswith("postgres") else url


def redacted(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class _PgConn:
    """A pooled psycopg2 connection speaking the stores' SQL (``?`` placeholders)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Any = ()) -> Any:
        from psycopg2.extras import DictCursor

        cur = self.raw.cursor(cursor_factory=DictCursor)
        cur.execute(_pg_sql(sql), tuple(params))
        return cur

    def executemany(self, sql: str, seq: Any) -> Any:
        cur = self.raw.cursor()
        cur.executemany(_pg_sql(sql), [tuple(p) for p in seq])
        return cur

    def executescript(self, script: str) -> None:
        with self.raw.cursor() as cur:
            cur.execute(script)

    @property
    def in_transaction(self) -> bool:
        from psycopg2.extensions import TRANSACTION_STATUS_IDLE

        return self.raw.get_transaction_status() != TRANSACTION_STATUS_IDLE


class _Pool:
    """SQLAlchemy's queue pool over psycopg2: idle connections kept, callers over the limit
    waiting, a connection the server dropped noticed on checkout (pre-ping) and replaced."""

    def __init__(self, url: str, schema: str, *, durable: bool = True) -> None:
        from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
        from sqlalchemy.pool import QueuePool

        def connect() -> Any:
            import psycopg2
            from psycopg2 import BINARY
            from psycopg2.extensions import new_type, register_type

            raw = psycopg2.connect(
                url,
                options=f"-c search_path={schema}"
                + ("" if durable else " -c synchronous_commit=off"),
                connect_timeout=5,
                application_name="opslake",
            )
            raw.autocommit = True
            # BYTEA as bytes (psycopg2 gives memoryview), as SQLite gives BLOB.
            register_type(new_type(BINARY.values, "OPSLAKE_BYTES", _as_bytes), raw)
            return raw

        # A connection costs 33 ms (SCRAM authentication) against 0.1 ms a query: keep them.
        self._pool = QueuePool(
            connect,
            pool_size=POOL_SIZE // 2,
            max_overflow=POOL_SIZE // 2,
            timeout=30,
            pre_ping=True,
            dialect=PGDialect_psycopg2(),  # what pre-ping pings with
            reset_on_return=None,  # autocommit: the block below ends any transaction itself
        )

    @contextmanager
    def connection(self) -> Iterator[_PgConn]:
        fairy = self._pool.connect()
        try:
            conn = _PgConn(fairy.dbapi_connection)
            try:
                yield conn
            finally:
                if not conn.raw.closed and conn.in_transaction:
                    conn.execute("ROLLBACK")
        finally:
            if fairy.dbapi_connection is not None and fairy.dbapi_connection.closed:
                fairy.invalidate()  # the server dropped it: never hand it out again
            fairy.close()


def _as_bytes(value: str | None, cur: Any) -> bytes | None:
    from psycopg2 import BINARY

    return None if value is None else bytes(BINARY(value, cur))


_POOLS: dict[tuple[int, str, str, bool], _Pool] = {}


def _pool(url: str, schema: str, *, durable: bool = True) -> _Pool:
    # Keyed by process: a forked child must not share its parent's sockets.
    key = (os.getpid(), url, schema, durable)
    with _LOCKS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = _Pool(url, schema, durable=durable)
        return _POOLS[key]


class PostgresStateDB:
    """The schema ``schema_name`` of the database at ``url`` with ``schema`` applied.

    The same surface as :class:`StateDB`; every host pointing at ``url`` shares it.
    """

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        schema_name: str,
        schema: str,
        what: str,
        *,
        append_only: Mapping[str, str] | None = None,
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema_name):
            raise ValueError(f"schema name {schema_name!r} is not a plain lower-case identifier")
        self.url, self.schema_name = url, schema_name
        self._what = f"{what} ({redacted(url)}, schema {schema_name})"
        self._write_lock = _lock_for(f"{url}#{schema_name}")
        self._apply(schema, append_only or {})

    def _apply(self, schema: str, append_only: Mapping[str, str]) -> None:
        import psycopg2

        for attempt in range(5):
            try:
                with self.connect() as conn:
                    conn.execute("BEGIN")
                    conn.executescript(
                        f"CREATE SCHEMA IF NOT EXISTS {self.schema_name};\n"
                        f"SET LOCAL search_path TO {self.schema_name};\n"
                        "CREATE TABLE IF NOT EXISTS state_writer (one INTEGER PRIMARY KEY);\n"
                        "CREATE TABLE IF NOT EXISTS state_mutex (name TEXT PRIMARY KEY);\n"
                        + _pg_ddl(schema)
                    )
                    for table, what in append_only.items():
                        self._append_only(conn, table, what)
                    conn.execute("COMMIT")
                return
            except psycopg2.Error as exc:
                if exc.pgcode not in _CREATE_RACES or attempt == 4:
                    raise

    def _append_only(self, conn: _PgConn, table: str, what: str) -> None:
        trigger = f"{table}_append_only"
        if conn.execute(
            "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = ? AND c.relname = ? AND t.tgname = ?",
            (self.schema_name, table, trigger),
        ).fetchone():
            return
        conn.executescript(
            f"CREATE OR REPLACE FUNCTION {self.schema_name}.{trigger}() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{what} is append-only'; END $$;\n"
            f"CREATE TRIGGER {trigger} BEFORE UPDATE OR DELETE ON {self.schema_name}.{table} "
            f"FOR EACH ROW EXECUTE PROCEDURE {self.schema_name}.{trigger}();"
        )

    @contextmanager
    def connect(self, *, durable: bool = True) -> Iterator[_PgConn]:
        """A pooled connection in autocommit mode with rows by name; returned afterwards."""
        import psycopg2

        try:
            with _pool(self.url, self.schema_name, durable=durable).connection() as conn:
                yield conn
        except psycopg2.OperationalError as exc:
            if exc.pgcode == "53100":  # disk_full
                raise space_error(self._what, exc) from exc
            if exc.pgcode is None:  # no answer from the server at all
                raise StorageError(
                    f"cannot reach {self._what}: {str(exc).strip()}; start the database or "
                    "fix OPSLAKE_DATABASE_URL"
                ) from exc
            raise

    @contextmanager
    def tx(self) -> Iterator[_PgConn]:
        """A write transaction serialized with the store's other writers on every host."""
        with self._write_lock, self.connect() as conn:
            conn.execute("BEGIN")
            conn.execute("LOCK TABLE state_writer IN EXCLUSIVE MODE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def counter(self) -> AbstractContextManager[_PgConn]:
        """An autocommit connection for hot counters, each statement atomic by its rows' own
        locks: not serialized with the other writers, and its commits not waiting for the disk
        (a crash of the database server may forget their last fraction of a second)."""
        # A durable commit waited up to 29 ms for the WAL's fsync on the development machine.
        return self.connect(durable=False)

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold the mutex ``name`` of this store against every thread, process and host."""
        with _lock_for(f"{self.url}#{self.schema_name}#{name}"), self.connect() as conn:
            conn.execute(
                "INSERT INTO state_mutex (name) VALUES (?) ON CONFLICT DO NOTHING", (name,)
            )
            conn.execute("BEGIN")
            conn.execute("SELECT name FROM state_mutex WHERE name = ? FOR UPDATE", (name,))
            try:
                yield
            finally:
                conn.execute("ROLLBACK")


def open_store(
    state_dir: Path,
    database_url: str | None,
    file: str,
    schema_name: str,
    schema: str,
    what: str,
    *,
    foreign_keys: bool = False,
    append_only: Mapping[str, str] | None = None,
) -> StateDB | PostgresStateDB:
    """The store ``what``: schema ``schema_name`` of the database at ``database_url`` (the
    setting ``OPSLAKE_DATABASE_URL``) when given, else the SQLite file ``file`` in
    ``state_dir``."""
    if database_url:
        return PostgresStateDB(
            libpq_url(database_url), schema_name, schema, what, append_only=append_only
        )
    return StateDB(
        Path(state_dir) / file, schema, what, foreign_keys=foreign_keys, append_only=append_only
    )
