"""MQTT subscriber: messages from a broker landed in small durable batches (source ``mqtt``).

Received messages are buffered and landed every ``flush_seconds`` (or every
``flush_messages`` messages) as ONE batch of NDJSON lines
``{"topic": t, "payload": "<payload text exactly as received>", "received_at": iso}``
(``opslake.ingest.parsers.mqtt`` documents the payload formats and parses them).

Durability: subscriptions are QoS 1 and messages are acknowledged manually (paho's
``manual_ack``), only after the batch holding them is durable in landing. The client
speaks MQTT 5 with a stable client id, ``clean_start=False`` and a session expiry, so the
broker keeps the session across reconnects and re-sends what was never acknowledged; its
Receive Maximum is ``flush_messages``, so the broker may have that many unacknowledged
messages in flight (MQTT 3.1.1 brokers would stop at ~20). Delivery is at least once: a
crash between landing and acknowledging, or a reconnect, can land a message twice.

Security (``MqttAuth``): a user name and password, TLS 1.2+ verified against a CA file (or
the system's CAs), and a client certificate. A broker that refuses the credentials, or a
TLS handshake that fails, is logged as an error saying what to fix, and kept in
``last_error``; the subscriber keeps retrying (with back-off) until the broker accepts it.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from opslake.lake.landing import LandedBatch, LandingZone

SOURCE = "mqtt"
FMT = "json"
CONNECTOR = "mqtt-subscriber/1.0"
#: How long the broker keeps our session (and queued QoS 1 messages) while we are away.
SESSION_EXPIRY_S = 24 * 3600

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttAuth:
    """How the subscriber proves who it is and checks the broker (all optional)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: A client context (``opslake.security.tls.client_context``): TLS with this CA file
    #: and client certificate; None, plain MQTT.
    tls: ssl.SSLContext | None = None


#: MQTT 5 reason codes (and 3.1.1 return codes) that mean the credentials were refused.
_CREDENTIALS_REFUSED = {"Bad user name or password", "Not authorized"}


@dataclass
class _Held:
    line: bytes
    mid: int
    qos: int
    generation: int


class MqttSubscriber:
    """Subscribes to ``topics`` (QoS 1) and lands what arrives as ``mqtt`` batches."""

    def __init__(
        self,
        landing: LandingZone,
        host: str,
        port: int,
        topics: Sequence[str],
        flush_seconds: float = 1.0,
        flush_messages: int = 5000,
        *,
        client_id: str | None = None,
        auth: MqttAuth = MqttAuth(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not topics:
            raise ValueError("subscribe to at least one topic (e.g. 'opslake/#')")
        self.landing, self.host, self.port = landing, host, port
        self.topics = list(topics)
        self.flush_seconds, self.flush_messages = flush_seconds, max(1, flush_messages)
        self.clock = clock
        # Stable per lake and broker, so a restarted service resumes its broker session.
        self.client_id = (
            client_id
            or "opslake-"
            + uuid.uuid5(uuid.NAMESPACE_URL, f"{landing.lake.path('landing')}|{host}:{port}").hex[
                :16
            ]
        )
        self.landed: list[LandedBatch] = []
        self.connected = threading.Event()
        #: Why the last connection attempt failed (refused credentials, TLS), until one works.
        self.last_error: str | None = None
        self._refused = False  # the broker's CONNACK refused this attempt
        self._held: list[_Held] = []
        self._lock = threading.Lock()  # guards _held and _generation
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self._flusher: threading.Thread | None = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if auth.username is not None:
            self.client.username_pw_set(auth.username, auth.password)
        if auth.tls is not None:
            self.client.tls_set_context(auth.tls)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 30)

    # --- paho callbacks (its network thread) ---------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason: object,
        _props: object,
    ) -> None:
        if getattr(reason, "is_failure", False):
            fix = (
                "check --mqtt-username and OPSLAKE_MQTT_PASSWORD (and the broker's "
                "password file and ACL)"
                if str(reason) in _CREDENTIALS_REFUSED
                else "check the broker's log"
            )
            self._refused = True
            self._failed(f"refused the connection: {reason}; {fix}")
            return
        self.last_error = None
        with self._lock:
            self._generation += 1
            if flags.session_present:
                # The broker re-sends what we never acknowledged; drop our copies.
                self._held = [h for h in self._held if h.generation == self._generation]
        client.subscribe([(topic, 1) for topic in self.topics])
        self.connected.set()
        log.info(
            "MQTT connected to %s:%s as %s, subscribed to %s",
            self.host,
            self.port,
            self.client_id,
            ", ".join(self.topics),
        )

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        # paho calls this inside its ``except OSError`` block and passes no exception.
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            fix = (
                "the broker's certificate is not trusted or does not name this host: "
                "give the CA that signed it with --mqtt-ca"
            )
        elif isinstance(exc, ssl.SSLError):
            fix = (
                "the TLS handshake failed: is the port a TLS listener, and does the "
                "broker accept this client certificate (--mqtt-cert, --mqtt-key)?"
            )
        else:
            fix = "is the broker running and the address right?"
        self._failed(f"cannot be reached ({exc}); {fix}")

    def _failed(self, what: str) -> None:
        """Log a failed connection attempt once per distinct reason (paho retries it)."""
        if what != self.last_error:
            log.error("MQTT broker %s:%s %s", self.host, self.port, what)
        self.last_error = what

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: object,
        _props: object,
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        refused, self._refused = self._refused, False
        if self._stop.is_set() or refused:  # a refusal was reported by _on_connect
            return
        if was_connected:
            log.warning(
                "MQTT disconnected from %s:%s (%s); reconnecting", self.host, self.port, reason
            )
        else:
            # Under TLS 1.3 a broker that wants a client certificate drops the connection
            # after the handshake; a plain client on a TLS port is dropped the same way.
            self._failed(
                f"closed the connection before accepting it ({reason}); if the port "
                "is a TLS listener pass --mqtt-tls with --mqtt-ca, and --mqtt-cert "
                "and --mqtt-key when it requires client certificates"
            )

    def _on_message(
        self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        self.add(message.topic, message.payload, message.mid, message.qos)

    # --- buffering and landing -------------------------------------------------------

    def add(self, topic: str, payload: bytes, mid: int = 0, qos: int = 0) -> None:
        """Buffer one message (its acknowledgement waits for the flush that lands it)."""
        record: dict[str, object] = {"topic": topic}
        try:
            record["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            record["payload"] = None
            record["payload_base64"] = base64.b64encode(payload).decode("ascii")
        record["received_at"] = self.clock().astimezone(UTC).isoformat()
        line = json.dumps(record, ensure_ascii=False).encode("utf-8")
        with self._lock:
            self._held.append(_Held(line, mid, qos, self._generation))
            full = len(self._held) >= self.flush_messages
        if full:
            self._wake.set()

    def flush(self) -> LandedBatch | None:
        """Land what is buffered as one batch, then acknowledge it to the broker."""
        with self._flush_lock:
            with self._lock:
                held, self._held = self._held, []
                generation = self._generation
            if not held:
                return None
            body = b"\n".join(h.line for h in held) + b"\n"
            try:
                batch = self.landing.write(
                    SOURCE, body, fmt=FMT, received_at=self.clock(), connector=CONNECTOR
                )
            except Exception:
                with self._lock:  # keep them (unacknowledged) for the next flush
                    self._held[:0] = [h for h in held if h.generation == self._generation]
                raise
            self.landed.append(batch)
            for h in held:
                # Packet ids of an earlier connection may mean other messages now.
                if h.qos > 0 and h.generation == generation:
                    self.client.ack(h.mid, h.qos)
            return batch

    def _run_flusher(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the lake is unavailable: keep the messages, retry next tick
                log.exception("landing an MQTT batch failed; retrying")

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Connect (in the background, retrying) and start the network and flush threads."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = min(self.flush_messages, 65535)
        self.client.connect_async(
            self.host, self.port, keepalive=30, clean_start=False, properties=props
        )
        self.client.loop_start()
        self._flusher = threading.Thread(target=self._run_flusher, name="mqtt-flusher", daemon=True)
        self._flusher.start()

    def stop(self) -> None:
        """Land what is buffered, acknowledge it, disconnect and stop the threads."""
        self._stop.set()
        self._wake.set()
        if self._flusher is not None:
            self._flusher.join(30)
        try:
            self.flush()
        except Exception:  # unacknowledged: the broker re-sends them to the next session
            log.exception("landing the last MQTT batch failed")
        self.client.disconnect()
        self.client.loop_stop()
