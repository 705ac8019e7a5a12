"""Sending one event over a subscription's channel: a signed webhook (under the egress
allow-list) or an MQTT publish; retries and the log are the evaluator's."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from opslake.delivery import require_2xx, sign, signed_headers
from opslake.errors import DeliveryError, EgressRefused, OpsLakeError
from opslake.security.egress import EgressPolicy
from opslake.subscriptions.model import Subscription

#: The signing scheme of subscription webhooks and MQTT payloads (HMAC-SM3).
SIGNING_SCHEME = "sm3"
TIMEOUT_S = 5.0
logger = logging.getLogger(__name__)


class Sender:
    """Delivers one event document over a subscription's channel (webhooks under ``egress``)."""

    def __init__(
        self,
        egress: EgressPolicy,
        broker: tuple[str, int] | None = None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.egress = egress
        self.broker = broker
        self.wallclock = wallclock
        self._mqtt: Any = None

    def send(self, sub: Subscription, secret: str, event_key: str, body: str) -> str:
        """Deliver ``body`` signed with ``secret``; the receipt, or DeliveryError."""
        stamp = int(self.wallclock())
        if sub.delivery["type"] == "webhook":
            return self._webhook(
                sub, event_key, body, signed_headers(secret, stamp, body, SIGNING_SCHEME)
            )
        return self._publish(
            sub,
            json.dumps(
                {
                    "subscription_id": sub.id,
                    "event_key": event_key,
                    "timestamp": str(stamp),
                    "signature": sign(secret, stamp, body, SIGNING_SCHEME),
                    "body": body,
                },
                ensure_ascii=False,
            ),
        )

    def _webhook(self, sub: Subscription, event_key: str, body: str, signed: dict[str, str]) -> str:
        # The log's owner may be anyone with subscriptions:write: its details are fixed
        # categories, never a receiver's answer or an exception's text (which would tell an
        # internal service's secrets, or open ports from closed ones).
        try:
            target = self.egress.check(sub.delivery["url"])
        except EgressRefused as exc:
            logger.warning("subscription %s: webhook refused: %s", sub.id, exc.reason)
            raise DeliveryError("refused: destination not allow-listed") from exc
        except OpsLakeError as exc:
            logger.error("subscription %s: the egress allow-list cannot be read: %s", sub.id, exc)
            raise DeliveryError("refused: the egress allow-list cannot be read") from exc
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json; charset=utf-8",
            **signed,
            "X-OpsLake-Subscription": sub.id,
            "X-OpsLake-Event": event_key,
        }
        # An explicit transport takes no proxy from the environment (a proxy would connect
        # elsewhere than the checked address) yet still honours SSL_CERT_FILE. A client per
        # delivery: connections pool by address, and two names on one address must not share
        # a TLS connection.
        try:
            with (
                httpx.Client(
                    transport=httpx.HTTPTransport(),
                    trust_env=False,
                    follow_redirects=False,
                    timeout=TIMEOUT_S,
                ) as client,
                client.stream(
                    "POST",
                    target.pinned_url,
                    content=body.encode(),
                    headers=headers,
                    extensions=target.extensions,
                ) as response,
            ):
                status = response.status_code  # the body is never read
        except httpx.TimeoutException as exc:
            raise DeliveryError("timed out") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError("connection failed") from exc
        require_2xx(status)  # the status alone: a receiver's answer is not the owner's to read
        return f"HTTP {status}"

    def _publish(self, sub: Subscription, payload: str) -> str:
        import paho.mqtt.client as mqtt

        if self.broker is None:
            raise DeliveryError("no MQTT broker configured; set OPSLAKE_MQTT_BROKER=host:port")
        if self._mqtt is None:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=f"opslake-subs-{uuid.uuid4().hex[:12]}"
            )
            try:
                client.connect(self.broker[0], self.broker[1], keepalive=30)
            except OSError as exc:
                raise DeliveryError(
                    f"MQTT broker {self.broker[0]}:{self.broker[1]}: {exc}"
                ) from exc
            client.loop_start()
            self._mqtt = client
        info = self._mqtt.publish(sub.topic, payload.encode(), qos=1)
        try:
            info.wait_for_publish(timeout=TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:
            self.close()
            raise DeliveryError(f"MQTT publish to {sub.topic}: {exc}") from exc
        if not info.is_published():
            self.close()
            raise DeliveryError(f"MQTT broker did not acknowledge {sub.topic} in {TIMEOUT_S}s")
        return f"PUBACK {sub.topic}"

    def close(self) -> None:
        if self._mqtt is not None:
            with contextlib.suppress(Exception):
                self._mqtt.disconnect()
                self._mqtt.loop_stop()
            self._mqtt = None
