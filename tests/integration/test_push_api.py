"""Push ingestion: the HTTP contract in process, then a real server killed mid-stream.

Every push carries a push-only API key (role ``ingest``); without one it is 401, with a key
lacking ``ingest:write`` 403, and neither lands nor is quarantined.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.ingest.parsers import prometheus
from opslake.lake import quarantine
from opslake.lake.landing import LandingZone
from opslake.lake.storage import STAGING, Lake
from opslake.security.audit import AuditLog
from opslake.settings import Settings
from tests.integration.services import free_port, running
from tests.integration.test_alert_webhook import _zabbix
from tests.keys import bearer, ingest_key
from tests.unit.test_remote_write import _series, write_request

RW = "/v1/ingest/prometheus/remote_write"
AM = "/v1/ingest/alertmanager"
RW_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _webhook(n: int = 0) -> dict:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "opslake",
        "groupKey": f"{{}}:{n}",
        "groupLabels": {"alertname": "HostDown"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am:9093",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HostDown", "entity_id": f"vm-{n:04d}"},
                "annotations": {"summary": "down"},
                "startsAt": "2026-03-02T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://p/graph",
                "fingerprint": f"{n:016x}",
            }
        ],
    }


def _body(payload: dict) -> bytes:
    # As Alertmanager sends it: compact JSON on one line with a trailing newline.
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


@pytest.fixture
def key(settings: Settings) -> str:
    """A push-only key (role ``ingest``) in the fixture's identity store."""
    return ingest_key(settings)


@pytest.fixture
def client(settings: Settings, key: str) -> TestClient:
    with TestClient(create_app(settings), headers=bearer(key)) as c:
        yield c


def _push_rejects(lake: Lake) -> list[dict]:
    return quarantine.read(lake).to_pylist()


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "OpsLake data service"
    assert RW in spec["paths"] and AM in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_remote_write_lands_and_parses(client: TestClient, landing: LandingZone) -> None:
    body = write_request(_series({"__name__": "up", "job": "node"}, [(1.0, 1764115200000)]))
    response = client.post(RW, content=body, headers=RW_HEADERS)
    assert response.status_code == 204, response.text
    [batch] = landing.batches("prometheus", _today())
    assert batch.fmt == "pb" and batch.connector == "prometheus-remote-write/0.1.0"
    assert landing.read(batch) == body
    parsed = prometheus.parse(landing.read(batch), batch)
    assert parsed.table.column("metric").to_pylist() == ["up"] and not parsed.rejects
    # Redelivered without a batch id: the content hash recognises it.
    assert client.post(RW, content=body, headers=RW_HEADERS).status_code == 204
    assert len(landing.batches("prometheus", _today())) == 1


def test_alertmanager_idempotent_redelivery(client: TestClient, landing: LandingZone) -> None:
    body = _body(_webhook(1))
    headers = {"X-OpsLake-Batch-Id": "am-1"}
    first = client.post(AM, content=body, headers=headers)
    assert first.status_code == 200 and first.json() == {"batch_id": "am-1", "duplicate": False}
    again = client.post(AM, content=body, headers=headers)
    assert again.json() == {"batch_id": "am-1", "duplicate": True}
    hashed = client.post(AM, content=_body(_webhook(2)))
    assert hashed.json()["batch_id"] == hashlib.sha256(_body(_webhook(2))).hexdigest()[:32]
    batches = landing.batches("alertmanager", _today())
    assert sorted(b.batch_id for b in batches) == sorted(["am-1", hashed.json()["batch_id"]])
    assert {b.fmt for b in batches} == {"json"}


def test_concurrent_redeliveries_land_once(client: TestClient, landing: LandingZone) -> None:
    body = _body(_webhook(3))
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: client.post(AM, content=body, headers={"X-OpsLake-Batch-Id": "same"}),
                range(16),
            )
        )
    assert [a.json()["duplicate"] for a in answers].count(False) == 1
    assert len(landing.batches("alertmanager", _today())) == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        (b"\xff\xff\xffnot snappy", RW_HEADERS, 400, "snappy"),
        (
            write_request(_series({"__name__": "up"}, [(1.0, 1)]))[:-3],
            RW_HEADERS,
            400,
            "remote-write",
        ),
        (b"x", {**RW_HEADERS, "Content-Encoding": "gzip"}, 415, "Content-Encoding"),
        (b"x", {**RW_HEADERS, "X-OpsLake-Batch-Id": "../etc"}, 400, "batch id"),
    ],
)
def test_remote_write_refusals(
    client: TestClient, lake: Lake, body: bytes, headers: dict, status: int, needle: str
) -> None:
    response = client.post(RW, content=body, headers=headers)
    assert response.status_code == status
    answer = response.json()
    assert needle in answer["error"] and answer["fix"]
    [row] = _push_rejects(lake)
    assert row["source"] == "prometheus" and row["line_no"] == 0
    assert row["batch_id"] == hashlib.sha256(body).hexdigest()[:32]
    assert needle in row["reason"] and str(status) in row["reason"]
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (_body({**_webhook(), "version": "3"}), "version"),
        (_body({**_webhook(), "alerts": {"a": 1}}), "alerts"),
        (_body({**_webhook(), "alerts": [{"status": "firing", "labels": {"a": "b"}}]}), "startsAt"),
        (
            _body(
                {
                    **_webhook(),
                    "alerts": [
                        {"status": "firing", "labels": {"a": 1}, "startsAt": "2026-03-02T10:00:00Z"}
                    ],
                }
            ),
            "labels",
        ),
        (
            _body(
                {
                    **_webhook(),
                    "alerts": [{"status": "firing", "labels": {}, "startsAt": "yesterday"}],
                }
            ),
            "startsAt",
        ),
        # What bronze would quarantine is refused at the door (the day is not poisoned).
        (
            _body(
                {
                    **_webhook(),
                    "alerts": [{k: v for k, v in _webhook()["alerts"][0].items() if k != "status"}],
                }
            ),
            "status",
        ),
        ('{"version": "4", "alerts": []}'.encode("utf-16"), "UTF-8"),
    ],
)
def test_alertmanager_refusals(
    client: TestClient, lake: Lake, landing: LandingZone, body: bytes, needle: str
) -> None:
    response = client.post(AM, content=body)
    assert response.status_code == 422
    assert needle in response.json()["error"] and response.json()["fix"]
    [row] = _push_rejects(lake)
    assert row["source"] == "alertmanager" and needle in row["reason"]
    assert row["raw"] == body.decode("utf-8", errors="replace")
    assert landing.batches("alertmanager", _today()) == []
    assert client.post(AM, content=_body(_webhook())).status_code == 200


def test_too_large_is_413(settings: Settings, lake: Lake, landing: LandingZone, key: str) -> None:
    with TestClient(
        create_app(replace(settings, max_push_bytes=2000)), headers=bearer(key)
    ) as client:
        big = _body({**_webhook(), "receiver": "x" * 5000})
        response = client.post(AM, content=big)
        assert response.status_code == 413
        assert "2,000" in response.json()["error"]
        assert "OPSLAKE_MAX_PUSH_BYTES" in response.json()["fix"]
        rw = client.post(RW, content=b"\0" * 3000, headers=RW_HEADERS)
        assert rw.status_code == 413
        rows = _push_rejects(lake)
        assert len(rows) == 2 and all("413" in r["reason"] for r in rows)
        assert client.post(AM, content=_body(_webhook())).status_code == 200
    assert len(landing.batches("alertmanager", _today())) == 1


def test_rejected_raw_is_truncated(client: TestClient, lake: Lake) -> None:
    body = b"{" + b"y" * 200_000
    assert client.post(AM, content=body).status_code == 422
    [row] = _push_rejects(lake)
    assert len(row["raw"]) == 64 * 1024


def test_push_rejects_survive_bronze_quarantine_rewrite(client: TestClient, lake: Lake) -> None:
    assert client.post(AM, content=b"nope").status_code == 422
    quarantine.write(lake, "alert_notifications", _today(), [])
    assert len(_push_rejects(lake)) == 1


def test_bad_push_limit_setting(settings: Settings) -> None:
    from opslake.errors import ConfigError

    with pytest.raises(ConfigError, match="OPSLAKE_MAX_PUSH_BYTES"):
        Settings.from_env({"OPSLAKE_MAX_PUSH_BYTES": "lots"})
    with pytest.raises(ConfigError, match="OPSLAKE_MAX_DECODED_BYTES"):
        create_app(replace(settings, max_decoded_bytes=2**40))


# -- a real server, killed while acknowledging ---------------------------------------------
def _serve(port: int, log: Path) -> object:
    cmd = [sys.executable, "-m", "opslake", "serve", "--port", str(port)]
    return running(cmd, f"http://127.0.0.1:{port}/healthz", log, env=dict(os.environ))


def _client(base: str, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base,
        timeout=10,
        trust_env=False,
        headers=bearer(key),
        limits=httpx.Limits(max_connections=8),
    )


def test_crash_mid_stream_loses_no_acknowledged_batch(
    settings: Settings, landing: LandingZone, tmp_path: Path, key: str
) -> None:
    n = 300
    bodies = {f"crash-{i:04d}": _body(_webhook(i)) for i in range(n)}
    acknowledged: set[str] = set()
    lock = threading.Lock()
    port = free_port()

    def push(http: httpx.Client, batch_id: str) -> None:
        try:
            answer = http.post(
                AM, content=bodies[batch_id], headers={"X-OpsLake-Batch-Id": batch_id}
            )
        except httpx.HTTPError:
            return  # the server died under this request: not acknowledged
        if answer.status_code == 200:
            assert answer.json()["batch_id"] == batch_id
            with lock:
                acknowledged.add(batch_id)

    base = f"http://127.0.0.1:{port}"
    # One client per phase (thread-safe, pooled): a new client per request costs more than
    # the request itself.
    with (
        _serve(port, tmp_path / "serve-1.log") as proc,
        _client(base, key) as http,
        ThreadPoolExecutor(8) as pool,
    ):
        futures = [pool.submit(push, http, b) for b in bodies]
        while True:  # kill once a good part, but not all, has been acknowledged
            with lock:
                if len(acknowledged) >= n // 3:
                    break
            threading.Event().wait(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for f in futures:
            f.result()
    assert n // 3 <= len(acknowledged) < n, "the kill did not land mid-stream"
    before = set(acknowledged)
    # What a write killed mid-stream leaves staged (planted, so the check does not depend on
    # where the kill fell) goes when the service starts again.
    staging = Path(landing.lake.path(STAGING))
    staging.mkdir(parents=True, exist_ok=True)
    (staging / f"{socket.gethostname()}_{proc.pid}_{'f' * 32}.part").write_bytes(b"torn")

    with _serve(port, tmp_path / "serve-2.log") as proc, _client(base, key) as http:
        with ThreadPoolExecutor(8) as pool:  # a retrying sender redelivers everything
            list(pool.map(lambda b: push(http, b), bodies))
        assert http.get("/healthz").status_code == 200
        assert not list(staging.iterdir()), "staged bytes of the killed service are swept"
        # Stops cleanly on SIGTERM.
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0

    assert acknowledged == set(bodies)
    batches = landing.batches("alertmanager", _today())
    ids = [b.batch_id for b in batches]
    assert before <= set(ids)
    assert len(ids) == len(set(ids)) == n
    for batch in batches:
        data = landing.read(batch, verify=True)  # raises when the sha256 does not match
        assert hashlib.sha256(data).hexdigest() == batch.sha256
        assert data == bodies[batch.batch_id]


def test_serve_reports_bad_setting(settings: Settings) -> None:
    env = {**os.environ, "OPSLAKE_MAX_PUSH_BYTES": "-1"}
    done = subprocess.run(
        [sys.executable, "-m", "opslake", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "OPSLAKE_MAX_PUSH_BYTES" in done.stderr


def test_pushed_webhook_parses_into_bronze(client: TestClient, landing: LandingZone) -> None:
    from opslake.ingest.parsers import alertmanager

    assert client.post(AM, content=_body(_webhook(5))).status_code == 200
    [batch] = landing.batches("alertmanager", _today())
    parsed = alertmanager.parse(landing.read(batch), batch)
    assert parsed.table.num_rows == 1 and not parsed.rejects


def test_pretty_printed_webhook_parses_into_bronze(
    client: TestClient, landing: LandingZone
) -> None:
    from opslake.ingest.parsers import alertmanager

    body = json.dumps(_webhook(6), indent=2).encode()
    assert client.post(AM, content=body).status_code == 200
    [batch] = landing.batches("alertmanager", _today())
    assert landing.read(batch) == body  # landing keeps exactly what arrived
    parsed = alertmanager.parse(landing.read(batch), batch)
    assert parsed.table.num_rows == 1 and not parsed.rejects


# -- credentials ----------------------------------------------------------------------------
def _pushes() -> list[tuple[str, bytes, dict[str, str], str]]:
    """(path, a valid body, headers, landing source) for every push endpoint."""
    today = _today()
    return [
        (
            RW,
            write_request(_series({"__name__": "up"}, [(1.0, 1764115200000)])),
            RW_HEADERS,
            "prometheus",
        ),
        (AM, _body(_webhook(7)), {}, "alertmanager"),
        (
            "/v1/ingest/alerts/zabbix",
            json.dumps(_zabbix("PROBLEM", today)).encode(),
            {"Content-Type": "application/json"},
            "webhook",
        ),
    ]


def test_every_push_endpoint_is_described_here(client: TestClient) -> None:
    documented = {
        p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/v1/ingest")
    }
    assert documented == {RW, AM, "/v1/ingest/alerts/{name}"}
    for path in documented:
        operation = client.get("/openapi.json").json()["paths"][path]["post"]
        assert {"401", "403", "429"} <= set(operation["responses"]), path


@pytest.mark.parametrize("path", [RW, AM, "/v1/ingest/alerts/zabbix"])
def test_a_push_without_a_key_or_with_a_read_only_key_lands_nothing(
    settings: Settings, lake: Lake, landing: LandingZone, path: str
) -> None:
    store_key = ingest_key(settings, "reader", "ops_engineer", scopes=["metrics:read"])
    viewer_key = ingest_key(settings, "viewer", "dept_viewer")
    pushes = {p: (body, headers, source) for p, body, headers, source in _pushes()}
    body, headers, source = pushes[path]
    with TestClient(create_app(settings)) as anonymous:
        refused = [
            (anonymous.post(path, content=body, headers=headers), 401, "Authorization"),
            (
                anonymous.post(path, content=body, headers={**headers, **bearer("olk_x_y")}),
                401,
                "not recognised",
            ),
            (
                anonymous.post(path, content=body, headers={**headers, **bearer(store_key)}),
                403,
                "ingest:write",
            ),
            (
                anonymous.post(path, content=body, headers={**headers, **bearer(viewer_key)}),
                403,
                "ingest:write",
            ),
        ]
        for answer, status, needle in refused:
            assert answer.status_code == status, answer.text
            assert set(answer.json()) == {"error", "fix"}
            assert needle in answer.json()["error"] + answer.json()["fix"]
        assert landing.batches(source, _today()) == []
        assert _push_rejects(lake) == []  # refused before the body is read: no quarantine
        pusher = ingest_key(settings, "pusher")
        accepted = anonymous.post(path, content=body, headers={**headers, **bearer(pusher)})
        assert accepted.status_code in (200, 204), accepted.text
        assert len(landing.batches(source, _today())) == 1
    audited = [
        e
        for e in AuditLog.from_settings(settings).read()
        if e["action"].startswith("POST /v1/ingest")
    ]
    assert [(e["who"], e["status"]) for e in audited] == [
        ("anonymous", 401),
        ("anonymous", 401),
        ("reader", 403),
        ("viewer", 403),
        ("pusher", accepted.status_code),
    ]


def test_an_ingest_key_pushes_but_reads_nothing(client: TestClient, key: str) -> None:
    assert client.post(AM, content=_body(_webhook(8))).status_code == 200
    for path in ("/v1/catalog/metrics", "/v1/incidents", "/v1/assets", "/v1/subscriptions"):
        answer = client.get(path)
        assert answer.status_code == 403 and "ingest" in answer.json()["error"], path
