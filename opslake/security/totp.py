"""RFC 4226/6238 one-time codes (by pyotp) as OpsLake's authenticators use them: SHA-1,
six digits, 30-second steps."""

from __future__ import annotations

import base64

import pyotp

TOTP_STEP = 30
TOTP_DIGITS = 6
TOTP_ISSUER = "OpsLake"


def hotp(key: bytes, counter: int, digits: int = TOTP_DIGITS) -> str:
    """RFC 4226 HOTP (HMAC-SHA-1) of raw ``key`` at ``counter``."""
    return pyotp.HOTP(base64.b32encode(key).decode(), digits=digits).at(counter)


def totp(key: bytes, at: float, digits: int = TOTP_DIGITS, step: int = TOTP_STEP) -> str:
    """RFC 6238 TOTP code of raw ``key`` for Unix time ``at``."""
    return hotp(key, int(at // step), digits)


def b32_key(secret: str) -> bytes:
    """The raw key of a base32 TOTP secret, tolerating lower case, spaces and no padding."""
    clean = secret.replace(" ", "").upper()
    return base64.b32decode(clean + "=" * (-len(clean) % 8))
