"""Daily quotas and usage counters of the identity store (S6.8b): per API key, and per user
for sessions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple

from opslake.errors import NotFoundError, QuotaExceeded
from opslake.lake.state_db import Conn
from opslake.security.identity_state import IdentityState, to_iso
from opslake.security.roles import Principal


class Holder(NamedTuple):
    """Whose daily quota a request counts against: an API key, or a user's sessions."""

    kind: str  # "key" or "user"
    name: str  # the key id or the user name

    @classmethod
    def of(cls, principal: Principal) -> Holder:
        """The quota ``principal``'s requests count against: its key's, else its user's."""
        return cls("key", principal.key_id) if principal.key_id else cls("user", principal.user)


#: Where each kind of holder's usage is kept: its table and the column naming the holder.
_USAGE_TABLES = {"key": ("api_usage", "key_id"), "user": ("session_usage", '"user"')}


class Use(NamedTuple):
    """Counters of a holder's use: requests kept against its quota, rows returned, and how
    many of those requests were answered with an error (4xx)."""

    requests: int
    rows: int
    errors: int


@dataclass(frozen=True)
class Usage:
    """One key's traffic on one endpoint on one UTC day."""

    key_id: str
    endpoint: str
    day: str
    requests: int
    rows: int
    errors: int


class Quotas(IdentityState):
    """Usage counters per holder, UTC day and endpoint, and the quotas they count against."""

    def record_uses(self, counts: Mapping[tuple[Holder, str, str], Use]) -> None:
        """Add counters per (holder, UTC day, endpoint) in one transaction (the API batches)."""
        if not counts:
            return
        now = to_iso(self._now())
        with self.db.tx() as conn:
            for key_id in {h.name for h, _, _ in counts if h.kind == "key"}:
                if not conn.execute(
                    "UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (now, key_id)
                ).rowcount:
                    raise NotFoundError(f"no API key {key_id!r}; list keys to find its id.")
            for kind, (table, column) in _USAGE_TABLES.items():
                conn.executemany(
                    f"INSERT INTO {table} ({column}, day, endpoint, requests, rows, errors) "
                    f"VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT ({column}, day, endpoint) DO "
                    f"UPDATE SET requests = {table}.requests + excluded.requests, "
                    f"rows = {table}.rows + excluded.rows, errors = {table}.errors + excluded.errors",
                    [
                        (holder.name, day, endpoint, *use)
                        for (holder, day, endpoint), use in counts.items()
                        if holder.kind == kind
                    ],
                )

    def _quota(self, conn: Conn, holder: Holder) -> int:
        """``holder``'s daily quota."""
        if holder.kind == "user":
            self._require_user(conn, holder.name)
            return self.session_quota
        key = conn.execute(
            "SELECT quota_per_day FROM api_keys WHERE key_id = ?", (holder.name,)
        ).fetchone()
        if key is None:
            raise NotFoundError(f"no API key {holder.name!r}; list keys to find its id.")
        return int(key["quota_per_day"])

    def quota_use(self, holder: Holder) -> tuple[int, int]:
        """``holder``'s daily quota and the requests it made today (UTC), as stored."""
        table, column = _USAGE_TABLES[holder.kind]
        with self.db.connect() as conn:
            quota = self._quota(conn, holder)
            used = conn.execute(
                f"SELECT COALESCE(SUM(requests), 0) FROM {table} WHERE {column} = ? AND day = ?",
                (holder.name, self.today()),
            ).fetchone()[0]
        return quota, used

    def reserve_quota(self, holder: Holder) -> str:
        """Take one of ``holder``'s requests for today in the store itself, atomically for every
        process and host sharing it; returns the day taken from. Raises QuotaExceeded.

        One conditional ``UPDATE … WHERE used < quota`` per request: the row's lock makes it a
        compare-and-add across hosts (what the in-memory meter cannot be)."""
        day = self.today()
        table, column = _USAGE_TABLES[holder.kind]
        if holder.kind == "key":
            limit, limit_params = (
                "(SELECT quota_per_day FROM api_keys WHERE key_id = ?)",
                (holder.name,),
            )
        else:
            limit, limit_params = "?", (self.session_quota,)
        take = (
            "UPDATE quota_use SET used = used + 1 WHERE kind = ? AND holder = ? AND day = ? "
            f"AND used < {limit} RETURNING used"
        )
        params = (holder.kind, holder.name, day, *limit_params)
        with self.db.counter() as conn:
            if conn.execute(take, params).fetchone():
                return day
            # The holder's first request of the day (or none left): start from what it used.
            quota = self._quota(conn, holder)
            conn.execute(
                "INSERT INTO quota_use (kind, holder, day, used) "
                f"SELECT ?, ?, ?, COALESCE(SUM(requests), 0) FROM {table} "
                f"WHERE {column} = ? AND day = ? ON CONFLICT DO NOTHING",
                (holder.kind, holder.name, day, holder.name, day),
            )
            if conn.execute(take, params).fetchone():
                return day
        raise self.quota_exceeded(holder, quota)

    def release_quota(self, units: Mapping[tuple[Holder, str], int]) -> None:
        """Give back units taken by :meth:`reserve_quota` (requests refunded), in one go."""
        if not units:
            return
        with self.db.counter() as conn:
            conn.executemany(
                "UPDATE quota_use SET used = CASE WHEN used > ? THEN used - ? ELSE 0 END "
                "WHERE kind = ? AND holder = ? AND day = ?",
                [(n, n, h.kind, h.name, day) for (h, day), n in units.items()],
            )

    def quota_exceeded(self, holder: Holder, quota: int) -> QuotaExceeded:
        """The error for ``holder`` having used all ``quota`` requests today."""
        now = self._now()
        reset = datetime.combine(now.date() + timedelta(days=1), time(), UTC)
        minutes = int((reset - now).total_seconds() // 60)
        who = (
            f"API key {holder.name}"
            if holder.kind == "key"
            else f"the sessions of user {holder.name!r}"
        )
        return QuotaExceeded(
            f"{who} used all {quota} requests of {now.date()}; the quota resets at "
            f"{reset:%Y-%m-%d %H:%M} UTC (in {minutes // 60} h {minutes % 60} min). Wait, "
            "or ask an administrator for a larger quota.",
            reset,
        )

    def usage(self, key_id: str | None = None, day: date | str | None = None) -> list[Usage]:
        """Usage counters, optionally of one key and/or one UTC day."""
        clauses, params = [], []
        if key_id is not None:
            clauses.append("key_id = ?")
            params.append(key_id)
        if day is not None:
            clauses.append("day = ?")
            params.append(day.isoformat() if isinstance(day, date) else day)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT key_id, endpoint, day, requests, rows, errors FROM "
                f"api_usage{where} ORDER BY day, key_id, endpoint",
                params,
            ).fetchall()
        return [Usage(*r) for r in rows]
