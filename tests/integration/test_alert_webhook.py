"""Zabbix-style JSON alert webhooks: mapped, landed, parsed to bronze, conformed into events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.ingest.parsers import alert_webhook, alertmanager
from opslake.lake import quarantine
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.settings import Settings
from tests.keys import bearer, ingest_key


def _zabbix(status: str, day: str) -> dict:
    date = day.replace("-", ".")
    return {
        "event": {
            "id": "48213",
            "name": "High CPU utilization on vm-0012",
            "severity": "High",
            "status": status,
            "date": date,
            "time": "03:15:00",
            "recovery_date": date if status == "RESOLVED" else "",
            "recovery_time": "03:45:10" if status == "RESOLVED" else "",
            "opdata": "CPU 97 %",
            "tags": [{"tag": "service", "value": "tax"}, {"tag": "scope", "value": "performance"}],
        },
        "host": {"name": "vm-0012", "ip": "10.20.1.12"},
        "trigger": {"id": "23001"},
    }


@pytest.fixture
def client(settings: Settings) -> TestClient:
    # Pushes carry a push-only key; pushes without one are covered in test_push_api.
    with TestClient(create_app(settings), headers=bearer(ingest_key(settings))) as test_client:
        yield test_client


def test_zabbix_problem_and_recovery_reach_silver_events(
    settings: Settings, client: TestClient, landing: LandingZone, lake: Lake
) -> None:
    today = datetime.now(UTC).date().isoformat()
    answers = [
        client.post("/v1/ingest/alerts/zabbix", json=_zabbix(s, today))
        for s in ("PROBLEM", "RESOLVED")
    ]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert all(a.json()["duplicate"] is False for a in answers)
    again = client.post("/v1/ingest/alerts/zabbix", json=_zabbix("PROBLEM", today))
    assert again.json() == {**answers[0].json(), "duplicate": True}

    batches = landing.batches("webhook", today)
    assert {b.connector for b in batches} == {"alert-webhook/zabbix"}
    assert len(batches) == 2
    rows = []
    for batch in batches:
        result = alert_webhook.parse(landing.read(batch), batch)
        assert result.rejects == [] and result.table.schema == alertmanager.BRONZE_SCHEMA
        rows += result.table.to_pylist()
    by_status = {r["status"]: r for r in rows}
    problem, resolved = by_status["firing"], by_status["resolved"]
    labels = dict(problem["labels"])
    assert labels["severity"] == "critical" and labels["entity_id"] == "vm-0012"
    assert labels["alertname"] == "High CPU utilization on vm-0012"
    assert labels["instance"] == "10.20.1.12" and labels["service"] == "tax"
    assert problem["fingerprint"] == resolved["fingerprint"] == "48213"
    assert problem["starts_at"] == datetime.fromisoformat(f"{today}T03:15:00+00:00")
    assert problem["ends_at"] is None
    assert resolved["ends_at"] == datetime.fromisoformat(f"{today}T03:45:10+00:00")
    assert problem["receiver"] == "zabbix"

    runner.materialize(
        settings,
        [today],
        [
            "landing/alertmanager",
            "bronze/alertmanager_alerts",
            "landing/mqtt",
            "bronze/mqtt_events",
            "landing/webhook",
            "bronze/webhook_alerts",
            "silver/events",
        ],
    )
    events = lake.read_table("silver", "events", dts=[today]).to_pylist()
    assert sorted(e["status"] for e in events) == ["firing", "resolved"]
    for event in events:
        assert event["entity_id"] == "vm-0012"
        assert event["severity"] == "critical"
        assert event["title"] == "High CPU utilization on vm-0012"
        assert event["fingerprint"] == "48213"
        assert event["source"] == "webhook"


def test_unknown_mapping_is_404_with_the_configured_names(client: TestClient) -> None:
    answer = client.post("/v1/ingest/alerts/nagios", json={"a": 1})
    assert answer.status_code == 404
    assert "zabbix" in answer.json()["configured"]
    assert "zabbix" in answer.json()["fix"]
    assert client.post("/v1/ingest/alerts/..%2Fetc", json={}).status_code == 404


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (
            {
                "event": {"id": "1", "name": "x", "status": "PROBLEM", "date": "2026.11.24"},
                "host": {"name": "h"},
            },
            "event.time",
        ),
        (
            {
                "event": {
                    "id": "1",
                    "name": "x",
                    "status": "PROBLEM",
                    "date": "24/11/2026",
                    "time": "03:15:00",
                }
            },
            "is not a time",
        ),
        (
            {
                "event": {
                    "id": "1",
                    "name": "x",
                    "status": "UNKNOWN",
                    "date": "2026.11.24",
                    "time": "03:15:00",
                }
            },
            "maps to none of firing, resolved",
        ),
        ([], "non-empty list"),
    ],
)
def test_unmappable_body_is_422_and_quarantined(
    client: TestClient, lake: Lake, landing: LandingZone, body: object, why: str
) -> None:
    answer = client.post("/v1/ingest/alerts/zabbix", json=body)
    assert answer.status_code == 422, answer.text
    assert why in answer.json()["error"] and answer.json()["fix"]
    today = datetime.now(UTC).date().isoformat()
    assert landing.batches("webhook", today) == []
    rows = quarantine.read(lake, [today]).to_pylist()
    assert [r["source"] for r in rows] == ["webhook"]
    assert why in rows[0]["reason"] and rows[0]["reason"].startswith("HTTP 422")


def test_not_json_is_422(client: TestClient) -> None:
    answer = client.post(
        "/v1/ingest/alerts/zabbix", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert "not JSON" in answer.json()["error"]
