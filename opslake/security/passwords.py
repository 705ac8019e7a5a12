"""Passwords under the MLPS policy (length, character classes, not the user name) and their
hashes: argon2id by argon2-cffi at its current default parameters; scrypt hashes of earlier
versions still verify and are replaced at the user's next successful sign-in."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from opslake.errors import InputError

MIN_PASSWORD_LENGTH = 12
MIN_PASSWORD_CLASSES = 3
#: Hashes new passwords (argon2id, the library's current default parameters); a stored hash
#: made with other parameters is re-made at the next successful sign-in.
_HASHER = PasswordHasher()


def password_problems(password: str, user: str) -> list[str]:
    """What ``password`` lacks under the MLPS policy for ``user``; empty when it passes."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"at least {MIN_PASSWORD_LENGTH} characters (it has {len(password)})")
    classes = {
        "a lower-case letter": any(c.islower() for c in password),
        "an upper-case letter": any(c.isupper() for c in password),
        "a digit": any(c.isdigit() for c in password),
        "a symbol": any(not c.isalnum() for c in password),
    }
    present = sum(classes.values())
    if present < MIN_PASSWORD_CLASSES:
        missing = " or ".join(k for k, v in classes.items() if not v)
        problems.append(
            f"{MIN_PASSWORD_CLASSES} of 4 character classes (it has {present}; add {missing})"
        )
    if user and user.lower() in password.lower():
        problems.append("no copy of the user name")
    return problems


def check_password(password: str, user: str) -> None:
    """Raise InputError listing every rule ``password`` breaks."""
    problems = password_problems(password, user)
    if problems:
        raise InputError(
            f"password for {user!r} refused; it needs "
            + "; ".join(problems)
            + ". Choose another password."
        )


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` to store."""
    return _HASHER.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the ``stored`` hash (argon2id, or scrypt of old)."""
    if stored.startswith("scrypt$"):
        return _verify_scrypt(password, stored)
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` is scrypt or argon2 at other than the current parameters."""
    return stored.startswith("scrypt$") or _HASHER.check_needs_rehash(stored)


def _verify_scrypt(password: str, stored: str) -> bool:
    # Hashes of earlier versions (scrypt$N$r$p$salt$digest); verified until re-hashed.
    _, n, r, p, salt, digest = stored.split("$")
    expected = bytes.fromhex(digest)
    actual = hashlib.scrypt(
        password.encode(),
        salt=bytes.fromhex(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(expected),
    )
    return hmac.compare_digest(actual, expected)


@cache
def dummy_hash() -> str:
    """A hash of nothing anyone knows, verified for unknown users."""
    # Unknown users still cost one argon2id, so timing does not tell which names exist.
    return hash_password(secrets.token_urlsafe(16))
