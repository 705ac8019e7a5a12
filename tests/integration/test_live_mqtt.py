"""Messages published to a real Mosquitto reach silver metric_points and events via `opslake serve`."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.settings import Settings
from tests.integration.services import free_port, install_services, running, services_sh


def _publish(port: int, messages: list[tuple[str, dict]]) -> None:
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"opslake-test-{uuid.uuid4().hex[:8]}"
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, body in messages:
            info = client.publish(topic, json.dumps(body), qos=1)
            info.wait_for_publish(timeout=10)
            assert info.is_published(), f"broker did not acknowledge {topic}"
    finally:
        client.disconnect()
        client.loop_stop()


def test_published_metric_and_event_reach_silver(tmp_path: Path) -> None:
    install_services()
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path / "lake")})
    api_port, mqtt_port = free_port(), free_port()
    env = {
        **os.environ,
        "OPSLAKE_HOME": settings.home,
        "OPSLAKE_SERVICES_DIR": str(tmp_path / "services"),
        "OPSLAKE_MQTT_PORT": str(mqtt_port),
    }
    marker = uuid.uuid4().hex[:12]
    entity, alert = f"pdu-{marker}", f"UpsOnBattery_{marker}"
    now = datetime.now(UTC)
    ts_ms = int(now.timestamp() * 1000)
    today = now.date().isoformat()
    zone = LandingZone.from_settings(settings)
    serve = [
        sys.executable,
        "-m",
        "opslake",
        "serve",
        "--port",
        str(api_port),
        "--mqtt",
        f"127.0.0.1:{mqtt_port}",
    ]
    started = services_sh(env, "start", "mosquitto")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        with running(
            serve, f"http://127.0.0.1:{api_port}/healthz", tmp_path / "serve.log", env=env
        ):
            # The subscriber connects in the background: publish until a batch lands.
            deadline = time.monotonic() + 30
            while True:
                _publish(
                    mqtt_port,
                    [
                        (
                            "opslake/dc1/pdu",
                            {
                                "metric": "pdu_power_watts",
                                "entity_id": entity,
                                "value": 1520.5,
                                "ts": ts_ms,
                                "labels": {"phase": "L1"},
                            },
                        ),
                        (
                            "opslake/dc1/ups",
                            {
                                "event": "firing",
                                "alertname": alert,
                                "severity": "critical",
                                "entity_id": entity,
                                "summary": "UPS on battery",
                                "starts_at": now.isoformat(),
                            },
                        ),
                    ],
                )
                time.sleep(1.5)
                landed = b"".join(zone.read(b) for b in zone.batches("mqtt", today))
                if marker.encode() in landed and alert.encode() in landed:
                    break
                assert time.monotonic() < deadline, (
                    "no mqtt batch landed: " + (tmp_path / "serve.log").read_text()[-2000:]
                )
    finally:
        services_sh(env, "stop", "mosquitto")
    assert services_sh(env, "status", "mosquitto").returncode == 3, "mosquitto stopped by PID"
    assert {b.connector for b in zone.batches("mqtt", today)} == {"mqtt-subscriber/1.0"}

    runner.materialize(
        settings,
        [today],
        [
            "landing/mqtt",
            "bronze/mqtt_samples",
            "bronze/mqtt_events",
            "landing/prometheus",
            "bronze/prometheus_samples",
            "landing/alertmanager",
            "bronze/alertmanager_alerts",
            "silver/metric_points",
            "silver/events",
        ],
    )
    lake = Lake.from_settings(settings)
    points = [
        p
        for p in lake.read_table("silver", "metric_points", dts=[today]).to_pylist()
        if p["entity_id"] == entity
    ]
    assert points and {p["value"] for p in points} == {1520.5}
    assert {p["metric"] for p in points} == {"pdu_power_watts"}
    assert dict(points[0]["labels"]) == {"phase": "L1"}
    assert len(points) == 1  # re-published copies are the same point (deduplicated)
    assert points[0]["source"] == "mqtt"
    events = [
        e
        for e in lake.read_table("silver", "events", dts=[today]).to_pylist()
        if e["entity_id"] == entity
    ]
    assert [(e["status"], e["severity"], e["title"]) for e in events] == [
        ("firing", "critical", "UPS on battery")
    ]
    assert {e["source"] for e in events} == {"mqtt"}
