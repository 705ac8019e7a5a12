"""The API's read path: the serving warehouse, read-only, reopened when a rebuild swaps it.

``opslake warehouse build`` writes a new file beside the served one and renames it over it;
a reader that keeps its connection keeps a consistent snapshot of the old file. Each request
checks the file's identity (inode and modification time) and, when a rebuild replaced it,
opens the new one for later requests, so the API answers throughout a rebuild and serves the
new data right after it. Every statement is one of the fixed templates of opslake.api.data
with bound parameters: no client text becomes SQL.

Because a warehouse file is a fixed snapshot (see opslake.lake.warehouse), an answer is cached
per file: keyed by the statement and its parameters, dropped when a rebuild swaps the file,
bounded in bytes (least recently used goes first). Statements that name a ``live`` object (a
view over the streaming Parquet files, which change between rebuilds) are never cached. A
cached answer also keeps what was made from it (JSON, CSV and Arrow IPC bodies, Python rows),
so a repeated one is not encoded again. Each worker thread keeps its own cursor.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from opslake.errors import NotFoundError
from opslake.lake.warehouse import open_read_only, read_cursor

warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning)

#: Answers kept per warehouse file, in bytes of Arrow data.
CACHE_BYTES = 64 * 1024 * 1024
T = TypeVar("T")
_EVERYTHING, _NOTHING = re.compile(""), re.compile("(?!)")
# An answer bigger than this share of the cache is not worth evicting the others for.
_LARGEST_SHARE = 8


@dataclass
class _Answer:
    """A cached answer and what was made from it so far (response bodies, Python rows)."""

    table: pa.Table
    derived: dict[str, Any] = field(default_factory=dict)
    #: Bytes it holds beyond the table.
    cost: int = 0


class WarehouseReader:
    """Thread-safe read-only access to ``warehouse.duckdb``, with answers cached per file."""

    def __init__(self, path: Path, cache_bytes: int = CACHE_BYTES) -> None:
        self.path = path
        self.cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._identity: tuple[int, int] | None = None
        self._live = _EVERYTHING
        self._cacheable: dict[str, bool] = {}
        self._answers: OrderedDict[tuple, _Answer] = OrderedDict()
        self._by_table: dict[int, _Answer] = {}
        self._held = 0
        self._local = threading.local()
        #: Answers served from the cache and run on DuckDB since start (for the usage page).
        self.hits = self.misses = 0

    def _connection(self) -> duckdb.DuckDBPyConnection:
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise NotFoundError(
                f"no serving warehouse at {self.path}; run `opslake warehouse "
                "build` (or the serving_refresh job)"
            ) from exc
        identity = (st.st_ino, st.st_mtime_ns)
        with self._lock:
            if identity != self._identity or self._con is None:
                # The old connection is left to the requests still using it (their cursors
                # keep it alive); it is closed when garbage-collected.
                con = open_read_only(self.path)
                self._con, self._identity = con, identity
                self._live = _live_names(con)
                self._cacheable.clear()
                self._answers.clear()
                self._by_table.clear()
                self._held = 0
            return self._con

    def generation(self) -> tuple[int, int] | None:
        """The identity (inode, mtime) of the warehouse file the path names now."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def served_from(self, table: pa.Table) -> tuple[int, int] | None:
        """The :meth:`generation` ``table`` was read from if it is a cached answer, else None
        (a live view's rows, or rows an endpoint made itself)."""
        with self._lock:
            answer = self._by_table.get(id(table))
            return self._identity if answer is not None and answer.table is table else None

    def cached(
        self, sql: str, params: Sequence[object] = (), generation: tuple[int, int] | None = None
    ) -> pa.Table | None:
        """:meth:`query`'s answer if it is cached for the file served now, else None (without
        touching DuckDB, so an event loop may call it). ``generation``: the file's
        :meth:`generation` if the caller just read it (one request asking twice)."""
        generation = generation or self.generation()
        key = _key(sql, params)
        with self._lock:
            if (
                generation is None
                or generation != self._identity
                or (hit := self._answers.get(key)) is None
            ):
                return None
            self._answers.move_to_end(key)
            self.hits += 1
            return hit.table

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """Run one template with bound ``params``; the rows as Arrow (cached per file)."""
        con = self._connection()
        with self._lock:
            if con is not self._con:  # swapped since: answer from the new file next time
                cacheable = False
            else:
                cacheable = self._cacheable.get(sql)
                if cacheable is None:
                    cacheable = not self._live.search(sql)
                    self._cacheable[sql] = cacheable
            key = _key(sql, params)
            if cacheable and (hit := self._answers.get(key)) is not None:
                self._answers.move_to_end(key)
                self.hits += 1
                return hit.table
            self.misses += 1
        # execute() rather than sql(): the relation API binds a statement before running it,
        # which cost ~15 % more CPU per small statement (its extra copy of the rows is cheap).
        table = self._cursor(con).execute(sql, list(params)).to_arrow_table()
        if cacheable and table.nbytes <= self.cache_bytes // _LARGEST_SHARE:
            self._keep(con, key, table)
        return table

    def _cursor(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """This thread's cursor of ``con``, kept for its next statement."""
        # Making one and selecting the warehouse on it cost 0.2 ms, a tenth of a small query.
        held = getattr(self._local, "cursor", None)
        if held is None or held[0] is not con:
            if held is not None:
                held[1].close()  # of a file a rebuild replaced: let that connection go
            held = self._local.cursor = (con, read_cursor(con))
        return held[1]

    def _keep(self, con: duckdb.DuckDBPyConnection, key: tuple, table: pa.Table) -> None:
        with self._lock:
            if con is not self._con or key in self._answers:
                return
            self._answers[key] = self._by_table[id(table)] = _Answer(table)
            self._held += table.nbytes
            self._evict()

    def _evict(self) -> None:
        while self._held > self.cache_bytes and self._answers:
            _, old = self._answers.popitem(last=False)
            del self._by_table[id(old.table)]
            self._held -= old.table.nbytes + old.cost

    def derived(self, table: pa.Table, name: str, make: Callable[[pa.Table], T]) -> T:
        """``make(table)``, made once per cached answer and ``name`` (a response body, the
        rows as Python objects); callers must not modify what it returns."""
        with self._lock:
            answer = self._by_table.get(id(table))
            if answer is None or answer.table is not table:
                answer = None
            elif name in answer.derived:
                return answer.derived[name]
        value = make(table)
        if answer is not None:
            with self._lock:
                if self._by_table.get(id(table)) is answer and name not in answer.derived:
                    answer.derived[name] = value
                    # Python objects cost more than their Arrow columns; bodies are exact.
                    cost = len(value) if isinstance(value, bytes) else 4 * table.nbytes
                    answer.cost += cost
                    self._held += cost
                    self._evict()
        return value

    def tables(self) -> set[str]:
        """Names the warehouse serves."""
        rows = self.query("SELECT name FROM _opslake_warehouse")
        return set(rows.column("name").to_pylist())


def _live_names(con: duckdb.DuckDBPyConnection) -> re.Pattern[str]:
    """A pattern found in every statement that reads one of the file's ``live`` objects."""
    try:
        names = [
            n
            for (n,) in con.execute(
                "SELECT name FROM _opslake_warehouse WHERE kind = 'live'"
            ).fetchall()
        ]
    except duckdb.Error:
        return _EVERYTHING  # built before objects had kinds: views over Parquet, cache nothing
    if not names:
        return _NOTHING
    return re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")


def _key(sql: str, params: Sequence[object]) -> tuple:
    """A cache key of a statement and its parameters (lists, e.g. departments, as tuples)."""
    return (sql, *(tuple(p) if isinstance(p, list) else p for p in params))
