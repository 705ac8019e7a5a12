"""API keys of the identity store (S6.8b): issued with narrowed scopes and an expiry, kept
as salted hashes, verified (and remembered a moment), revoked, listed."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import monotonic

from opslake.errors import AuthError, Forbidden, InputError, NotFoundError
from opslake.security.identity_state import IdentityState, from_iso, to_iso
from opslake.security.roles import ROLES, SCOPES, Principal

KEY_PREFIX = "olk"
#: A verified key is trusted this long before the store is asked again: a revocation on another
#: host (sharing the store) is honoured here within this time plus one lookup.
KEY_CACHE_SECONDS = 1.0


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


def _key_hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


class Keys(IdentityState):
    """The api_keys table, and this process's memory of keys verified a moment ago."""

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
        with self.db.tx() as conn:
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
                'INSERT INTO api_keys (key_id, "user", scopes, salt, secret_hash, quota_per_day, '
                "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    user,
                    json.dumps(sorted(wanted)),
                    salt,
                    _key_hash(salt, secret),
                    quota_per_day,
                    to_iso(now),
                    to_iso(now + timedelta(days=expires_days)),
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
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT k.key_id, k.scopes, k.salt, k.secret_hash, "
                "k.expires_at, k.revoked_at, u.* FROM api_keys k "
                'JOIN users u ON u.name = k."user" WHERE k.key_id = ?',
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
        with self.db.tx() as conn:
            done = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
                (to_iso(self._now()), key_id),
            ).rowcount
            if not done:
                raise NotFoundError(f"no API key {key_id!r}; list keys to find its id.")

    def list_keys(self, user: str | None = None) -> list[ApiKey]:
        """Keys (of ``user``, or all) without their secrets, newest first."""
        sql = "SELECT * FROM api_keys" + (' WHERE "user" = ?' if user else "")
        with self.db.connect() as conn:
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
                from_iso(r["revoked_at"]),
                from_iso(r["last_used_at"]),
            )
            for r in rows
        ]
