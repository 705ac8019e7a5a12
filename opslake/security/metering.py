"""Daily quotas reserved atomically in memory, and usage counters written in batches.

A request takes one unit of its holder's daily quota (an API key's, or its user's for a
session) before it runs, and the unit is kept as usage or refunded once its answer is known:
checking before and counting after let concurrent requests all pass the check and overshoot.
The API server keeps one :class:`UsageMeter`. A reservation is a compare-and-add under a
lock held for microseconds (never across an await), so within one process a quota is never
overshot. Kept units are written by a background thread every ``interval_s`` (and on
:meth:`flush`, which the usage endpoint and shutdown call) in one transaction, which then
rereads the stored use of the holders in use; a holder's remaining requests are those as last
read, less what this process reserved since (in flight or not yet written).

Reservations are not written one by one: a durable ``UPDATE … WHERE used < quota`` per
request cost 3.9 ms (a kept connection) to 26 ms (a fresh one, as the store opens them) of
wall time with its fsync on the development machine, against 0.5 ms of CPU for a whole cached
answer, while the in-memory reservation costs under a microsecond. The price: a crash loses
the last ``interval_s`` of kept units (the restarted process reads the stored count, so a
holder may get that many requests more that day), and two processes sharing a SQLite store
each reserve from their own view, so together they may overshoot by what the others reserved
within an interval. The audit log, written before every answer, is the record of each request.

On a shared database (``OPSLAKE_DATABASE_URL``: several API hosts) the meter is *shared*: each
reservation is one conditional update in the database (:meth:`IdentityStore.reserve_quota`,
about a millisecond on loopback), so no host can overshoot what the others took, and a refund
gives its unit back there at once (refunds are rare: 5xx, 401, 403, cancelled requests).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from time import monotonic

from opslake.errors import StorageError
from opslake.security.identity import Holder, IdentityStore, Use

_log = logging.getLogger(__name__)
# A remembered quota state older than this many intervals is read again by the request.
_STALE_AFTER = 3


@dataclass
class _Left:
    """A holder's remaining requests when last read, and what was reserved here since."""

    day: str
    at: float
    remaining: int
    quota: int
    since: int = 0


@dataclass(slots=True)
class Reservation:
    """One unit of ``holder``'s quota for ``day``, held by a request until kept or refunded."""

    holder: Holder
    day: str
    settled: bool = False


class UsageMeter:
    """Quota reservations and usage counting, written to ``identity`` in batches."""

    def __init__(self, identity: IdentityStore, interval_s: float = 1.0) -> None:
        self.identity = identity
        self.interval_s = interval_s
        self._lock = threading.Lock()
        # Flushing and rereading a holder never interleave, so "written" and "pending" add up.
        self._io = threading.Lock()
        self._pending: dict[tuple[Holder, str, str], Use] = {}
        self._in_flight: dict[tuple[Holder, str], int] = {}
        self._left: dict[Holder, _Left] = {}
        # Several hosts share the store: reservations go to the database, not to memory.
        self.shared = identity.db.dialect != "sqlite"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_reserve(self, holder: Holder) -> Reservation | None:
        """One unit of ``holder``'s quota from memory; None when its state is unknown or stale
        (then :meth:`reserve`, which reads the store). Raises QuotaExceeded."""
        if self.shared:
            return None
        day = self.identity.today()
        with self._lock:
            left = self._left.get(holder)
            # The flushing thread rereads holders in use every interval; a request never
            # waits for it unless it fell well behind (or does not run, as in tests).
            if (
                left is None
                or left.day != day
                or monotonic() - left.at >= _STALE_AFTER * self.interval_s
            ):
                return None
            return self._take(holder, left)

    def reserve(self, holder: Holder) -> Reservation:
        """One unit of ``holder``'s quota, reading the store first when memory cannot tell.

        Raises QuotaExceeded when none is left today."""
        if self.shared:
            day = self.identity.reserve_quota(holder)
            with self._lock:
                self._in_flight[(holder, day)] = self._in_flight.get((holder, day), 0) + 1
            return Reservation(holder, day)
        reservation = self.try_reserve(holder)
        if reservation is not None:
            return reservation
        self._reread(holder, self.identity.today())
        with self._lock:  # the state just read, or a newer one the flushing thread put there
            return self._take(holder, self._left[holder])

    def _take(self, holder: Holder, left: _Left) -> Reservation:
        """Reserve from ``left`` (the lock held): the compare-and-add that makes quotas atomic."""
        if left.remaining - left.since <= 0:
            raise self.identity.quota_exceeded(holder, left.quota)
        left.since += 1
        where = (holder, left.day)
        self._in_flight[where] = self._in_flight.get(where, 0) + 1
        return Reservation(holder, left.day)

    def keep(self, reservation: Reservation, endpoint: str, rows: int, status: int) -> None:
        """Keep ``reservation`` as one request on ``endpoint`` (written at the next flush)."""
        with self._lock:
            if not self._settle(reservation):
                return
            where = (reservation.holder, reservation.day, endpoint)
            was = self._pending.get(where, Use(0, 0, 0))
            self._pending[where] = Use(
                was.requests + 1, was.rows + rows, was.errors + int(status >= 400)
            )

    def refund(self, reservation: Reservation) -> None:
        """Give ``reservation``'s unit back (the request failed through no fault of the caller);
        nothing once it was kept or refunded."""
        with self._lock:
            if not self._settle(reservation):
                return
            if self.shared:
                self.identity.release_quota({(reservation.holder, reservation.day): 1})
                return
            left = self._left.get(reservation.holder)
            if left is not None and left.day == reservation.day:
                left.since -= 1

    def _settle(self, reservation: Reservation) -> bool:
        """Mark ``reservation`` settled (the lock held); False when it already was."""
        if reservation.settled:
            return False
        reservation.settled = True
        where = (reservation.holder, reservation.day)
        if self._in_flight[where] == 1:
            del self._in_flight[where]
        else:
            self._in_flight[where] -= 1
        return True

    def _reread(self, holder: Holder, day: str) -> None:
        with self._io:
            quota, used = self.identity.quota_use(holder)
            with self._lock:
                reserved = self._in_flight.get((holder, day), 0) + sum(
                    u.requests for (h, d, _), u in self._pending.items() if h == holder and d == day
                )
                self._left[holder] = _Left(day, monotonic(), quota - used, quota, reserved)

    def flush(self) -> None:
        """Write the counters kept so far."""
        with self._io:
            with self._lock:
                batch, self._pending = self._pending, {}
            try:
                self.identity.record_uses(batch)
            except Exception:
                with self._lock:  # put them back: the next flush tries again
                    for where, use in batch.items():
                        was = self._pending.get(where, Use(0, 0, 0))
                        self._pending[where] = Use(*(a + b for a, b in zip(was, use, strict=True)))
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
                for holder in in_use:
                    self._reread(holder, day)
            except StorageError as exc:  # a full disk: say so once a pass, not a traceback
                _log.warning(
                    "API usage counters kept in memory, retrying in %.0f s: %s",
                    self.interval_s,
                    exc,
                )
            except Exception:  # noqa: BLE001 - kept pending; the next pass retries
                _log.exception(
                    "writing API usage counters failed; retrying in %.0f s", self.interval_s
                )

    def stop(self) -> None:
        """Stop the thread and write what is pending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
