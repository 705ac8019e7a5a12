"""Subscriptions end to end (S6.2f): a webhook receiver that checks the SM3 signature and a
paho subscriber on a real Mosquitto each get signed deliveries when new data arrives and when
a threshold is crossed; a webhook receiver that is down gets its delivery once it is back.
Subscriptions are managed through the API and read back through the CLI; the evaluator runs
with an injected clock, so backoff needs no waiting."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pyarrow as pa
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from opslake import subscriptions as subs
from opslake.api import subscriptions as subs_api
from opslake.api.app import create_app
from opslake.cli import app as cli
from opslake.delivery import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from opslake.lake.storage import Lake
from opslake.lake.warehouse import build_warehouse
from opslake.metrics_catalog.compute import METRIC_VALUES
from opslake.security.identity import IdentityStore
from opslake.settings import Settings
from tests.integration.services import free_port, install_services, services_sh

PASSWORD = "Correct-Horse-42-Battery"
METRIC = "dc_power_kw"


class SignedReceiver:
    """A webhook endpoint keeping only deliveries whose SM3 signature verifies; restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.secrets: dict[str, str] = {}
        self.received: list[dict] = []
        self.refused = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                secret = owner.secrets.get(self.headers.get("X-OpsLake-Subscription", ""), "")
                ok = bool(secret) and verify(
                    secret,
                    self.headers.get(TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                )
                if ok:
                    owner.received.append(
                        {**json.loads(body), "_event": self.headers.get("X-OpsLake-Event")}
                    )
                else:
                    owner.refused += 1
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class MqttListener:
    """A paho subscriber to ``opslake-out/subscriptions/#`` (QoS 1) keeping verified payloads."""

    def __init__(self, port: int, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.received: list[dict] = []
        self.refused = 0
        self.ready = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, *_: c.subscribe("opslake-out/subscriptions/#", qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, _client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        doc = json.loads(message.payload)
        sub_id = message.topic.rsplit("/", 1)[-1]
        secret = self.secrets.get(sub_id, "")
        if (
            doc.get("subscription_id") == sub_id
            and secret
            and verify(secret, doc["timestamp"], doc["body"], doc["signature"])
        ):
            self.received.append({**json.loads(doc["body"]), "_topic": message.topic})
        else:
            self.refused += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Gold:
    """A tiny gold/metric_values (one metric, scope all, hourly) and its warehouse."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.lake = settings, Lake.from_settings(settings)
        self.rows: list[dict] = []

    def add(self, bucket: datetime, value: float) -> None:
        self.rows.append(
            {
                "metric_id": METRIC,
                "metric_version": "1.0",
                "grain": "1h",
                "bucket_start": bucket,
                "scope": "all",
                "value": value,
            }
        )
        for day in {r["bucket_start"].date().isoformat() for r in self.rows}:
            rows = [r for r in self.rows if r["bucket_start"].date().isoformat() == day]
            self.lake.write_table(
                pa.Table.from_pylist(rows, METRIC_VALUES),
                "gold",
                "metric_values",
                {"dt": day, "family": "power"},
            )
        build_warehouse(self.lake, self.settings.warehouse_path)


def _wait(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def broker(tmp_path: Path):
    install_services()
    port = free_port()
    env = {
        **os.environ,
        "OPSLAKE_SERVICES_DIR": str(tmp_path / "services"),
        "OPSLAKE_MQTT_PORT": str(port),
    }
    started = services_sh(env, "start", "mosquitto")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield port
    finally:
        services_sh(env, "stop", "mosquitto")


@pytest.fixture
def loopback_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An egress file allow-listing loopback, where these tests run their webhook receivers
    (webhooks are refused anywhere not allow-listed: tests/integration/test_webhook_egress)."""
    egress = tmp_path / "egress.yaml"
    egress.write_text("allow:\n  - 127.0.0.1\n")
    monkeypatch.setenv("OPSLAKE_EGRESS_FILE", str(egress))
    return egress


def test_signed_deliveries_by_webhook_and_mqtt_with_retry(
    tmp_path: Path, broker: int, monkeypatch: pytest.MonkeyPatch, loopback_hooks: Path
) -> None:
    monkeypatch.setenv("OPSLAKE_HOME", str(tmp_path / "lake"))
    monkeypatch.delenv("OPSLAKE_STATE_DIR", raising=False)
    monkeypatch.setenv("OPSLAKE_SUBSCRIPTION_INTERVAL_S", "0")  # the test drives the evaluator
    monkeypatch.setenv("OPSLAKE_MQTT_BROKER", f"127.0.0.1:{broker}")
    settings = Settings.from_env()
    gold = Gold(settings)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    gold.add(hour - timedelta(hours=2), 99.0)  # before anyone subscribed: never delivered
    identity = IdentityStore(settings)
    identity.add_user("alice", "ops_engineer", PASSWORD)
    identity.add_user("bob", "ops_engineer", PASSWORD)
    key = identity.create_key("alice")[1]
    other = identity.create_key("bob")[1]
    auth = {"Authorization": f"Bearer {key}"}

    receiver = SignedReceiver()
    receiver.start()
    app = create_app(settings)
    with TestClient(app) as client:
        created: dict[tuple[str, str], str] = {}
        for delivery in ({"type": "webhook", "url": receiver.url}, {"type": "mqtt"}):
            for condition in ({"type": "new_data"}, {"type": "threshold", "op": ">", "value": 90}):
                answer = client.post(
                    "/v1/subscriptions",
                    headers=auth,
                    json={"metric_id": METRIC, "condition": condition, "delivery": delivery},
                )
                assert answer.status_code == 201, answer.text
                doc = answer.json()
                assert len(doc["secret"]) >= 32
                created[(delivery["type"], condition["type"])] = doc["id"]
                receiver.secrets[doc["id"]] = doc["secret"]
        sse = client.post(
            "/v1/subscriptions",
            headers=auth,
            json={
                "metric_id": METRIC,
                "condition": {"type": "new_data"},
                "delivery": {"type": "sse"},
            },
        ).json()["id"]
        listed = client.get("/v1/subscriptions", headers=auth).json()
        assert listed["count"] == 5
        assert "secret" not in json.dumps(listed)  # secrets are shown once, at creation
        mqtt_new = created[("mqtt", "new_data")]
        assert (
            client.get(f"/v1/subscriptions/{mqtt_new}", headers=auth).json()["delivery"]["topic"]
            == f"opslake-out/subscriptions/{mqtt_new}"
        )
        assert (
            client.get(
                f"/v1/subscriptions/{mqtt_new}", headers={"Authorization": f"Bearer {other}"}
            ).status_code
            == 404
        )
        listener = MqttListener(broker, receiver.secrets)
        try:
            assert listener.ready.wait(10), "the paho subscriber did not subscribe"
            clock = datetime.now(UTC)

            def run(after: timedelta) -> subs.PassResult:
                return subs_api.run_once(app, clock + after)

            def got(kind: str) -> tuple[list[tuple], list[tuple]]:
                hooks = sorted(
                    (d["bucket_start"], d["value"])
                    for d in receiver.received
                    if d["condition"] == kind
                )
                mq = sorted(
                    (d["bucket_start"], d["value"])
                    for d in listener.received
                    if d["condition"] == kind
                )
                return hooks, mq

            def at(h: int) -> str:
                return subs.ts(hour + timedelta(hours=h))

            # 1. New data below the threshold: new_data to both, no threshold event.
            gold.add(hour, 50.0)
            first = run(timedelta())
            assert (first.queued, first.sent, first.failed, first.buffered) == (3, 2, 0, 1)
            _wait(lambda: len(listener.received) == 1, "the MQTT new-data delivery")
            assert got("new_data") == ([(at(0), 50.0)], [(at(0), 50.0)])

            # 2. The next hour crosses the threshold: both conditions, both channels.
            gold.add(hour + timedelta(hours=1), 95.0)
            second = run(timedelta(minutes=1))
            assert (second.sent, second.failed) == (4, 0)
            _wait(lambda: len(listener.received) == 3, "the MQTT threshold delivery")
            assert got("new_data") == ([(at(0), 50.0), (at(1), 95.0)],) * 2
            assert got("threshold") == ([(at(1), 95.0)],) * 2
            crossing = next(d for d in receiver.received if d["condition"] == "threshold")
            assert crossing["previous_value"] == 50.0
            assert crossing["threshold"] == {"op": ">", "value": 90.0}

            # 3. Nothing new: nothing is delivered twice.
            assert run(timedelta(minutes=2)).sent == 0

            # 4. The webhook receiver goes down; data falls and crosses again.
            receiver.stop()
            gold.add(hour + timedelta(hours=2), 60.0)
            gold.add(hour + timedelta(hours=3), 97.0)
            down = run(timedelta(minutes=3))
            assert (down.sent, down.failed) == (3, 3)  # MQTT got its three; webhooks wait
            _wait(lambda: len(listener.received) == 6, "the MQTT deliveries while down")
            assert got("threshold")[1] == [(at(1), 95.0), (at(3), 97.0)]
            hook_sub = created[("webhook", "threshold")]
            log = client.get(f"/v1/subscriptions/{hook_sub}/deliveries", headers=auth).json()
            last = log["rows"][-1]
            assert last["status"] == "failed" and last["next_attempt_at"]
            assert subs.parse_ts(last["next_attempt_at"]) == clock + timedelta(
                minutes=3, seconds=30
            )

            # 5. Back up: not due yet (backoff), then delivered once, in order.
            receiver.start()
            assert run(timedelta(minutes=3, seconds=10)).sent == 0
            back = run(timedelta(minutes=3, seconds=31))
            assert (back.sent, back.failed) == (3, 0)
            assert got("new_data")[0] == [
                (at(h), v) for h, v in ((0, 50.0), (1, 95.0), (2, 60.0), (3, 97.0))
            ]
            assert got("threshold")[0] == [(at(1), 95.0), (at(3), 97.0)]
            assert run(timedelta(minutes=20)).sent == 0
            assert receiver.refused == 0 and listener.refused == 0
            assert len({d["_event"] for d in receiver.received}) == len(receiver.received)
            statuses = [
                r["status"]
                for r in client.get(
                    f"/v1/subscriptions/{hook_sub}/deliveries", headers=auth
                ).json()["rows"]
            ]
            assert statuses == ["queued", "sent", "queued", "failed", "sent"]
        finally:
            listener.close()
            receiver.stop()

        # SSE: the buffered events stream as text/event-stream, resumable by id.
        stream = client.get(f"/v1/subscriptions/{sse}/events?follow=false", headers=auth)
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in stream.text.split("\n\n") if f.startswith("id:")]
        assert len(frames) == 4
        first_id = int(frames[0].split("\n")[0].removeprefix("id: "))
        resumed = client.get(
            f"/v1/subscriptions/{sse}/events?follow=false",
            headers={**auth, "Last-Event-ID": str(first_id)},
        )
        assert resumed.text.count("id: ") == 3
        assert client.delete(f"/v1/subscriptions/{sse}", headers=auth).status_code == 204
        assert client.get(f"/v1/subscriptions/{sse}", headers=auth).status_code == 404

    # The CLI reads the same store and log.
    runner = CliRunner()
    listed = runner.invoke(cli, ["subscriptions", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {s["id"] for s in json.loads(listed.output)} == set(created.values())
    shown = runner.invoke(cli, ["subscriptions", "deliveries", created[("webhook", "new_data")]])
    assert shown.exit_code == 0 and "failed" in shown.output and "sent" in shown.output
    assert runner.invoke(cli, ["subscriptions", "remove", mqtt_new]).exit_code == 0
    assert runner.invoke(cli, ["subscriptions", "run-once"]).exit_code == 0


@contextlib.contextmanager
def _served(app) -> Iterator[str]:
    """``app`` under a real uvicorn on loopback (streams are not buffered, as TestClient's
    are); its base URL. Shutting down must finish even with a stream having been open."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5
        )
    )
    thread = threading.Thread(target=server.run, name="uvicorn-sse", daemon=True)
    thread.start()
    _wait(lambda: server.started, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
    assert not thread.is_alive(), "the service did not stop"


def _frames(response: httpx.Response, out: queue.Queue) -> None:
    """Put each SSE frame (its ``field: value`` lines as a dict) on ``out`` as it arrives."""
    frame: dict[str, str] = {}
    try:
        for line in response.iter_lines():
            if line == "" and frame:
                out.put(frame)
                frame = {}
            elif line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                frame[name] = value
    except httpx.HTTPError:
        pass  # the test closed the stream


def test_sse_follow_streams_events_as_they_are_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSLAKE_HOME", str(tmp_path / "lake"))
    monkeypatch.delenv("OPSLAKE_STATE_DIR", raising=False)
    monkeypatch.setenv("OPSLAKE_SUBSCRIPTION_INTERVAL_S", "0")  # the test queues the events itself
    settings = Settings.from_env()
    identity = IdentityStore.sealed(settings)
    identity.add_user("alice", "ops_engineer", PASSWORD)
    auth = {"Authorization": f"Bearer {identity.create_key('alice')[1]}"}
    log = subs.SubscriptionStore(settings.state_dir)

    def queue_event(sub: subs.Subscription, key: str) -> None:
        assert log.advance(sub, [{"event_key": key, "check": key}], {}, datetime.now(UTC)) == 1

    with (
        _served(create_app(settings)) as base,
        httpx.Client(base_url=base, headers=auth, timeout=10, trust_env=False) as http,
    ):
        made = http.post(
            "/v1/subscriptions",
            json={"condition": {"type": "quality_failed"}, "delivery": {"type": "sse"}},
        )
        assert made.status_code == 201, made.text
        sub = log.get(made.json()["id"])
        path = f"/v1/subscriptions/{sub.id}/events"
        queue_event(sub, "quality:2026-03-02:silver.events:a")  # before anyone listens

        frames: queue.Queue = queue.Queue()
        with http.stream("GET", path, params={"follow": "true"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            threading.Thread(target=_frames, args=(response, frames), daemon=True).start()
            first = frames.get(timeout=10)
            assert first["event"] == "quality"
            assert json.loads(first["data"])["check"] == "quality:2026-03-02:silver.events:a"
            # The stream stays open and quiet until something new is queued…
            time.sleep(2 * subs_api.SSE_POLL_S + 0.5)
            assert frames.empty()
            queued_at = time.monotonic()
            queue_event(sub, "quality:2026-03-02:silver.events:b")
            # …then delivers it on the same connection within a poll or two.
            second = frames.get(timeout=5)
            latency = time.monotonic() - queued_at
            assert json.loads(second["data"])["check"] == "quality:2026-03-02:silver.events:b"
            assert int(second["id"]) > int(first["id"])
            print(f"\nSSE follow: queued → received on the open stream in {latency:.2f} s")

        # Resuming with Last-Event-ID skips what was received, then follows again.
        resumed: queue.Queue = queue.Queue()
        with http.stream(
            "GET", path, params={"follow": "true"}, headers={"Last-Event-ID": first["id"]}
        ) as response:
            threading.Thread(target=_frames, args=(response, resumed), daemon=True).start()
            assert resumed.get(timeout=10)["id"] == second["id"]
            queue_event(sub, "quality:2026-03-02:silver.events:c")
            third = resumed.get(timeout=5)
            assert json.loads(third["data"])["check"] == "quality:2026-03-02:silver.events:c"
            assert resumed.empty()

        # Another user's key cannot follow it.
        identity.add_user("bob", "ops_engineer", PASSWORD)
        other = {"Authorization": f"Bearer {identity.create_key('bob')[1]}"}
        assert http.get(path, params={"follow": "true"}, headers=other).status_code == 404
