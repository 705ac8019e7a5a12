"""MQTT message batches → bronze samples (prometheus schema) and alerts (alertmanager schema)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from opslake.ingest.parsers import alertmanager, mqtt, prometheus_text
from opslake.lake.landing import LandedBatch

RECEIVED = "2026-11-24T03:20:00+00:00"


def _batch() -> LandedBatch:
    return LandedBatch(
        source="mqtt",
        batch_id="b1",
        dt="2026-11-24",
        path="x",
        sha256="0",
        bytes=0,
        received_at=RECEIVED,
        fmt="json",
        connector="mqtt-subscriber/1.0",
    )


def _line(payload: object, topic: str = "opslake/t", raw: bool = False) -> str:
    text = payload if raw else json.dumps(payload)
    return json.dumps(
        {"topic": topic, "payload": text, "received_at": "2026-11-24T03:19:59.500000+00:00"}
    )


def _data(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


METRIC = {
    "metric": "pdu_power_watts",
    "entity_id": "pdu-0003",
    "value": 1520.5,
    "ts": "2026-11-24T03:15:00Z",
    "labels": {"phase": "L1"},
}
FIRING = {
    "event": "firing",
    "alertname": "UpsOnBattery",
    "severity": "Critical",
    "entity_id": "ups-0001",
    "summary": "UPS on battery",
    "starts_at": 1764040500000,
    "labels": {"room": "A"},
}


def test_metric_object_becomes_a_prometheus_sample() -> None:
    result = mqtt.parse_metrics(_data(_line(METRIC)), _batch())
    assert result.table.schema == prometheus_text.BRONZE_SCHEMA
    assert result.rejects == []
    [row] = result.table.to_pylist()
    assert row["metric"] == "pdu_power_watts"
    assert row["label_set"] == '{entity_id="pdu-0003",phase="L1"}'
    assert row["value"] == 1520.5
    assert row["ts"] == datetime(2026, 11, 24, 3, 15, tzinfo=UTC)
    assert row["batch_id"] == "b1"
    assert row["received_at"] == datetime.fromisoformat(RECEIVED)
    # the label set parses back (the metric conformer reads entity_id from it)
    assert prometheus_text.parse_label_set(row["label_set"])["entity_id"] == "pdu-0003"


def test_list_payload_epoch_ms_and_default_time() -> None:
    payload = [
        {"metric": "temp_celsius", "value": 21, "ts": 1764040500123},
        {"metric": "temp_celsius", "value": 22.5},
    ]
    result = mqtt.parse_metrics(_data(_line(payload)), _batch())
    assert result.rejects == []
    first, second = result.table.to_pylist()
    assert first["ts"] == datetime(2025, 11, 25, 3, 15, 0, 123000, tzinfo=UTC)
    assert first["label_set"] == "{}" and first["value"] == 21.0
    # no ts: the message's arrival time
    assert second["ts"] == datetime(2026, 11, 24, 3, 19, 59, 500000, tzinfo=UTC)


def test_event_object_becomes_an_alertmanager_shaped_alert() -> None:
    resolved = {**FIRING, "event": "resolved", "ends_at": "2026-11-24T03:30:00+08:00"}
    result = mqtt.parse_events(_data(_line(FIRING), _line(resolved)), _batch())
    assert result.table.schema == alertmanager.BRONZE_SCHEMA
    assert result.rejects == []
    firing, done = result.table.to_pylist()
    assert firing["status"] == "firing" and done["status"] == "resolved"
    assert dict(firing["labels"]) == {
        "alertname": "UpsOnBattery",
        "severity": "critical",
        "entity_id": "ups-0001",
        "room": "A",
    }
    assert dict(firing["annotations"]) == {"summary": "UPS on battery"}
    assert firing["receiver"] == firing["version"] == "mqtt"
    assert firing["group_key"] == "opslake/t"
    assert firing["starts_at"] == datetime(2025, 11, 25, 3, 15, tzinfo=UTC)
    assert firing["ends_at"] is None
    assert done["ends_at"] == datetime(2026, 11, 23, 19, 30, tzinfo=UTC)
    assert len(firing["fingerprint"]) == 16
    assert firing["fingerprint"] == done["fingerprint"]  # same labels: firing pairs resolved
    assert firing["line_no"] == 1 and done["line_no"] == 2


def test_each_parser_skips_the_other_kind() -> None:
    data = _data(_line([METRIC, FIRING]))
    metrics, events = mqtt.parse_metrics(data, _batch()), mqtt.parse_events(data, _batch())
    assert metrics.table.num_rows == 1 and metrics.rejects == []
    assert events.table.num_rows == 1 and events.rejects == []


def test_unreadable_messages_are_rejected_once_by_parse_metrics() -> None:
    data = _data(
        "not json at all",
        _line("{broken", raw=True),
        _line(42),
        _line({"hello": "world"}),
        json.dumps({"topic": "opslake/bin", "payload": None, "payload_base64": "/w=="}),
        _line([]),
    )
    metrics, events = mqtt.parse_metrics(data, _batch()), mqtt.parse_events(data, _batch())
    assert metrics.table.num_rows == 0 and events.table.num_rows == 0
    assert events.rejects == []
    reasons = {r.line_no: r.reason for r in metrics.rejects}
    assert reasons[1].startswith("line is not JSON")
    assert "payload is not JSON" in reasons[2]
    assert "must be a JSON object or a list" in reasons[3]
    assert "neither a metric" in reasons[4]
    assert "not UTF-8" in reasons[5]
    assert "empty list" in reasons[6]
    assert metrics.rejects[0].raw == "not json at all"


def test_wrong_types_are_rejected_with_the_reason() -> None:
    bad_metrics = [
        {"metric": "x", "value": "1.5"},
        {"metric": "x", "value": True},
        {"metric": "bad name", "value": 1},
        {"metric": "x", "value": 1, "ts": "yesterday"},
        {"metric": "x", "value": 1, "ts": 1764040500},
        {"metric": "x", "value": 1, "labels": {"a": 1}},
        {"metric": "x", "value": 1, "labels": {"bad-name": "v"}},
        {"metric": "x", "value": 1, "entity_id": ["a"]},
    ]
    result = mqtt.parse_metrics(_data(*(_line(m) for m in bad_metrics)), _batch())
    assert result.table.num_rows == 0
    reasons = [r.reason for r in result.rejects]
    assert len(reasons) == len(bad_metrics)
    assert "'value' must be a number, got '1.5'" in reasons[0]
    assert "'value' must be a number, got a boolean" in reasons[1]
    assert "not a metric name" in reasons[2]
    assert "not an ISO 8601 timestamp" in reasons[3]
    assert "seconds?" in reasons[4]
    assert "value of 'a' must be a string" in reasons[5]
    assert "not a label name" in reasons[6]
    assert "'entity_id' must be a string" in reasons[7]
    assert all(r.startswith("opslake/t: ") for r in reasons)


def test_malformed_events_are_rejected_by_parse_events_only() -> None:
    bad_events = [
        {**FIRING, "event": "pending"},
        {**FIRING, "severity": "urgent"},
        {key: v for key, v in FIRING.items() if key != "starts_at"},
        {"alertname": "NoStatus", "starts_at": "2026-11-24T03:00:00Z"},
    ]
    data = _data(_line(bad_events))
    metrics, events = mqtt.parse_metrics(data, _batch()), mqtt.parse_events(data, _batch())
    assert metrics.rejects == [] and metrics.table.num_rows == 0
    assert events.table.num_rows == 0
    reasons = [r.reason for r in events.rejects]
    assert "'event' is 'pending'" in reasons[0] and reasons[0].startswith("opslake/t[0]: ")
    assert "'severity' is 'urgent'" in reasons[1]
    assert "'starts_at' is missing" in reasons[2]
    assert "'event' is missing" in reasons[3]


def test_kind_is_decided_by_shape() -> None:
    assert mqtt.kind_of({"metric": "x"}) == "metric"
    assert mqtt.kind_of({"event": "firing"}) == "event"
    assert mqtt.kind_of({"alertname": "A"}) == "event"
    assert mqtt.kind_of({"value": 1}) is None
    assert mqtt.kind_of([1]) is None
