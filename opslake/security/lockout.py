"""Counting failed sign-ins and locking an account out for a while (S6.6a)."""

from __future__ import annotations

from datetime import datetime, timedelta

from opslake.errors import AuthError
from opslake.lake.state_db import Conn, Row
from opslake.security.identity_state import IdentityState, from_iso, to_iso

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
#: One answer to every wrong credential, so a guess learns nothing of which part was wrong.
BAD_LOGIN = "wrong user name, password or TOTP code; check them and try again"


class Lockout(IdentityState):
    """Lockouts of the identity store: refused while locked, locked after repeated failures."""

    @staticmethod
    def _locked(row: Row, now: datetime) -> AuthError | None:
        until = from_iso(row["locked_until"])
        if until is not None and now < until:
            return AuthError(
                f"account {row['name']!r} is locked after {MAX_FAILURES} failed "
                f"attempts until {until:%Y-%m-%d %H:%M} UTC; wait, or ask an "
                "administrator to unlock it."
            )
        return None

    def _count_failure(self, conn: Conn, row: Row, now: datetime) -> AuthError:
        first = from_iso(row["first_failed_at"])
        in_window = first is not None and now - first < FAILURE_WINDOW
        count = row["failed_attempts"] + 1 if in_window else 1
        if count >= MAX_FAILURES:
            until = now + LOCKOUT
            conn.execute(
                "UPDATE users SET failed_attempts = 0, first_failed_at = NULL, "
                "locked_until = ? WHERE name = ?",
                (to_iso(until), row["name"]),
            )
            # Locked out means out of every door: the sessions it already had end too.
            conn.execute('DELETE FROM sessions WHERE "user" = ?', (row["name"],))
            return AuthError(
                f"wrong credentials; account {row['name']!r} is now "
                f"locked until {until:%Y-%m-%d %H:%M} UTC after {MAX_FAILURES} "
                "failed attempts. Wait, or ask an administrator to unlock it."
            )
        conn.execute(
            "UPDATE users SET failed_attempts = ?, first_failed_at = ? WHERE name = ?",
            (count, to_iso(first if in_window and first is not None else now), row["name"]),
        )
        return AuthError(BAD_LOGIN)
