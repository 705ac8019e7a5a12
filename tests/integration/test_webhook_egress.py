"""Webhook egress through the real API (issue 16): a department viewer cannot point a webhook
at loopback, private ranges or cloud metadata; once an administrator (TOTP) allow-lists a
receiver it gets signed deliveries, pinned to the checked address; a redirect is not
followed, a receiver's error body never reaches the delivery log, and an entry taken off the
list stops deliveries at the next one. Receivers are real HTTP servers on loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from opslake import subscriptions as subs
from opslake.api import subscriptions as subs_api
from opslake.api.app import create_app
from opslake.lake.storage import Lake
from opslake.lake.warehouse import build_warehouse
from opslake.metrics_catalog.compute import METRIC_VALUES
from opslake.security.identity import IdentityStore
from opslake.security.totp import b32_key, totp
from opslake.settings import Settings
from tests.integration.services import free_port
from tests.integration.test_subscriptions import PASSWORD, SignedReceiver
from tests.receivers import _Handler, _Server

METRIC = "dc_power_kw"
DEPARTMENT = "health"
SECRET_BODY = b"SECRET-INTERNAL token=tok-123 db_password=hunter2"


class Canned(_Server):
    """Answers every POST with a fixed status, headers and body; keeps the request headers."""

    def __init__(self, status: int, body: bytes = b"", **headers: str) -> None:
        class Handler(_Handler):
            def do_POST(self) -> None:
                owner: Canned = self.server.owner  # type: ignore[attr-defined]
                self._body()
                owner.received.append(dict(self.headers))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


def _gold(settings: Settings, bucket: datetime) -> None:
    """One hourly value of the viewer's department, served."""
    lake = Lake.from_settings(settings)
    row = {
        "metric_id": METRIC,
        "metric_version": "1.0",
        "grain": "1h",
        "bucket_start": bucket,
        "scope": "department",
        "department": DEPARTMENT,
        "value": 42.0,
    }
    lake.write_table(
        pa.Table.from_pylist([row], METRIC_VALUES),
        "gold",
        "metric_values",
        {"dt": bucket.date().isoformat(), "family": "power"},
    )
    build_warehouse(lake, settings.warehouse_path)


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPSLAKE_HOME", str(tmp_path / "lake"))
    monkeypatch.delenv("OPSLAKE_STATE_DIR", raising=False)
    monkeypatch.setenv("OPSLAKE_EGRESS_FILE", str(tmp_path / "egress.yaml"))  # none yet
    monkeypatch.setenv("OPSLAKE_SUBSCRIPTION_INTERVAL_S", "0")  # the test drives the evaluator
    settings = Settings.from_env()
    identity = IdentityStore.sealed(settings)
    identity.bootstrap_admin("root", PASSWORD)
    secret, _ = identity.enrol_totp("root")
    identity.add_user("dora", "dept_viewer", PASSWORD, departments=[DEPARTMENT])
    keys = {user: identity.create_key(user)[1] for user in ("root", "dora")}
    app = create_app(settings)
    with TestClient(app) as client:
        yield settings, app, client, keys, secret


def _as(key: str, totp_secret: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if totp_secret:
        headers["X-OpsLake-TOTP"] = totp(b32_key(totp_secret), datetime.now(UTC).timestamp())
    return headers


def _subscribe(client: TestClient, key: str, url: str):
    return client.post(
        "/v1/subscriptions",
        headers=_as(key),
        json={
            "metric_id": METRIC,
            "by": "department",
            "condition": {"type": "new_data"},
            "delivery": {"type": "webhook", "url": url},
        },
    )


def test_webhooks_reach_only_allow_listed_receivers_and_leak_nothing(service) -> None:
    settings, app, client, keys, totp_secret = service
    viewer, admin = keys["dora"], keys["root"]
    receiver, trap = SignedReceiver(), Canned(200)
    receiver.start()
    with (
        trap,
        Canned(302, Location=f"{trap.url}/stolen") as redirecting,
        Canned(500, SECRET_BODY) as failing,
    ):
        # 1. Nothing is allow-listed: loopback, private and metadata destinations are refused.
        for url in (
            receiver.url,
            f"http://localhost:{receiver.port}/hook",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:127.0.0.1]/",
            "http://metadata.google.internal/",
        ):
            refused = _subscribe(client, viewer, url)
            assert refused.status_code == 400, (url, refused.text)
            doc = refused.json()
            assert set(doc) == {"error", "fix"} and "not allow-listed" in doc["error"]
            assert "POST /v1/admin/egress" in doc["fix"]
        assert client.get("/v1/subscriptions", headers=_as(viewer)).json()["count"] == 0

        # 2. Only an administrator with a TOTP code changes the list.
        entry = {"entry": f"127.0.0.1:{receiver.port}", "note": "test receiver"}
        assert client.post("/v1/admin/egress", headers=_as(viewer), json=entry).status_code == 403
        assert client.post("/v1/admin/egress", headers=_as(admin), json=entry).status_code == 401
        added = client.post("/v1/admin/egress", headers=_as(admin, totp_secret), json=entry)
        assert added.status_code == 201, added.text
        assert added.json()["origin"] == "api" and added.json()["added_by"] == "root"
        assert (
            client.post(
                "/v1/admin/egress", headers=_as(admin, totp_secret), json={"entry": "not a host!"}
            ).status_code
            == 400
        )

        # 3. That port only: the receiver is accepted, another loopback port is not.
        made = _subscribe(client, viewer, receiver.url)
        assert made.status_code == 201, made.text
        receiver.secrets[made.json()["id"]] = made.json()["secret"]
        assert _subscribe(client, viewer, failing.url).status_code == 400
        # A whole range, then the redirecting, failing, closed and pinned-name receivers.
        assert (
            client.post(
                "/v1/admin/egress", headers=_as(admin, totp_secret), json={"entry": "127.0.0.0/8"}
            ).status_code
            == 201
        )
        ids = {
            name: _subscribe(client, viewer, url).json()["id"]
            for name, url in (
                ("redirect", redirecting.url),
                ("error", failing.url),
                ("closed", f"http://127.0.0.1:{free_port()}/"),
            )
        }
        listed = client.get("/v1/admin/egress", headers=_as(admin, totp_secret)).json()
        assert [(r["entry"], r["origin"]) for r in listed["rows"]] == [
            (f"127.0.0.1:{receiver.port}", "api"),
            ("127.0.0.0/8", "api"),
        ]
        assert client.get("/v1/admin/egress", headers=_as(viewer)).status_code == 403

        # 4. One pass: the signed receiver gets its delivery; the others fail, telling little.
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        _gold(settings, hour)
        store = subs_api.store(app)
        result = subs.evaluate(
            app.state.warehouse, store, now=datetime.now(UTC), sleep=lambda _s: None
        )
        assert (result.sent, result.failed) == (1, 3), result
        assert receiver.refused == 0
        assert [(d["value"], d["series"]) for d in receiver.received] == [
            (42.0, {"department": DEPARTMENT})
        ]
        assert len(redirecting.received) == 3 and trap.received == []  # 3 tries, no follow
        details = {}
        for name, sub_id in ids.items():
            log = client.get(f"/v1/subscriptions/{sub_id}/deliveries", headers=_as(viewer))
            assert log.status_code == 200
            assert "SECRET" not in log.text and "hunter2" not in log.text
            details[name] = [(r["status"], r["detail"]) for r in log.json()["rows"]][-1]
        assert details == {
            "redirect": ("failed", "HTTP 302: redirects are not followed"),
            "error": ("failed", "HTTP 500: receiver answered with an error"),
            "closed": ("failed", "connection failed"),
        }

        # 5. Taken off the list: the next delivery is refused before any connection.
        removed = client.delete("/v1/admin/egress/127.0.0.0/8", headers=_as(admin, totp_secret))
        assert removed.status_code == 200 and removed.json() == {"removed": "127.0.0.0/8"}
        assert (
            client.delete(
                "/v1/admin/egress/127.0.0.0/8", headers=_as(admin, totp_secret)
            ).status_code
            == 404
        )
        later = subs.evaluate(
            app.state.warehouse,
            store,
            now=datetime.now(UTC) + timedelta(hours=1),
            sleep=lambda _s: None,
        )
        assert later.failed == 3 and len(failing.received) == 3  # not reached again
        log = client.get(f"/v1/subscriptions/{ids['error']}/deliveries", headers=_as(viewer))
        assert log.json()["rows"][-1]["detail"] == "refused: destination not allow-listed"
    receiver.stop()

    # Every change to the list is audited with what was opened or closed.
    audit = [
        json.loads(line)
        for f in sorted((settings.state_dir / "audit").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    changes = [
        (e["action"], e["status"], e["params"].get("entry"))
        for e in audit
        if "/admin/egress" in e["action"] and e["action"][0] in "PD"
    ]
    assert ("POST /v1/admin/egress", 201, f"127.0.0.1:{receiver.port}") in changes
    assert ("DELETE /v1/admin/egress/{entry:path}", 200, "127.0.0.0/8") in changes


def test_a_named_receiver_is_reached_at_the_checked_address(service) -> None:
    settings, app, client, keys, totp_secret = service
    store = subs_api.store(app)
    answers = {"hooks.test": ["127.0.0.1"]}
    store.egress.resolve = lambda host, _port: answers[host]  # DNS as the test says
    for entry in ("hooks.test", "127.0.0.1"):
        assert (
            client.post(
                "/v1/admin/egress", headers=_as(keys["root"], totp_secret), json={"entry": entry}
            ).status_code
            == 201
        )
    with Canned(200) as named:
        made = _subscribe(client, keys["dora"], f"http://hooks.test:{named.port}/hook")
        assert made.status_code == 201, made.text
        _gold(settings, datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
        assert subs.evaluate(app.state.warehouse, store, sleep=lambda _s: None).sent == 1
        assert named.received[0]["Host"] == f"hooks.test:{named.port}"
        # The name now points elsewhere (rebinding): refused at delivery, nothing sent.
        answers["hooks.test"] = ["10.9.9.9"]
        _gold(
            settings,
            datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1),
        )
        later = subs.evaluate(
            app.state.warehouse,
            store,
            now=datetime.now(UTC) + timedelta(hours=1),
            sleep=lambda _s: None,
        )
        assert (later.sent, later.failed, len(named.received)) == (0, 1, 1)
