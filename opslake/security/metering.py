"""API-key quotas and usage counters for a busy API: counted in memory, written in batches.

Writing each request's counters to ``security.db`` costs a SQLite transaction (with its fsync)
per request, which under 50 concurrent clients is most of a request's time. The API server
instead keeps one :class:`UsageMeter`: requests are counted in memory and written by a
background thread every ``interval_s`` (and on :meth:`flush`, which the usage endpoint and
shutdown call), in one transaction, and then rereads the quota state of the keys in use. The
quota check answers from a key's remaining requests as last read, less what this process
counted since, so keys shared by several processes (two API servers) are held to their quota
within about an interval's worth of requests.

A crash loses at most the last ``interval_s`` of counters. These are statistics and limits,
not data anyone was promised: the audit log, written before every answer, is the record of
each request.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from time import monotonic

from opslake.errors import StorageError
from opslake.security.identity import IdentityStore, Use

_log = logging.getLogger(__name__)
# A remembered quota state older than this many intervals is read again by the request.
_STALE_AFTER = 3


@dataclass
class _Left:
    """A key's remaining requests when last read, and what was counted since."""

    day: str
    at: float
    remaining: int
    quota: int
    since: int = 0


class UsageMeter:
    """Quota checks and usage counting for API keys, written to ``identity`` in batches."""

    def __init__(self, identity: IdentityStore, interval_s: float = 1.0) -> None:
        self.identity = identity
        self.interval_s = interval_s
        self._lock = threading.Lock()
        # Flushing and rereading a key never interleave, so "written" and "pending" add up.
        self._io = threading.Lock()
        self._pending: dict[tuple[str, str, str], Use] = {}
        self._left: dict[str, _Left] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def remaining(self, key_id: str) -> int | None:
        """Requests ``key_id`` has left today, from memory; None when the key is new or that
        is stale (then :meth:`check`, which reads the store). Raises QuotaExceeded."""
        day = self.identity.today()
        with self._lock:
            left = self._left.get(key_id)
            # The flushing thread rereads keys in use every interval; a request never waits
            # for it unless it fell well behind (or does not run, as in tests).
            if left is None or left.day != day or \
                    monotonic() - left.at >= _STALE_AFTER * self.interval_s:
                return None
        return self._left_or_raise(key_id, left)

    def check(self, key_id: str) -> int:
        """Requests ``key_id`` has left today; raises QuotaExceeded when none are left."""
        known = self.remaining(key_id)
        if known is not None:
            return known
        return self._left_or_raise(key_id, self._reread(key_id, self.identity.today()))

    def _left_or_raise(self, key_id: str, left: _Left) -> int:
        remaining = left.remaining - left.since
        if remaining <= 0:
            raise self.identity.quota_exceeded(key_id, left.quota)
        return remaining

    def _reread(self, key_id: str, day: str) -> _Left:
        with self._io:
            quota, used = self.identity.quota_use(key_id)
            with self._lock:
                unwritten = sum(u.requests for (k, d, _), u in self._pending.items()
                                if k == key_id and d == day)
                left = _Left(day, monotonic(), quota - used, quota, unwritten)
                self._left[key_id] = left
        return left

    def count(self, key_id: str, endpoint: str, rows: int, status: int) -> None:
        """Count one request of ``key_id`` (written at the next flush)."""
        day = self.identity.today()
        where = (key_id, day, endpoint)
        with self._lock:
            was = self._pending.get(where, Use(0, 0, 0))
            self._pending[where] = Use(was.requests + 1, was.rows + rows,
                                       was.errors + int(status >= 400))
            left = self._left.get(key_id)
            if left is not None and left.day == day:
                left.since += 1

    def flush(self) -> None:
        """Write the counters gathered so far."""
        with self._io:
            with self._lock:
                batch, self._pending = self._pending, {}
            try:
                self.identity.record_uses(batch)
            except Exception:
                with self._lock:  # put them back: the next flush tries again
                    for where, use in batch.items():
                        was = self._pending.get(where, Use(0, 0, 0))
                        self._pending[where] = Use(*(a + b for a, b in zip(was, use,
                                                                           strict=True)))
                raise

    def start(self) -> None:
        """Flush every ``interval_s`` in a background thread until :meth:`stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="opslake-usage", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
                day = self.identity.today()
                with self._lock:
                    in_use = list(self._left)
                for key_id in in_use:
                    self._reread(key_id, day)
            except StorageError as exc:  # a full disk: say so once a pass, not a traceback
                _log.warning("API usage counters kept in memory, retrying in %.0f s: %s",
                             self.interval_s, exc)
            except Exception:  # noqa: BLE001 - kept pending; the next pass retries
                _log.exception("writing API usage counters failed; retrying in %.0f s",
                               self.interval_s)

    def stop(self) -> None:
        """Stop the thread and write what is pending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
