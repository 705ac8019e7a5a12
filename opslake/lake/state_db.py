"""One SQLite file of installation state (identity, subscriptions): the one connection helper.

WAL mode, a fresh connection per call (safe across threads and processes), the file 0600,
a full disk raised as one StorageError, and write transactions taken ``IMMEDIATE`` so that
read-check-update sequences cannot interleave across threads or processes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opslake.errors import state_writes

#: Writers of one file in this process queue here before SQLite's write lock: SQLite's own
#: busy handler sleeps up to 100 ms between retries, which under many concurrent requests is
#: most of the time.
_WRITE_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


class StateDB:
    """The SQLite file ``path`` with ``schema`` applied; ``what`` names it in errors."""

    def __init__(self, path: Path, schema: str, what: str, *, foreign_keys: bool = False) -> None:
        self.path, self._what, self._foreign_keys = Path(path), what, foreign_keys
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _LOCKS_LOCK:
            self._write_lock = _WRITE_LOCKS.setdefault(self.path.resolve(), threading.Lock())
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(schema)
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
