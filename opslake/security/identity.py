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

:class:`IdentityStore` is the one store callers hold; each concern is its own module over the
shared file (:mod:`~opslake.security.identity_state`): :mod:`~opslake.security.users`,
:mod:`~opslake.security.lockout`, :mod:`~opslake.security.two_factor`,
:mod:`~opslake.security.sessions`, :mod:`~opslake.security.keys` and
:mod:`~opslake.security.quotas`.
"""

from __future__ import annotations

from typing import Any

from opslake.security.crypto import FieldCipher
from opslake.security.keys import KEY_CACHE_SECONDS, KEY_PREFIX, ApiKey, Keys
from opslake.security.lockout import FAILURE_WINDOW, LOCKOUT, MAX_FAILURES
from opslake.security.quotas import Holder, Quotas, Usage, Use
from opslake.security.sessions import PASSWORD_MAX_AGE, SESSION_IDLE, SESSION_MAX, Session, Sessions
from opslake.security.users import User, Users
from opslake.settings import Settings

__all__ = [
    "FAILURE_WINDOW",
    "KEY_CACHE_SECONDS",
    "KEY_PREFIX",
    "LOCKOUT",
    "MAX_FAILURES",
    "PASSWORD_MAX_AGE",
    "SESSION_IDLE",
    "SESSION_MAX",
    "TOTP_CONTEXT",
    "ApiKey",
    "Holder",
    "IdentityStore",
    "Session",
    "Usage",
    "Use",
    "User",
]

#: The associated data TOTP secrets are sealed under (opslake.security.crypto).
TOTP_CONTEXT = "identity.totp_secret"


class IdentityStore(Users, Sessions, Keys, Quotas):
    """Users, sessions, TOTP, API keys and quotas in ``state_dir/security.db``.

    ``now`` is the clock (UTC, injectable for tests); ``protect``/``unprotect`` encrypt and
    decrypt TOTP secrets at rest (plug SM4 field encryption in here).
    """

    @classmethod
    def sealed(cls, settings: Settings, **kwargs: Any) -> IdentityStore:
        """The installation's store, TOTP secrets sealed with its SM4 data key."""
        protect, unprotect = FieldCipher.from_settings(settings).field(TOTP_CONTEXT)
        return cls(settings, protect=protect, unprotect=unprotect, **kwargs)
