"""The identity store (``state_dir/security.db``, or schema ``identity`` of
``OPSLAKE_DATABASE_URL``) and what its parts share.

One schema for users, sessions, API keys and usage (the tables reference each other), kept
through the one state helper (:func:`opslake.lake.state_db.open_store`); the clock, the TOTP
secret's ``protect``/``unprotect`` pair, and the row-to-principal rule every part uses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from opslake.errors import NotFoundError
from opslake.lake.state_db import Conn, Row, open_store
from opslake.security.roles import ROLES, Principal
from opslake.settings import Settings

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    departments TEXT NOT NULL,
    businesses TEXT NOT NULL,
    password TEXT NOT NULL,
    totp_secret TEXT,
    totp_last_step INTEGER,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    first_failed_at TEXT,
    locked_until TEXT,
    password_changed_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    "user" TEXT NOT NULL REFERENCES users(name),
    created_at TEXT NOT NULL,
    last_used_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    "user" TEXT NOT NULL REFERENCES users(name),
    scopes TEXT NOT NULL,
    salt BLOB NOT NULL,
    secret_hash BLOB NOT NULL,
    quota_per_day INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT,
    last_used_at TEXT
);
CREATE TABLE IF NOT EXISTS api_usage (
    key_id TEXT NOT NULL REFERENCES api_keys(key_id),
    day TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day, endpoint)
);
CREATE TABLE IF NOT EXISTS session_usage (
    "user" TEXT NOT NULL REFERENCES users(name),
    day TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY ("user", day, endpoint)
);
CREATE TABLE IF NOT EXISTS quota_use (
    kind TEXT NOT NULL,
    holder TEXT NOT NULL,
    day TEXT NOT NULL,
    used INTEGER NOT NULL,
    PRIMARY KEY (kind, holder, day)
);
"""


def to_iso(moment: datetime) -> str:
    """``moment`` as the store keeps it: ISO 8601 in UTC, to the microsecond."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str | None) -> datetime | None:
    """A stored moment back as a datetime; None stays None."""
    return None if text is None else datetime.fromisoformat(text)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _identity(text: str) -> str:
    return text


class IdentityState:
    """The identity store's file, clock and TOTP sealing, under each of its parts.

    ``now`` is the clock (UTC, injectable for tests); ``protect``/``unprotect`` encrypt and
    decrypt TOTP secrets at rest (plug SM4 field encryption in here).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        now: Callable[[], datetime] = _utc_now,
        protect: Callable[[str], str] = _identity,
        unprotect: Callable[[str], str] = _identity,
    ) -> None:
        self.path = Path(settings.state_dir) / "security.db"
        self.session_quota = settings.session_quota_per_day
        self._clock = now
        # sha256 of a raw key -> (its principal, when it expires, monotonic time verified)
        self._verified: dict[bytes, tuple[Principal, datetime, float]] = {}
        self._protect = protect
        self._unprotect = unprotect
        #: The store itself (SQLite file or a PostgreSQL schema), for its parts and for tests.
        self.db = open_store(
            settings.state_dir,
            settings.database_url,
            "security.db",
            "identity",
            _SCHEMA,
            "the identity store",
            foreign_keys=True,
        )

    def _now(self) -> datetime:
        moment = self._clock()
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def today(self) -> str:
        """The UTC day (ISO) by the store's clock: the day usage and quotas count against."""
        return self._now().date().isoformat()

    @staticmethod
    def _user_row(conn: Conn, name: str) -> Row | None:
        return conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()

    def _require_user(self, conn: Conn, name: str) -> Row:
        row = self._user_row(conn, name)
        if row is None:
            raise NotFoundError(f"no user {name!r}; list users or add it first.")
        return row

    @staticmethod
    def _principal(row: Row, scopes: frozenset[str], key_id: str | None = None) -> Principal:
        return Principal(
            row["name"],
            row["role"],
            scopes & ROLES[row["role"]].scopes,
            frozenset(json.loads(row["departments"])),
            frozenset(json.loads(row["businesses"])),
            key_id,
        )
