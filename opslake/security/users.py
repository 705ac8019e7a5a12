"""Users of the identity store: creation under the password policy, password changes,
unlocking, disabling, the list administrators see."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from opslake.errors import Forbidden, InputError
from opslake.lake.state_db import Conn
from opslake.security.identity_state import from_iso, to_iso
from opslake.security.lockout import Lockout
from opslake.security.passwords import check_password, hash_password, verify_password
from opslake.security.roles import ROLES

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


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


class Users(Lockout):
    """The users table: who may sign in, with which role and row scope."""

    def _insert_user(
        self,
        conn: Conn,
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
        now = to_iso(self._now())
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
        with self.db.tx() as conn:
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
        with self.db.tx() as conn:
            self._insert_user(conn, name, role, password, departments, businesses)

    def set_password(self, name: str, password: str, *, current: str | None = None) -> None:
        """Change a password; with ``current`` it is a self-service change that verifies it.

        Clears any lockout and ends the user's sessions.
        """
        check_password(password, name)
        now = self._now()
        with self.db.connect() as conn:
            row = self._require_user(conn, name)
        if row["disabled"]:
            raise Forbidden(f"user {name!r} is disabled; ask an administrator to re-enable it.")
        if current is not None:
            if (locked := self._locked(row, now)) is not None:
                raise locked
            if not verify_password(current, row["password"]):
                with self.db.tx() as conn:
                    failure = self._count_failure(conn, self._require_user(conn, name), now)
                raise failure
        if verify_password(password, row["password"]):
            raise InputError(
                f"the new password for {name!r} equals the current one; choose a "
                "different password."
            )
        with self.db.tx() as conn:
            conn.execute(
                "UPDATE users SET password = ?, password_changed_at = ?, "
                "failed_attempts = 0, first_failed_at = NULL, locked_until = NULL "
                "WHERE name = ?",
                (hash_password(password), to_iso(now), name),
            )
            conn.execute('DELETE FROM sessions WHERE "user" = ?', (name,))

    def unlock_user(self, name: str) -> None:
        """Lift a lockout before it runs out."""
        with self.db.tx() as conn:
            self._require_user(conn, name)
            conn.execute(
                "UPDATE users SET failed_attempts = 0, first_failed_at = NULL, "
                "locked_until = NULL WHERE name = ?",
                (name,),
            )

    def disable_user(self, name: str) -> None:
        """Disable a user: sessions end at once and keys stop authenticating."""
        self._verified.clear()
        with self.db.tx() as conn:
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
            conn.execute('DELETE FROM sessions WHERE "user" = ?', (name,))

    def users(self) -> list[User]:
        """Every user, by name."""
        with self.db.connect() as conn:
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
                from_iso(r["locked_until"]),
                datetime.fromisoformat(r["password_changed_at"]),
                datetime.fromisoformat(r["created_at"]),
            )
            for r in rows
        ]
