"""The delivery engine: backoff schedule, both signing schemes, the 2xx rule, retries and the
outcome each delivery log records, and SMTP."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from opslake.crypto import hmac_sm3
from opslake.delivery import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Engine,
    RetryPolicy,
    require_2xx,
    send_mail,
    sign,
    signed_headers,
    verify,
)
from opslake.errors import DeliveryError
from tests.integration.services import free_port
from tests.receivers import smtp_server

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SECRET = "s3cret-s3cret-s3cret"
BODY = '{"a":"é","b":1}'


def test_backoff_starts_at_30_seconds_and_doubles_to_ten_minutes() -> None:
    policy = RetryPolicy(())
    assert [policy.backoff(n).total_seconds() for n in range(1, 8)] == [
        30,
        60,
        120,
        240,
        480,
        600,
        600,
    ]


@pytest.mark.parametrize(
    ("scheme", "mac"),
    [
        ("sha256", lambda key, data: hmac.new(key, data, hashlib.sha256).hexdigest()),
        ("sm3", hmac_sm3),
    ],
)
def test_each_scheme_signs_timestamp_dot_body_and_verifies(scheme, mac) -> None:
    sig = sign(SECRET, 1760000000, BODY, scheme)
    assert sig == f"{scheme}=" + mac(SECRET.encode(), f"1760000000.{BODY}".encode())
    assert sign(SECRET, 1760000000, BODY.encode(), scheme) == sig  # bytes or text alike
    assert verify(SECRET, "1760000000", BODY, sig, now=1760000100)
    assert verify(SECRET, "1760000000", BODY.encode(), sig, now=1760000100)
    assert not verify(SECRET, "1760000000", BODY + " ", sig, now=1760000100)
    assert not verify("another-secret-xx", "1760000000", BODY, sig, now=1760000100)
    assert not verify(SECRET, "1760000000", BODY, sig, now=1760001000)  # stale
    assert not verify(SECRET, "17600x0000", BODY, sig, now=1760000100)


def test_a_signature_of_an_unknown_scheme_or_non_ascii_is_refused_not_raised() -> None:
    digest = sign(SECRET, 1760000000, BODY, "sha256").partition("=")[2]
    assert not verify(SECRET, "1760000000", BODY, "md5=" + digest, now=1760000000)
    assert not verify(SECRET, "1760000000", BODY, "sm3=é", now=1760000000)


def test_signed_headers_carry_the_timestamp_and_sign_only_with_a_secret() -> None:
    headers = signed_headers(SECRET, 1760000000, BODY, "sha256")
    assert headers == {
        TIMESTAMP_HEADER: "1760000000",
        SIGNATURE_HEADER: sign(SECRET, 1760000000, BODY, "sha256"),
    }
    assert signed_headers(None, 1760000000, BODY, "sha256") == {TIMESTAMP_HEADER: "1760000000"}


def test_only_2xx_acknowledges() -> None:
    require_2xx(200)
    require_2xx(204)
    with pytest.raises(DeliveryError, match=r"^HTTP 302: redirects are not followed$"):
        require_2xx(302)
    with pytest.raises(DeliveryError, match=r"^HTTP 500: receiver answered with an error$"):
        require_2xx(500)
    with pytest.raises(DeliveryError, match=r"^http://x/h: HTTP 401: .*error: bad signature$"):
        require_2xx(401, "http://x/h", "bad signature")


class Flaky:
    """A send that fails ``failures`` times, then answers a receipt."""

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise DeliveryError(f"refused #{self.calls}")
        return "receipt-1"


def test_a_retry_in_the_pass_sends_and_the_outcome_counts_every_attempt() -> None:
    sleeps: list[float] = []
    engine = Engine(RetryPolicy((0.5, 1.0, 2.0)), sleeps.append)
    outcome = engine.deliver("r", Flaky(2), now=NOW, attempts=4)
    assert (outcome.status, outcome.attempts, outcome.detail) == ("sent", 7, "receipt-1")
    assert outcome.next_attempt_at is None
    assert sleeps == [0.5, 1.0]


def test_a_failed_pass_schedules_the_next_and_skips_the_receiver_for_the_rest_of_it() -> None:
    sleeps: list[float] = []
    engine = Engine(RetryPolicy((0.5, 1.0)), sleeps.append)
    first = engine.deliver("r", send := Flaky(99), now=NOW, failures=2)
    assert (first.status, first.attempts, first.detail) == ("failed", 3, "refused #3")
    assert first.next_attempt_at == NOW + timedelta(seconds=120)  # third failed pass
    # Another delivery to the same receiver in this pass fails at once, untried.
    second = engine.deliver("r", send, now=NOW, attempts=1)
    assert (second.status, second.attempts, second.detail) == ("failed", 1, "refused #3")
    assert send.calls == 3 and sleeps == [0.5, 1.0]
    # Another receiver is tried; a new pass (a new engine) tries "r" again.
    assert engine.deliver("s", Flaky(0), now=NOW).status == "sent"
    assert Engine(RetryPolicy(()), sleeps.append).deliver("r", Flaky(0), now=NOW).status == "sent"


def test_a_delivery_failing_past_the_policy_limit_expires() -> None:
    engine = Engine(RetryPolicy((), give_up_after=timedelta(days=7)), lambda _s: None)
    kept = engine.deliver("r", Flaky(9), now=NOW, queued_at=NOW - timedelta(days=6))
    assert kept.status == "failed"
    gone = Engine(engine.policy, lambda _s: None).deliver(
        "r", Flaky(9), now=NOW, queued_at=NOW - timedelta(days=7)
    )
    assert gone.status == "expired" and gone.next_attempt_at is None
    assert gone.detail == "given up after 7 days, 0:00:00: refused #1"
    # Without a limit a delivery never expires.
    forever = Engine(RetryPolicy(()), lambda _s: None).deliver(
        "r", Flaky(9), now=NOW, queued_at=NOW - timedelta(days=700)
    )
    assert forever.status == "failed"


def test_a_long_error_is_cut_for_the_log() -> None:
    def send() -> str:
        raise DeliveryError("x" * 2000)

    outcome = Engine(RetryPolicy(()), lambda _s: None).deliver("r", send, now=NOW)
    assert outcome.detail == "x" * 500


def test_send_mail_delivers_and_names_the_server_when_it_is_down() -> None:
    mail = EmailMessage()
    mail["Subject"], mail["From"], mail["To"] = "hello", "opslake@localhost", "ops@example.org"
    mail.set_content("body")
    with smtp_server() as (port, mails):
        send_mail({"host": "127.0.0.1", "port": str(port)}, mail)
        for _ in range(50):  # aiosmtpd hands the message over from its own thread
            if mails:
                break
            time.sleep(0.05)
        assert [m["Subject"] for m in mails] == ["hello"]
    port = free_port()
    with pytest.raises(DeliveryError, match=f"SMTP 127.0.0.1:{port}"):
        send_mail({"host": "127.0.0.1", "port": str(port)}, mail, timeout=2)
