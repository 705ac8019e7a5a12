"""The one delivery engine: retries, backoff, signed webhooks and SMTP for every outbound message.

Alert notifications (:mod:`opslake.alerting.dispatch`), metric subscriptions
(:mod:`opslake.subscriptions`) and report mailing (:mod:`opslake.screens.reports`) all send
through it:

- **retries and backoff**: :class:`Engine` tries a delivery, pauses and tries again as its
  :class:`RetryPolicy` says, and returns an :class:`Outcome` (``sent``, ``failed`` with the
  next pass's time, or ``expired``) that the caller appends to its delivery log as is. The
  wait between passes is the same for everyone: 30 s after the first failed pass, doubling,
  at most 10 minutes. A receiver that failed every try of a pass is not tried again in that
  pass (its other deliveries fail at once with the same error).
- **signing**: a webhook carries ``X-OpsLake-Timestamp: <unix seconds>`` and
  ``X-OpsLake-Signature: <scheme>=<hex HMAC(secret, "timestamp.body")>``. Two schemes of this
  one family are on the wire and both stay, because receivers check them: ``sha256``
  (HMAC-SHA256, alert webhooks: SMS and phone gateways, ITSM) and ``sm3`` (HMAC-SM3,
  subscription webhooks and MQTT payloads). :func:`verify` reads the scheme from the
  signature's prefix.
- **e-mail**: :func:`send_mail` through an SMTP server (STARTTLS and login when set).

Every failure is a :class:`DeliveryError`, whose message is what the delivery log records.
"""

from __future__ import annotations

import hashlib
import hmac
import smtplib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage

from opslake.crypto import hmac_sm3
from opslake.errors import DeliveryError

TIMESTAMP_HEADER = "X-OpsLake-Timestamp"
SIGNATURE_HEADER = "X-OpsLake-Signature"
#: The HMAC of each signing scheme, keyed by the prefix its signatures carry.
SCHEMES: dict[str, Callable[[bytes, bytes], str]] = {
    "sha256": lambda key, data: hmac.new(key, data, hashlib.sha256).hexdigest(),
    "sm3": hmac_sm3,
}
#: A log record keeps this much of an error (a receiver's answer can be long).
MAX_DETAIL = 500
SMTP_TIMEOUT_S = 10.0


# --- signing ------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes | str, scheme: str) -> str:
    """``<scheme>=<hex HMAC(secret, "timestamp.body")>`` with the scheme's hash."""
    data = body.encode() if isinstance(body, str) else body
    return f"{scheme}=" + SCHEMES[scheme](secret.encode(), f"{timestamp}.".encode() + data)


def verify(
    secret: str,
    timestamp: str,
    body: bytes | str,
    signature: str,
    *,
    max_age_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """Whether a delivery is authentic and fresh (for receivers written in Python)."""
    scheme = signature.partition("=")[0]
    if scheme not in SCHEMES or not str(timestamp).isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > max_age_s:
        return False
    # Bytes, because compare_digest refuses str with non-ASCII characters.
    return hmac.compare_digest(sign(secret, timestamp, body, scheme).encode(), signature.encode())


def signed_headers(
    secret: str | None, timestamp: int, body: bytes | str, scheme: str
) -> dict[str, str]:
    """The timestamp header, and the signature header when there is a ``secret``."""
    headers = {TIMESTAMP_HEADER: str(timestamp)}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body, scheme)
    return headers


def require_2xx(status: int, where: str = "", answer: str = "") -> None:
    """Raise DeliveryError unless ``status`` acknowledges (2xx); redirects are not followed."""
    if 200 <= status < 300:
        return
    why = "redirects are not followed" if 300 <= status < 400 else "receiver answered with an error"
    raise DeliveryError(
        (f"{where}: " if where else "")
        + f"HTTP {status}: {why}"
        + (f": {answer[:200]}" if answer else "")
    )


# --- e-mail -------------------------------------------------------------------------------


def send_mail(
    settings: Mapping[str, str], mail: EmailMessage, timeout: float = SMTP_TIMEOUT_S
) -> None:
    """Send ``mail`` through the SMTP server of an e-mail receiver's ``settings`` (host, port,
    starttls, user, password); DeliveryError names the server when it fails."""
    host, port = settings["host"], int(settings.get("port", "25"))
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            if settings.get("starttls") == "true":
                smtp.starttls()
            if settings.get("user"):
                smtp.login(settings["user"], settings.get("password", ""))
            smtp.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP {host}:{port}: {exc}") from exc


# --- retries and backoff ------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How a delivery is retried: pauses within a pass, then exponential backoff across passes."""

    #: Seconds slept before each retry in the same pass (the first try does not wait).
    pauses: tuple[float, ...]
    base_s: float = 30.0
    max_s: float = 600.0
    #: A delivery still failing this long after it was queued is given up; None: never.
    give_up_after: timedelta | None = None

    def backoff(self, failures: int) -> timedelta:
        """Wait before the next pass tries again after ``failures`` failed passes (1, 2, …)."""
        return timedelta(seconds=min(self.max_s, self.base_s * 2 ** max(0, failures - 1)))


@dataclass(frozen=True)
class Outcome:
    """What one pass did with one delivery: the record its delivery log appends."""

    status: str  # sent, failed, expired
    attempts: int  # all attempts so far, earlier passes included
    detail: str  # the receipt when sent, else the last error
    next_attempt_at: datetime | None = None


@dataclass
class Engine:
    """Delivers with the retries of ``policy`` for one pass (make one per pass)."""

    policy: RetryPolicy
    sleep: Callable[[float], None] = time.sleep
    #: Receivers that failed every try of this pass, with their last error.
    down: dict[str, str] = field(default_factory=dict)

    def deliver(
        self,
        target: str,
        send: Callable[[], str],
        *,
        now: datetime,
        attempts: int = 0,
        failures: int = 0,
        queued_at: datetime | None = None,
    ) -> Outcome:
        """Try ``send`` (which returns a receipt or raises DeliveryError) for receiver ``target``.

        ``attempts`` and ``failures`` count earlier tries and failed passes; ``queued_at``
        (when the delivery was first due) lets the policy give it up.
        """
        error = self.down.get(target, "")
        for pause in () if target in self.down else (0.0, *self.policy.pauses):
            if pause:
                self.sleep(pause)
            attempts += 1
            try:
                return Outcome("sent", attempts, send())
            except DeliveryError as exc:
                error = str(exc)
        limit = self.policy.give_up_after
        if limit is not None and queued_at is not None and now - queued_at >= limit:
            return Outcome("expired", attempts, f"given up after {limit}: {error}"[:MAX_DETAIL])
        self.down[target] = error
        return Outcome(
            "failed", attempts, error[:MAX_DETAIL], now + self.policy.backoff(failures + 1)
        )
