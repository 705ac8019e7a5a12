"""Real Prometheus and Alertmanager pushing into a real ``opslake serve`` on loopback.

``opslake serve`` runs as a subprocess on a free port with a temporary OPSLAKE_HOME;
node_exporter, Prometheus (remote-writing to the server) and Alertmanager (its webhook
pointed at the server) are installed by ``infra/install-services.sh`` (a failed install
fails the module) and started and stopped by PID with ``infra/services.sh`` on free ports.
Both push with a push-only API key (role ``ingest``) that ``services.sh`` reads from
``OPSLAKE_INGEST_KEY_FILE`` into their configs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pyarrow.compute as pc
import pytest

from opslake.ingest.parsers import prometheus
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.orchestration import runner
from opslake.security.audit import AuditLog
from opslake.settings import Settings
from tests.integration.services import (
    free_port,
    install_services,
    pid_running,
    running,
    services_sh,
    wait_http,
)
from tests.keys import ingest_key_file

NAMES = ("node_exporter", "prometheus", "alertmanager")
ALERT = "OpsLakeTestAlert"
LAYERS = ["landing", "bronze", "silver"]


@dataclass(frozen=True)
class Stack:
    settings: Settings
    landing: LandingZone
    env: dict[str, str]  # for infra/services.sh
    node: str  # node_exporter host:port
    prom: str  # Prometheus base URL
    started: datetime  # when Prometheus was started


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    install_services()
    base = tmp_path_factory.mktemp("live")
    home, run_dir = base / "lake", base / "services"
    run_dir.mkdir()
    serve_env = {
        k: v for k, v in os.environ.items() if k not in ("OPSLAKE_STATE_DIR", "OPSLAKE_S3_ENDPOINT")
    }
    serve_env["OPSLAKE_HOME"] = str(home)
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})

    api = f"http://127.0.0.1:{free_port()}"
    ports = {n: free_port() for n in NAMES}
    env = {
        **os.environ,
        "OPSLAKE_SERVICES_DIR": str(run_dir),
        "OPSLAKE_NODE_EXPORTER_PORT": str(ports["node_exporter"]),
        "OPSLAKE_PROMETHEUS_PORT": str(ports["prometheus"]),
        "OPSLAKE_ALERTMANAGER_PORT": str(ports["alertmanager"]),
        "OPSLAKE_REMOTE_WRITE_URL": f"{api}/v1/ingest/prometheus/remote_write",
        "OPSLAKE_ALERT_WEBHOOK_URL": f"{api}/v1/ingest/alertmanager",
        "OPSLAKE_INGEST_KEY_FILE": str(ingest_key_file(settings, base / "ingest.key")),
    }
    cmd = [sys.executable, "-m", "opslake", "serve", "--port", api.rsplit(":", 1)[1]]
    pids: dict[str, int] = {}
    with running(cmd, f"{api}/healthz", base / "serve.log", env=serve_env) as serve:
        try:
            started_at = datetime.now(UTC)
            started = services_sh(env, "start", *NAMES)
            assert started.returncode == 0, started.stdout + started.stderr
            pids = {n: int((run_dir / f"{n}.pid").read_text()) for n in NAMES}
            prom = f"http://127.0.0.1:{ports['prometheus']}"
            wait_http(f"{prom}/-/ready", timeout=30)
            wait_http(f"http://127.0.0.1:{ports['alertmanager']}/-/ready", timeout=30)
            yield Stack(
                settings,
                LandingZone.from_settings(settings),
                env,
                f"127.0.0.1:{ports['node_exporter']}",
                prom,
                started_at,
            )
        finally:
            stopped = services_sh(env, "stop", *NAMES)
        assert serve.poll() is None, "opslake serve died: " + (base / "serve.log").read_text()
    assert serve.poll() is not None
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    status = services_sh(env, "status", *NAMES)
    assert status.returncode == 3, status.stdout
    alive = [n for n, pid in pids.items() if pid_running(pid)]
    assert not alive, f"still running after stop: {alive}"


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _wait_for(
    landing: LandingZone,
    source: str,
    found: Callable[[LandedBatch], bool],
    timeout: float,
    what: str,
) -> LandedBatch:
    """The first new batch of ``source`` (today) for which ``found`` is true."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        for batch in landing.batches(source, _today()):
            if batch.batch_id not in seen:
                seen.add(batch.batch_id)
                if found(batch):
                    return batch
        if time.monotonic() > deadline:
            pytest.fail(
                f"no {source} batch with {what} within {timeout:.0f} s ({len(seen)} batches landed)"
            )
        time.sleep(0.5)


def _query(prom: str, query: str, at: float) -> list[dict]:
    body = httpx.get(
        f"{prom}/api/v1/query", params={"query": query, "time": f"{at:.3f}"}, timeout=10
    ).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_remote_write_lands_and_matches_what_prometheus_answers(stack: Stack) -> None:
    landing = stack.landing

    metrics_seen: set[str] = set()

    def has_node_load(batch: LandedBatch) -> bool:
        # Remote write shards a scrape over several requests: wait until both node_load1
        # and up have arrived, whichever batches carried them.
        if batch.fmt != "pb" or not batch.connector.startswith("prometheus-remote-write"):
            return False
        table = prometheus.parse(landing.read(batch), batch).table
        metrics_seen.update(
            m
            for m, labels in zip(
                table.column("metric").to_pylist(),
                table.column("label_set").to_pylist(),
                strict=True,
            )
            if 'job="node"' in labels
        )
        return {"node_load1", "up"} <= metrics_seen

    batch = _wait_for(landing, "prometheus", has_node_load, 60, "node_load1")
    print(
        f"\nservices.sh start → first remote write with node_load1 landed: "
        f"{(batch.received - stack.started).total_seconds():.1f} s"
    )
    runner.materialize(stack.settings, [batch.dt], LAYERS)
    points = landing.lake.read_table("silver", "metric_points", dts=[batch.dt])
    # Prometheus keeps pushing: list the batches after the run, a superset of those it read.
    batches = landing.batches("prometheus", batch.dt)
    assert all(
        b.fmt == "pb" and b.connector.startswith("prometheus-remote-write/") for b in batches
    ), {(b.fmt, b.connector) for b in batches}
    assert set(points.column("batch_id").to_pylist()) <= {b.batch_id for b in batches}
    load = [
        p
        for p in points.filter(pc.equal(points.column("metric"), "node_load1")).to_pylist()
        if dict(p["labels"]).get("job") == "node"
    ]
    assert load, "silver has no node_load1 for job=node"
    for point in load[:10]:
        labels = dict(point["labels"])
        assert labels["instance"] == stack.node
        at = point["ts"].timestamp()
        [answer] = _query(stack.prom, f'node_load1{{job="node",instance="{stack.node}"}}', at)
        assert float(answer["value"][1]) == point["value"], (answer, point)

    up = points.filter(pc.equal(points.column("metric"), "up")).to_pylist()
    instances = {dict(p["labels"])["job"]: dict(p["labels"])["instance"] for p in up}
    assert instances.get("node") == stack.node, instances
    if "prometheus" in instances:
        assert instances["prometheus"] == stack.prom.removeprefix("http://")
    assert all(p["value"] == 1.0 for p in up if dict(p["labels"])["job"] == "node")
    # Every push came with the ingest key (never anonymous) and was accepted.
    pushes = [
        e
        for e in AuditLog.from_settings(stack.settings).read()
        if e["action"] == "POST /v1/ingest/prometheus/remote_write"
    ]
    assert pushes and {(e["who"], e["role"], e["status"]) for e in pushes} == {
        ("sender", "ingest", 204)
    }


def _alerts(landing: LandingZone, batch: LandedBatch) -> list[dict]:
    payload = json.loads(landing.read(batch))
    return [a for a in payload["alerts"] if a["labels"].get("alertname") == ALERT]


def _events(stack: Stack, dt: str) -> list[dict]:
    runner.materialize(stack.settings, [dt], LAYERS)
    events = stack.landing.lake.read_table("silver", "events", dts=[dt]).to_pylist()
    return [e for e in events if dict(e["labels"]).get("alertname") == ALERT]


def test_alert_fires_and_resolves_through_the_webhook(stack: Stack) -> None:
    landing = stack.landing

    def with_status(status: str, fingerprint: str | None = None) -> Callable:
        def found(batch: LandedBatch) -> bool:
            return any(
                a["status"] == status and fingerprint in (None, a["fingerprint"])
                for a in _alerts(landing, batch)
            )

        return found

    fired = time.monotonic()
    fire = services_sh(stack.env, "fire-alert")
    assert fire.returncode == 0, fire.stdout + fire.stderr
    fired_at = datetime.now(UTC)
    firing = _wait_for(landing, "alertmanager", with_status("firing"), 60, f"{ALERT} firing")
    print(
        f"\nfire-alert → firing webhook landed: {(firing.received - fired_at).total_seconds():.1f}"
        f" s (seen by the test after {time.monotonic() - fired:.1f} s)"
    )
    assert firing.fmt == "json" and firing.connector == "alertmanager-webhook/4"
    [alert] = [a for a in _alerts(landing, firing) if a["status"] == "firing"]
    fingerprint = alert["fingerprint"]

    [event] = [e for e in _events(stack, firing.dt) if e["status"] == "firing"]
    assert event["fingerprint"] == fingerprint and event["source"] == "alertmanager"
    assert event["entity_id"] == "node-local" and event["severity"] == "warning"
    assert event["title"] == "OpsLake test alert (fired on demand)"
    assert dict(event["labels"])["job"] == "node" and event["ends_at"] is None

    resolve = services_sh(stack.env, "resolve-alert")
    assert resolve.returncode == 0, resolve.stdout + resolve.stderr
    resolved_at = datetime.now(UTC)
    resolved = _wait_for(
        landing, "alertmanager", with_status("resolved", fingerprint), 90, f"{ALERT} resolved"
    )
    print(
        f"resolve-alert → resolved webhook landed: "
        f"{(resolved.received - resolved_at).total_seconds():.1f} s"
    )

    events = {
        e["status"]: e for e in _events(stack, resolved.dt) if e["fingerprint"] == fingerprint
    }
    assert set(events) == {"firing", "resolved"}, events
    done = events["resolved"]
    assert done["entity_id"] == "node-local" and done["starts_at"] == event["starts_at"]
    assert done["ends_at"] is not None and done["ends_at"] >= done["starts_at"]
