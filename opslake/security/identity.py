"""Users, passwords, sessions, TOTP and API keys for the data-service API (MLPS level 3).

Carries the software side of S6.6a (identification and authentication: password policy,
lockout, expiry, two factors for administrators) and S6.8b (API management: keys with
narrowed scopes, expiry, revocation, daily quotas and usage counters). Everything lives in
one SQLite file, ``state_dir/security.db`` (WAL mode, a fresh connection per call, so one
store may be shared by threads and processes). A verified API key is remembered in memory for
:data:`KEY_CACHE_SECONDS` so a busy key is not looked up on every request: revoking a key or
disabling a user through this store takes effect at once in this process, and within that many
seconds in the others (the API server, when the CLI revokes).

Secrets are never stored: passwords as argon2id hashes (:mod:`opslake.security.passwords`,
with the policy), session tokens as SHA-256 hashes, API key secrets as salted SHA-256 hashes.
TOTP codes (RFC 6238, :mod:`opslake.security.totp`) are checked by pyotp. TOTP secrets must be
recoverable, so they pass through the ``protect``/``unprotect`` pair the caller supplies (SM4 field
encryption in production; identity by default).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import pyotp

from opslake.errors import (
    AuthError,
    Forbidden,
    InputError,
    NotFoundError,
    PasswordExpired,
    QuotaExceeded,
)
from opslake.lake.state_db import StateDB
from opslake.security.crypto import FieldCipher
from opslake.security.passwords import (
    check_password,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)
from opslake.security.roles import ROLES, SCOPES, Principal
from opslake.security.totp import TOTP_DIGITS, TOTP_ISSUER, TOTP_STEP
from opslake.settings import Settings

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
PASSWORD_MAX_AGE = timedelta(days=90)
SESSION_IDLE = timedelta(minutes=30)
SESSION_MAX = timedelta(hours=8)
KEY_PREFIX = "olk"
KEY_CACHE_SECONDS = 2.0

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_BAD_LOGIN = "wrong user name, password or TOTP code; check them and try again"

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
    user TEXT NOT NULL REFERENCES users(name),
    created_at TEXT NOT NULL,
    last_used_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name),
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
    user TEXT NOT NULL REFERENCES users(name),
    day TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    rows INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, day, endpoint)
);
"""


class Holder(NamedTuple):
    """Whose daily quota a request counts against: an API key, or a user's sessions."""

    kind: str  # "key" or "user"
    name: str  # the key id or the user name

    @classmethod
    def of(cls, principal: Principal) -> Holder:
        """The quota ``principal``'s requests count against: its key's, else its user's."""
        return cls("key", principal.key_id) if principal.key_id else cls("user", principal.user)


#: Where each kind of holder's usage is kept: its table and the column naming the holder.
_USAGE_TABLES = {"key": ("api_usage", "key_id"), "user": ("session_usage", "user")}


class Use(NamedTuple):
    """Counters of a holder's use: requests kept against its quota, rows returned, and how
    many of those requests were answered with an error (4xx)."""

    requests: int
    rows: int
    errors: int


@dataclass(frozen=True)
class Session:
    """A login: the raw token (shown once, kept only as a hash) and when it lapses if idle."""

    token: str
    expires_at: datetime


@dataclass(frozen=True)
class User:
    """A user as administrators see it; no password or TOTP material."""

    name: str
    role: str
    departments: tuple[str, ...]
    businesses: tuple[str, ...]
    disabled: bool
    totp_enrolled: bool
    failed_attempts: int
    locked_until: datetime | None
    password_changed_at: datetime
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """An API key's metadata; the secret is shown once at creation and never again."""

    key_id: str
    user: str
    scopes: frozenset[str]
    quota_per_day: int
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class Usage:
    """One key's traffic on one endpoint on one UTC day."""

    key_id: str
    endpoint: str
    day: str
    requests: int
    rows: int
    errors: int


def _key_hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _identity(text: str) -> str:
    return text


#: The associated data TOTP secrets are sealed under (opslake.security.crypto).
TOTP_CONTEXT = "identity.totp_secret"


class IdentityStore:
    """Users, sessions, TOTP and API keys in ``state_dir/security.db``.

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
        self._db = StateDB(self.path, _SCHEMA, "the identity store", foreign_keys=True)

    # -- plumbing ------------------------------------------------------------------------

    @classmethod
    def sealed(cls, settings: Settings, **kwargs: Any) -> IdentityStore:
        """The installation's store, TOTP secrets sealed with its SM4 data key."""
        protect, unprotect = FieldCipher.from_settings(settings).field(TOTP_CONTEXT)
        return cls(settings, protect=protect, unprotect=unprotect, **kwargs)

    def _now(self) -> datetime:
        moment = self._clock()
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    def today(self) -> str:
        """The UTC day (ISO) by the store's clock: the day usage and quotas count against."""
        return self._now().date().isoformat()

    @staticmethod
    def _user_row(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
        return conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()

    def _require_user(self, conn: sqlite3.Connection, name: str) -> sqlite3.Row:
        row = self._user_row(conn, name)
        if row is None:
            raise NotFoundError(f"no user {name!r}; list users or add it first.")
        return row

    @staticmethod
    def _principal(
        row: sqlite3.Row, scopes: frozenset[str], key_id: str | None = None
    ) -> Principal:
        return Principal(
            row["name"],
            row["role"],
            scopes & ROLES[row["role"]].scopes,
            frozenset(json.loads(row["departments"])),
            frozenset(json.loads(row["businesses"])),
            key_id,
        )

    @staticmethod
    def _locked(row: sqlite3.Row, now: datetime) -> AuthError | None:
        until = _when(row["locked_until"])
        if until is not None and now < until:
            return AuthError(
                f"account {row['name']!r} is locked after {MAX_FAILURES} failed "
                f"attempts until {until:%Y-%m-%d %H:%M} UTC; wait, or ask an "
                "administrator to unlock it."
            )
        return None

    def _count_failure(
        self, conn: sqlite3.Connection, row: sqlite3.Row, now: datetime
    ) -> AuthError:
        first = _when(row["first_failed_at"])
        in_window = first is not None and now - first < FAILURE_WINDOW
        count = row["failed_attempts"] + 1 if in_window else 1
        if count >= MAX_FAILURES:
            until = now + LOCKOUT
            conn.execute(
                "UPDATE users SET failed_attempts = 0, first_failed_at = NULL, "
                "locked_until = ? WHERE name = ?",
                (_iso(until), row["name"]),
            )
            # Locked out means out of every door: the sessions it already had end too.
            conn.execute("DELETE FROM sessions WHERE user = ?", (row["name"],))
            return AuthError(
                f"wrong credentials; account {row['name']!r} is now "
                f"locked until {until:%Y-%m-%d %H:%M} UTC after {MAX_FAILURES} "
                "failed attempts. Wait, or ask an administrator to unlock it."
            )
        conn.execute(
            "UPDATE users SET failed_attempts = ?, first_failed_at = ? WHERE name = ?",
            (count, _iso(first if in_window and first is not None else now), row["name"]),
        )
        return AuthError(_BAD_LOGIN)

    def _match_totp(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        code: str,
        at: datetime,
        *,
        same_step: bool = False,
    ) -> str | None:
        """Consume ``code`` if valid and unused (``same_step``: or the last one used)."""
        code = code.replace(" ", "")
        if not (len(code) == TOTP_DIGITS and code.isdigit()):
            return f"a TOTP code is {TOTP_DIGITS} digits"
        otp = pyotp.TOTP(
            self._unprotect(row["totp_secret"]), digits=TOTP_DIGITS, interval=TOTP_STEP
        )
        now_step = otp.timecode(at)
        # One step either side absorbs clock drift between server and authenticator.
        matched = [
            s
            for s in (now_step - 1, now_step, now_step + 1)
            if hmac.compare_digest(otp.generate_otp(s), code)
        ]
        if not matched:
            return "wrong TOTP code"
        last = row["totp_last_step"]
        if last is not None and (matched[-1] < last or (matched[-1] == last and not same_step)):
            return "this TOTP code was already used; wait for the next one"
        conn.execute(
            "UPDATE users SET totp_last_step = ? WHERE name = ?", (matched[-1], row["name"])
        )
        return None

    # -- users ---------------------------------------------------------------------------

    def _insert_user(
        self,
        conn: sqlite3.Connection,
        name: str,
        role: str,
        password: str,
        departments: Iterable[str],
        businesses: Iterable[str],
    ) -> None:
        if not _NAME.fullmatch(name):
            raise InputError(
                f"user name {name!r} is not allowed; use 1-64 letters, digits, "
                "'.', '_', '@' or '-', starting with a letter or digit."
            )
        if role not in ROLES:
            raise InputError(f"role {role!r} does not exist; use one of {sorted(ROLES)}.")
        departments, businesses = sorted(set(departments)), sorted(set(businesses))
        if ROLES[role].row_scoped and not (departments or businesses):
            raise InputError(
                f"role {role!r} only sees rows of its departments and businesses; "
                "give the user at least one of them."
            )
        check_password(password, name)
        if self._user_row(conn, name) is not None:
            raise InputError(f"user {name!r} already exists; pick another name.")
        now = _iso(self._now())
        conn.execute(
            "INSERT INTO users (name, role, departments, businesses, password, "
            "password_changed_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                role,
                json.dumps(departments, ensure_ascii=False),
                json.dumps(businesses, ensure_ascii=False),
                hash_password(password),
                now,
                now,
            ),
        )

    def bootstrap_admin(self, name: str, password: str) -> None:
        """Create the first administrator; refused once any administrator exists."""
        with self._db.tx() as conn:
            if conn.execute("SELECT 1 FROM users WHERE role = 'admin'").fetchone():
                raise Forbidden(
                    "an administrator already exists; log in as one to add users "
                    "instead of bootstrapping again."
                )
            self._insert_user(conn, name, "admin", password, (), ())

    def add_user(
        self,
        name: str,
        role: str,
        password: str,
        departments: Iterable[str] = (),
        businesses: Iterable[str] = (),
    ) -> None:
        """Add a user; ``departments``/``businesses`` are the rows a row-scoped role sees."""
        with self._db.tx() as conn:
            self._insert_user(conn, name, role, password, departments, businesses)

    def set_password(self, name: str, password: str, *, current: str | None = None) -> None:
        """Change a password; with ``current`` it is a self-service change that verifies it.

        Clears any lockout and ends the user's sessions.
        """
        check_password(password, name)
        now = self._now()
        with self._db.connect() as conn:
            row = self._require_user(conn, name)
        if row["disabled"]:
            raise Forbidden(f"user {name!r} is disabled; ask an administrator to re-enable it.")
        if current is not None:
            if (locked := self._locked(row, now)) is not None:
                raise locked
            if not verify_password(current, row["password"]):
                with self._db.tx() as conn:
                    failure = self._count_failure(conn, self._require_user(conn, name), now)
                raise failure
        if verify_password(password, row["password"]):
            raise InputError(
                f"the new password for {name!r} equals the current one; choose a "
                "different password."
            )
        with self._db.tx() as conn:
            conn.execute(
                "UPDATE users SET password = ?, password_changed_at = ?, "
                "failed_attempts = 0, first_failed_at = NULL, locked_until = NULL "
                "WHERE name = ?",
                (hash_password(password), _iso(now), name),
            )
            conn.execute("DELETE FROM sessions WHERE user = ?", (name,))

    def unlock_user(self, name: str) -> None:
        """Lift a lockout before it runs out."""
        with self._db.tx() as conn:
            self._require_user(conn, name)
            conn.execute(
                "UPDATE users SET failed_attempts = 0, first_failed_at = NULL, "
                "locked_until = NULL WHERE name = ?",
                (name,),
            )

    def disable_user(self, name: str) -> None:
        """Disable a user: sessions end at once and keys stop authenticating."""
        self._verified.clear()
        with self._db.tx() as conn:
            row = self._require_user(conn, name)
            if row["role"] == "admin" and not row["disabled"]:
                others = conn.execute(
                    "SELECT COUNT(*) FROM users WHERE role = 'admin' AND "
                    "disabled = 0 AND name <> ?",
                    (name,),
                ).fetchone()[0]
                if not others:
                    raise Forbidden(
                        f"{name!r} is the last active administrator; add another "
                        "administrator before disabling it."
                    )
            conn.execute("UPDATE users SET disabled = 1 WHERE name = ?", (name,))
            conn.execute("DELETE FROM sessions WHERE user = ?", (name,))

    def users(self) -> list[User]:
        """Every user, by name."""
        with self._db.connect() as conn:
            rows = conn.execute("SELECT * FROM users ORDER BY name").fetchall()
        return [
            User(
                r["name"],
                r["role"],
                tuple(json.loads(r["departments"])),
                tuple(json.loads(r["businesses"])),
                bool(r["disabled"]),
                r["totp_secret"] is not None,
                r["failed_attempts"],
                _when(r["locked_until"]),
                datetime.fromisoformat(r["password_changed_at"]),
                datetime.fromisoformat(r["created_at"]),
            )
            for r in rows
        ]

    # -- sessions ------------------------------------------------------------------------

    def _login_failure(
        self,
        conn: sqlite3.Connection,
        row: sqlite3.Row,
        password_ok: bool,
        totp: str | None,
        now: datetime,
    ) -> AuthError | None:
        """Why this login fails, counting wrong guesses; None (and counters reset) if it passes."""
        name = row["name"]
        if not password_ok:
            return self._count_failure(conn, row, now)
        if row["disabled"]:
            return AuthError(f"user {name!r} is disabled; ask an administrator.")
        if row["role"] == "admin" and row["totp_secret"] is None:
            # Enrolment is forced before an administrator's first sign-in (MLPS level 3).
            return AuthError(
                f"administrator {name!r} signs in with a TOTP code: enrol an "
                f"authenticator first (opslake security enrol-totp {name})."
            )
        if row["totp_secret"] is not None:
            if not totp:
                return AuthError(
                    f"user {name!r} has a TOTP authenticator; send its "
                    f"{TOTP_DIGITS}-digit code with the password."
                )
            if self._match_totp(conn, row, totp, now) is not None:
                return self._count_failure(conn, row, now)
        conn.execute(
            "UPDATE users SET failed_attempts = 0, first_failed_at = NULL, "
            "locked_until = NULL WHERE name = ?",
            (name,),
        )
        changed = datetime.fromisoformat(row["password_changed_at"])
        if now - changed >= PASSWORD_MAX_AGE:
            return PasswordExpired(
                f"password expired; change it (user {name!r}, last changed "
                f"{changed:%Y-%m-%d}, passwords last "
                f"{PASSWORD_MAX_AGE.days} days)."
            )
        return None

    def login(self, user: str, password: str, totp: str | None = None) -> Session:
        """Check password (and TOTP code once enrolled) and open a session.

        Raises AuthError (wrong credentials, locked, disabled) or PasswordExpired.
        """
        now = self._now()
        with self._db.connect() as conn:
            row = self._user_row(conn, user)
        if row is not None and (locked := self._locked(row, now)) is not None:
            raise locked
        # Hashing runs outside the write lock so slow hashing does not serialise the store.
        password_ok = verify_password(password, row["password"] if row else dummy_hash())
        if row is None:
            raise AuthError(_BAD_LOGIN)
        checked = row["password"]
        # A scrypt (or outdated argon2) hash is replaced now the password is known to be right.
        rehashed = hash_password(password) if password_ok and needs_rehash(checked) else None
        token = secrets.token_urlsafe(32)
        with self._db.tx() as conn:
            row = self._require_user(conn, user)
            # A password changed while hashing ran must not let the old one in.
            password_ok = password_ok and row["password"] == checked
            failure = self._locked(row, now) or self._login_failure(
                conn, row, password_ok, totp, now
            )
            if failure is None and rehashed is not None:
                conn.execute("UPDATE users SET password = ? WHERE name = ?", (rehashed, user))
            if failure is None:
                conn.execute(
                    "DELETE FROM sessions WHERE created_at < ? OR last_used_at < ?",
                    (_iso(now - SESSION_MAX), _iso(now - SESSION_IDLE)),
                )
                conn.execute(
                    "INSERT INTO sessions (token_hash, user, created_at, last_used_at) "
                    "VALUES (?, ?, ?, ?)",
                    (_token_hash(token), user, _iso(now), _iso(now)),
                )
        if failure is not None:
            raise failure
        return Session(token, now + SESSION_IDLE)

    def session(self, token: str) -> Principal:
        """The principal of a live session; each use extends its idle timeout."""
        now = self._now()
        digest = _token_hash(token)
        failure: AuthError | None = None
        with self._db.tx() as conn:
            row = conn.execute(
                "SELECT s.created_at AS s_created, s.last_used_at, u.* "
                "FROM sessions s JOIN users u ON u.name = s.user "
                "WHERE s.token_hash = ?",
                (digest,),
            ).fetchone()
            if row is None:
                failure = AuthError("session unknown or ended; log in again.")
            elif now >= datetime.fromisoformat(row["s_created"]) + SESSION_MAX:
                failure = AuthError(
                    f"session reached its {SESSION_MAX.seconds // 3600}-hour limit; log in again."
                )
            elif now >= datetime.fromisoformat(row["last_used_at"]) + SESSION_IDLE:
                failure = AuthError(
                    f"session idle for over {SESSION_IDLE.seconds // 60} minutes; log in again."
                )
            elif row["disabled"]:
                failure = AuthError(f"user {row['name']!r} is disabled; ask an administrator.")
            if failure is not None:
                conn.execute("DELETE FROM sessions WHERE token_hash = ?", (digest,))
            else:
                conn.execute(
                    "UPDATE sessions SET last_used_at = ? WHERE token_hash = ?", (_iso(now), digest)
                )
        if failure is not None:
            raise failure
        return self._principal(row, ROLES[row["role"]].scopes)

    def logout(self, token: str) -> None:
        """End a session; unknown tokens are ignored."""
        with self._db.tx() as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))

    # -- TOTP ----------------------------------------------------------------------------

    def enrol_totp(self, user: str) -> tuple[str, str]:
        """Give ``user`` a new TOTP secret; returns it and the otpauth:// URI for a QR code."""
        secret = pyotp.random_base32()
        with self._db.tx() as conn:
            self._require_user(conn, user)
            conn.execute(
                "UPDATE users SET totp_secret = ?, totp_last_step = NULL WHERE name = ?",
                (self._protect(secret), user),
            )
        label = quote(f"{TOTP_ISSUER}:{user}")
        query = urlencode(
            {
                "secret": secret,
                "issuer": TOTP_ISSUER,
                "algorithm": "SHA1",
                "digits": TOTP_DIGITS,
                "period": TOTP_STEP,
            }
        )
        return secret, f"otpauth://totp/{label}?{query}"

    def verify_totp(
        self, user: str, code: str, at: datetime | None = None, *, same_step: bool = False
    ) -> None:
        """Accept ``code`` once; a wrong or replayed code raises AuthError and counts a failure.

        ``same_step`` also accepts the code last used, within its 30 s: an administrator
        already signed in confirms several actions with the code on screen.
        """
        now = self._now()
        failure: AuthError | None = None
        with self._db.tx() as conn:
            row = self._require_user(conn, user)
            if row["totp_secret"] is None:
                failure = AuthError(f"user {user!r} has no TOTP authenticator; enrol one first.")
            elif (failure := self._locked(row, now)) is None:
                reason = self._match_totp(conn, row, code, at or now, same_step=same_step)
                if reason is not None:
                    self._count_failure(conn, row, now)
                    failure = AuthError(
                        f"{reason} for user {user!r}; read the current code from the authenticator."
                    )
        if failure is not None:
            raise failure

    def require_second_factor(self, principal: Principal, code: str | None) -> None:
        """Administrative actions need the admin role and a fresh TOTP code of that admin."""
        if principal.role != "admin":
            raise Forbidden(
                f"administrative actions need the admin role; {principal.user!r} "
                f"has {principal.role!r}."
            )
        with self._db.connect() as conn:
            row = self._require_user(conn, principal.user)
        if row["totp_secret"] is None:
            raise Forbidden(
                f"administrator {principal.user!r} has no TOTP authenticator; "
                "enrol one before administrative actions."
            )
        if not code:
            raise AuthError(
                f"administrative actions need a TOTP code from "
                f"{principal.user!r}'s authenticator; send it with the request."
            )
        self.verify_totp(principal.user, code, same_step=True)

    # -- API keys ------------------------------------------------------------------------

    def create_key(
        self,
        user: str,
        scopes: Iterable[str] | None = None,
        quota_per_day: int = 10000,
        expires_days: int = 365,
    ) -> tuple[str, str]:
        """Issue a key for ``user``; returns ``(key_id, raw_key)``, the raw key shown once.

        ``scopes`` default to the user's role scopes and may only narrow them.
        """
        if quota_per_day < 1 or expires_days < 1:
            raise InputError("quota_per_day and expires_days must be at least 1.")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        now = self._now()
        with self._db.tx() as conn:
            row = self._require_user(conn, user)
            if row["disabled"]:
                raise Forbidden(f"user {user!r} is disabled; enable it before issuing keys.")
            allowed = ROLES[row["role"]].scopes
            wanted = allowed if scopes is None else frozenset(scopes)
            if unknown := sorted(wanted - set(SCOPES)):
                raise InputError(f"unknown scopes {unknown}; use some of {list(SCOPES)}.")
            if not wanted:
                raise InputError(
                    "a key needs at least one scope; leave scopes out for all of the role's."
                )
            if extra := sorted(wanted - allowed):
                raise Forbidden(
                    f"role {row['role']!r} of {user!r} lacks scopes {extra}; a key "
                    "may only narrow its user's scopes."
                )
            conn.execute(
                "INSERT INTO api_keys (key_id, user, scopes, salt, secret_hash, quota_per_day, "
                "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    user,
                    json.dumps(sorted(wanted)),
                    salt,
                    _key_hash(salt, secret),
                    quota_per_day,
                    _iso(now),
                    _iso(now + timedelta(days=expires_days)),
                ),
            )
        return key_id, f"{KEY_PREFIX}_{key_id}_{secret}"

    def authenticate_key(self, raw: str) -> Principal:
        """The principal of a raw API key: its scopes intersected with the role's."""
        digest = hashlib.sha256(raw.encode()).digest()
        known = self._verified.get(digest)
        if (
            known is not None
            and monotonic() - known[2] < KEY_CACHE_SECONDS
            and self._now() < known[1]
        ):
            return known[0]
        principal, expires = self._verify_key(raw)
        if len(self._verified) > 10_000:  # many distinct keys: start over rather than grow
            self._verified.clear()
        self._verified[digest] = (principal, expires, monotonic())
        return principal

    def _verify_key(self, raw: str) -> tuple[Principal, datetime]:
        prefix, _, rest = raw.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != KEY_PREFIX or not key_id or not secret:
            raise AuthError(f"not an OpsLake API key; expected {KEY_PREFIX}_<key id>_<secret>.")
        with self._db.connect() as conn:
            row = conn.execute(
                "SELECT k.key_id, k.scopes, k.salt, k.secret_hash, "
                "k.expires_at, k.revoked_at, u.* FROM api_keys k "
                "JOIN users u ON u.name = k.user WHERE k.key_id = ?",
                (key_id,),
            ).fetchone()
        if row is None or not hmac.compare_digest(
            _key_hash(row["salt"], secret), row["secret_hash"]
        ):
            raise AuthError(
                "API key not recognised; check it was copied whole, or ask an "
                "administrator for a new one."
            )
        if row["revoked_at"] is not None:
            raise AuthError(
                f"API key {key_id} was revoked on {row['revoked_at'][:10]}; ask "
                "an administrator for a new key."
            )
        expires = datetime.fromisoformat(row["expires_at"])
        if self._now() >= expires:
            raise AuthError(
                f"API key {key_id} expired on {expires:%Y-%m-%d}; ask an "
                "administrator for a new key."
            )
        if row["disabled"]:
            raise AuthError(
                f"API key {key_id} belongs to disabled user {row['name']!r}; ask an administrator."
            )
        return self._principal(row, frozenset(json.loads(row["scopes"])), key_id), expires

    def revoke_key(self, key_id: str) -> None:
        """Revoke a key for good; revoking twice keeps the first date."""
        self._verified.clear()
        with self._db.tx() as conn:
            done = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
                (_iso(self._now()), key_id),
            ).rowcount
            if not done:
                raise NotFoundError(f"no API key {key_id!r}; list keys to find its id.")

    def list_keys(self, user: str | None = None) -> list[ApiKey]:
        """Keys (of ``user``, or all) without their secrets, newest first."""
        sql = "SELECT * FROM api_keys" + (" WHERE user = ?" if user else "")
        with self._db.connect() as conn:
            rows = conn.execute(
                sql + " ORDER BY created_at DESC, key_id", (user,) if user else ()
            ).fetchall()
        return [
            ApiKey(
                r["key_id"],
                r["user"],
                frozenset(json.loads(r["scopes"])),
                r["quota_per_day"],
                datetime.fromisoformat(r["created_at"]),
                datetime.fromisoformat(r["expires_at"]),
                _when(r["revoked_at"]),
                _when(r["last_used_at"]),
            )
            for r in rows
        ]

    # -- quotas and usage ----------------------------------------------------------------

    def record_uses(self, counts: Mapping[tuple[Holder, str, str], Use]) -> None:
        """Add counters per (holder, UTC day, endpoint) in one transaction (the API batches)."""
        if not counts:
            return
        now = _iso(self._now())
        with self._db.tx() as conn:
            for key_id in {h.name for h, _, _ in counts if h.kind == "key"}:
                if not conn.execute(
                    "UPDATE api_keys SET last_used_at = ? WHERE key_id = ?", (now, key_id)
                ).rowcount:
                    raise NotFoundError(f"no API key {key_id!r}; list keys to find its id.")
            for kind, (table, column) in _USAGE_TABLES.items():
                conn.executemany(
                    f"INSERT INTO {table} ({column}, day, endpoint, requests, rows, errors) "
                    f"VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT ({column}, day, endpoint) DO "
                    "UPDATE SET requests = requests + excluded.requests, "
                    "rows = rows + excluded.rows, errors = errors + excluded.errors",
                    [
                        (holder.name, day, endpoint, *use)
                        for (holder, day, endpoint), use in counts.items()
                        if holder.kind == kind
                    ],
                )

    def quota_use(self, holder: Holder) -> tuple[int, int]:
        """``holder``'s daily quota and the requests it made today (UTC), as stored."""
        table, column = _USAGE_TABLES[holder.kind]
        with self._db.connect() as conn:
            if holder.kind == "key":
                key = conn.execute(
                    "SELECT quota_per_day FROM api_keys WHERE key_id = ?", (holder.name,)
                ).fetchone()
                if key is None:
                    raise NotFoundError(f"no API key {holder.name!r}; list keys to find its id.")
                quota = key["quota_per_day"]
            else:
                self._require_user(conn, holder.name)
                quota = self.session_quota
            used = conn.execute(
                f"SELECT COALESCE(SUM(requests), 0) FROM {table} WHERE {column} = ? AND day = ?",
                (holder.name, self.today()),
            ).fetchone()[0]
        return quota, used

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
        with self._db.connect() as conn:
            rows = conn.execute(
                "SELECT key_id, endpoint, day, requests, rows, errors FROM "
                f"api_usage{where} ORDER BY day, key_id, endpoint",
                params,
            ).fetchall()
        return [Usage(*r) for r in rows]
