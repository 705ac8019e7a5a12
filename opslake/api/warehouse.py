"""The API's read path: the serving warehouse, read-only, reopened when a rebuild swaps it.

``opslake warehouse build`` writes a new file beside the served one and renames it over it;
a reader that keeps its connection keeps a consistent snapshot of the old file. Each request
checks the file's identity (inode and modification time) and, when a rebuild replaced it,
opens the new one for later requests, so the API answers throughout a rebuild and serves the
new data right after it. Every statement is one of the fixed templates of opslake.api.data
with bound parameters: no client text becomes SQL.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from opslake.errors import NotFoundError


class WarehouseReader:
    """Thread-safe read-only access to ``warehouse.duckdb``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._identity: tuple[int, int] | None = None

    def _connection(self) -> duckdb.DuckDBPyConnection:
        try:
            st = os.stat(self.path)
        except FileNotFoundError as exc:
            raise NotFoundError(f"no serving warehouse at {self.path}; run `opslake warehouse "
                                "build` (or the serving_refresh job)") from exc
        identity = (st.st_ino, st.st_mtime_ns)
        with self._lock:
            if identity != self._identity or self._con is None:
                # The old connection is left to the requests still using it (their cursors
                # keep it alive); it is closed when garbage-collected.
                self._con = duckdb.connect(str(self.path), read_only=True)
                self._identity = identity
            return self._con

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """Run one template with bound ``params``; the rows as Arrow."""
        cursor = self._connection().cursor()
        try:
            return cursor.sql(sql, params=list(params)).to_arrow_table()
        finally:
            cursor.close()

    def tables(self) -> set[str]:
        """Names the warehouse serves."""
        rows = self.query("SELECT name FROM _opslake_warehouse")
        return set(rows.column("name").to_pylist())
