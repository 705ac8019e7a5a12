"""Sign-in sessions of the identity store: password (and TOTP) login, idle and absolute
timeouts, logout."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from opslake.errors import AuthError, PasswordExpired
from opslake.lake.state_db import Conn, Row
from opslake.security.identity_state import to_iso
from opslake.security.lockout import BAD_LOGIN
from opslake.security.passwords import dummy_hash, hash_password, needs_rehash, verify_password
from opslake.security.roles import ROLES, Principal
from opslake.security.totp import TOTP_DIGITS
from opslake.security.two_factor import TwoFactor

PASSWORD_MAX_AGE = timedelta(days=90)
SESSION_IDLE = timedelta(minutes=30)
SESSION_MAX = timedelta(hours=8)


@dataclass(frozen=True)
class Session:
    """A login: the raw token (shown once, kept only as a hash) and when it lapses if idle."""

    token: str
    expires_at: datetime


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions(TwoFactor):
    """Sessions: a token shown once and kept as a hash, ended by idleness, age or logout."""

    def _login_failure(
        self,
        conn: Conn,
        row: Row,
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
        with self.db.connect() as conn:
            row = self._user_row(conn, user)
        if row is not None and (locked := self._locked(row, now)) is not None:
            raise locked
        # Hashing runs outside the write lock so slow hashing does not serialise the store.
        password_ok = verify_password(password, row["password"] if row else dummy_hash())
        if row is None:
            raise AuthError(BAD_LOGIN)
        checked = row["password"]
        # A scrypt (or outdated argon2) hash is replaced now the password is known to be right.
        rehashed = hash_password(password) if password_ok and needs_rehash(checked) else None
        token = secrets.token_urlsafe(32)
        with self.db.tx() as conn:
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
                    (to_iso(now - SESSION_MAX), to_iso(now - SESSION_IDLE)),
                )
                conn.execute(
                    'INSERT INTO sessions (token_hash, "user", created_at, last_used_at) '
                    "VALUES (?, ?, ?, ?)",
                    (_token_hash(token), user, to_iso(now), to_iso(now)),
                )
        if failure is not None:
            raise failure
        return Session(token, now + SESSION_IDLE)

    def session(self, token: str) -> Principal:
        """The principal of a live session; each use extends its idle timeout."""
        now = self._now()
        digest = _token_hash(token)
        failure: AuthError | None = None
        with self.db.tx() as conn:
            row = conn.execute(
                "SELECT s.created_at AS s_created, s.last_used_at, u.* "
                'FROM sessions s JOIN users u ON u.name = s."user" '
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
                    "UPDATE sessions SET last_used_at = ? WHERE token_hash = ?",
                    (to_iso(now), digest),
                )
        if failure is not None:
            raise failure
        return self._principal(row, ROLES[row["role"]].scopes)

    def logout(self, token: str) -> None:
        """End a session; unknown tokens are ignored."""
        with self.db.tx() as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))
