"""TOTP authenticators of the identity store: enrolment, single-use codes, administrators'
second factor (RFC 6238 by pyotp, :mod:`opslake.security.totp`)."""

from __future__ import annotations

import hmac
from datetime import datetime
from urllib.parse import quote, urlencode

import pyotp

from opslake.errors import AuthError, Forbidden
from opslake.lake.state_db import Conn, Row
from opslake.security.lockout import Lockout
from opslake.security.roles import Principal
from opslake.security.totp import TOTP_DIGITS, TOTP_ISSUER, TOTP_STEP


class TwoFactor(Lockout):
    """TOTP secrets (sealed at rest) and the codes they accept, each once."""

    def _match_totp(
        self,
        conn: Conn,
        row: Row,
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

    def enrol_totp(self, user: str) -> tuple[str, str]:
        """Give ``user`` a new TOTP secret; returns it and the otpauth:// URI for a QR code."""
        secret = pyotp.random_base32()
        with self.db.tx() as conn:
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
        with self.db.tx() as conn:
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
        with self.db.connect() as conn:
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
