"""Failed quality checks become alerts in silver events, and incidents carry a status (S6.2e)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest

from opslake.errors import ConfigError, NotFoundError
from opslake.ingest.parsers import alertmanager
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.quality import alerts, incidents
from opslake.quality.results import CheckResult, read_results, write_results
from opslake.settings import Settings

DAY = date(2026, 11, 24)
AT = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


def _result(
    check: str,
    *,
    passed: bool,
    severity: str = "error",
    kind: str = "not_null",
    table: str = "metric_points",
    observed: str = "0.93",
    threshold: str = "1.0",
) -> CheckResult:
    return CheckResult(
        layer="silver",
        table=table,
        check=check,
        kind=kind,
        severity=severity,
        passed=passed,
        observed=observed,
        threshold=threshold,
        rows=100,
        unexpected_rows=0 if passed else 7,
        source="prometheus",
        sample=[] if passed else [{"value": None, "metric": "cpu"}],
    )


def _parsed(landing: LandingZone, batch) -> list[dict]:
    result = alertmanager.parse(landing.read(batch), batch)
    assert result.rejects == []
    rows = result.table.to_pylist()
    for row in rows:
        row["labels"], row["annotations"] = dict(row["labels"]), dict(row["annotations"])
    return rows


def test_failed_checks_land_one_alertmanager_batch(lake: Lake, landing: LandingZone) -> None:
    results = [
        _result("not_null_value", passed=False),
        _result(
            "volume",
            passed=False,
            severity="warning",
            kind="volume",
            observed="3",
            threshold=">= 1000",
        ),
        _result("unique_key", passed=True, kind="unique"),
    ]
    batch = alerts.land_quality_alerts(lake, results, DAY, AT)
    assert batch is not None and not batch.duplicate
    assert (batch.source, batch.fmt, batch.dt) == ("quality", "json", DAY.isoformat())
    assert landing.batches("quality", DAY.isoformat()) == [batch]
    body = json.loads(landing.read(batch))
    assert body["version"] == "4" and body["status"] == "firing"

    rows = {r["labels"]["check"]: r for r in _parsed(landing, batch)}
    assert set(rows) == {"not_null_value", "volume"}  # the passing check sends nothing
    error, warning = rows["not_null_value"], rows["volume"]
    assert error["status"] == warning["status"] == "firing"
    assert error["labels"] == {
        "alertname": "DataQualityCheckFailed",
        "severity": "critical",
        "check": "not_null_value",
        "table": "silver.metric_points",
        "kind": "not_null",
        "day": DAY.isoformat(),
        "source": "prometheus",
    }
    assert "entity_id" not in error["labels"]
    assert warning["labels"]["severity"] == "warning" and warning["labels"]["kind"] == "volume"
    assert error["annotations"]["summary"] == (
        "数据质量检查失败 / quality check failed: silver.metric_points not_null_value "
        "(observed 0.93, threshold 1.0)"
    )
    assert "7 unexpected" in error["annotations"]["description"]
    assert error["starts_at"] == AT and error["ends_at"] is None
    assert error["fingerprint"] == alerts.fingerprint("silver.metric_points", "not_null_value", DAY)
    assert error["fingerprint"] != warning["fingerprint"]
    assert error["fingerprint"] != alerts.fingerprint(
        "silver.metric_points", "not_null_value", DAY + timedelta(days=1)
    )

    again = alerts.land_quality_alerts(lake, results, DAY, AT)
    assert again is not None and again.duplicate and again.batch_id == batch.batch_id


def test_passing_checks_land_nothing(lake: Lake, landing: LandingZone) -> None:
    assert alerts.land_quality_alerts(lake, [_result("a", passed=True)], DAY, AT) is None
    assert alerts.land_quality_alerts(lake, [], DAY, AT) is None
    assert landing.batches("quality", DAY.isoformat()) == []


def test_a_check_passing_again_is_sent_resolved(lake: Lake, landing: LandingZone) -> None:
    first = alerts.land_quality_alerts(
        lake, [_result("a", passed=False), _result("b", passed=True)], DAY, AT
    )
    later = AT + timedelta(hours=2)
    # Still failing: the same alert state (same startsAt), so silver keeps it once.
    still = alerts.land_quality_alerts(
        lake,
        [_result("a", passed=False, observed="0.90"), _result("b", passed=True)],
        DAY,
        later - timedelta(hours=1),
    )
    [repeat] = _parsed(landing, still)
    assert repeat["status"] == "firing" and repeat["starts_at"] == AT
    assert still.batch_id != first.batch_id

    resolved = alerts.land_quality_alerts(
        lake,
        [_result("a", passed=True), _result("b", passed=True)],
        DAY,
        later,
        previous_failed={"a"},
    )
    assert json.loads(landing.read(resolved))["status"] == "resolved"
    [row] = _parsed(landing, resolved)
    [fired] = _parsed(landing, first)
    assert row["status"] == "resolved" and row["labels"]["check"] == "a"
    assert row["fingerprint"] == fired["fingerprint"]
    assert row["starts_at"] == AT and row["ends_at"] == later
    assert "passed again" in row["annotations"]["summary"]
    # Resolved once: passing again later sends nothing more.
    assert (
        alerts.land_quality_alerts(
            lake, [_result("a", passed=True)], DAY, later + timedelta(hours=1)
        )
        is None
    )


def test_open_alert_is_resolved_without_being_told(lake: Lake, landing: LandingZone) -> None:
    """``previous_failed=None``: the alert landed as firing for the day is what failed."""
    alerts.land_quality_alerts(lake, [_result("a", passed=False)], DAY, AT)
    other_table = alerts.land_quality_alerts(
        lake, [_result("a", passed=True, table="events")], DAY, AT + timedelta(hours=1)
    )
    assert other_table is None  # silver.events/a never fired
    batch = alerts.land_quality_alerts(
        lake, [_result("a", passed=True)], DAY, AT + timedelta(hours=1)
    )
    [row] = _parsed(landing, batch)
    assert row["status"] == "resolved" and row["labels"]["table"] == "silver.metric_points"


def _land_cmdb(landing: LandingZone) -> None:
    """A one-CI snapshot, so silver/assets (upstream of events) has a partition to check."""
    ci = {
        "entity_id": "vm-0012",
        "kind": "cloud",
        "type": "vm",
        "name": "vm-0012.gov.local",
        "ip": "10.20.1.12",
        "lifecycle_state": "in_service",
        "updated_at": f"{DAY.isoformat()}T08:00:00Z",
    }
    body = {"exported_at": f"{DAY.isoformat()}T23:59:00Z", "cis": [ci], "relations": []}
    landing.write("cmdb", json.dumps(body).encode(), fmt="json", dt=DAY.isoformat(), received_at=AT)


def test_quality_alerts_reach_silver_events(
    settings: Settings, lake: Lake, landing: LandingZone
) -> None:
    day = DAY.isoformat()
    _land_cmdb(landing)
    alerts.land_quality_alerts(lake, [_result("not_null_value", passed=False)], DAY, AT)
    alerts.land_quality_alerts(
        lake,
        [_result("not_null_value", passed=True)],
        DAY,
        AT + timedelta(hours=3),
        previous_failed={"not_null_value"},
    )
    runner.materialize(settings, [day], ["+silver/events"])
    events = lake.read_table("silver", "events", dts=[day]).to_pylist()
    assert sorted(e["status"] for e in events) == ["firing", "resolved"]
    firing = next(e for e in events if e["status"] == "firing")
    resolved = next(e for e in events if e["status"] == "resolved")
    assert {e["source"] for e in events} == {"opslake-quality"}
    assert firing["severity"] == "critical" and firing["entity_id"] is None
    assert firing["title"] == (
        "数据质量检查失败 / quality check failed: silver.metric_points "
        "not_null_value (observed 0.93, threshold 1.0)"
    )
    assert firing["fingerprint"] == resolved["fingerprint"]
    assert firing["ends_at"] is None and resolved["ends_at"] == AT + timedelta(hours=3)
    assert dict(firing["labels"])["table"] == "silver.metric_points"


def _record(lake: Lake, results: list[CheckResult], day: date, at: datetime) -> None:
    write_results(lake, results, day, at, run_id=f"run-{at:%H%M}")


def test_incident_status_open_acknowledged_resolved(lake: Lake) -> None:
    _record(lake, [_result("a", passed=False), _result("b", passed=True)], DAY, AT)
    _record(
        lake,
        [_result("a", passed=False, observed="0.5", severity="warning")],
        DAY + timedelta(days=1),
        AT + timedelta(days=1),
    )
    [incident] = incidents.incidents(lake)
    ident = incidents.incident_id("silver.metric_points", "a")
    assert incident.id == ident and len(ident) == 12
    assert (incident.table, incident.check, incident.status, incident.status_by) == (
        "silver.metric_points",
        "a",
        "open",
        "auto",
    )
    assert (incident.first_failed, incident.last_failed) == (DAY, DAY + timedelta(days=1))
    assert incident.last_seen_failing == AT + timedelta(days=1)
    assert (incident.observed, incident.severity, incident.failures) == ("0.5", "warning", 2)
    assert incidents.history(lake, ident) == []
    assert [i.id for i in incidents.open_incidents(lake)] == [ident]

    t1, t2 = AT + timedelta(days=1, hours=1), AT + timedelta(days=1, hours=2)
    acked = incidents.set_status(lake, ident, "acknowledged", by="alice", note="looking", at=t1)
    assert (acked.status, acked.status_by, acked.note) == ("acknowledged", "alice", "looking")
    done = incidents.set_status(lake, ident, "Resolved", by="bob", note="fixed upstream", at=t2)
    assert (done.status, done.status_by, done.status_at) == ("resolved", "bob", t2)
    assert incidents.open_incidents(lake) == []
    log = incidents.history(lake, ident)
    assert [(e.status, e.by, e.note, e.at) for e in log] == [
        ("acknowledged", "alice", "looking", t1),
        ("resolved", "bob", "fixed upstream", t2),
    ]
    files = lake.list_files(lake.path("quality", "incidents", ident))
    assert len(files) == 2 and all(f.endswith(".json") for f in files)

    # Failing again after it was resolved re-opens it; the log keeps what people did.
    _record(lake, [_result("a", passed=False)], DAY + timedelta(days=2), AT + timedelta(days=2))
    reopened = incidents.get(lake, ident)
    assert (reopened.status, reopened.status_by) == ("open", "auto")
    assert len(incidents.history(lake, ident)) == 2


def test_incident_errors(lake: Lake) -> None:
    with pytest.raises(NotFoundError, match="no quality check has failed yet"):
        incidents.set_status(lake, "abc", "acknowledged", by="alice")
    _record(lake, [_result("a", passed=False)], DAY, AT)
    ident = incidents.incident_id("silver.metric_points", "a")
    with pytest.raises(NotFoundError, match=ident):
        incidents.set_status(lake, "0123456789ab", "acknowledged", by="alice")
    with pytest.raises(NotFoundError):
        incidents.history(lake, "0123456789ab")
    with pytest.raises(ConfigError, match="open, acknowledged, resolved"):
        incidents.set_status(lake, ident, "closed", by="alice")
    with pytest.raises(ConfigError):
        incidents.set_status(lake, ident, "acknowledged", by=" ")
    assert incidents.history(lake, ident) == []


def test_incident_resolves_itself_when_the_latest_result_passed(lake: Lake) -> None:
    _record(lake, [_result("a", passed=False), _result("b", passed=False)], DAY, AT)
    later = AT + timedelta(hours=5)
    # A re-run of the partition replaces its current results; the log still has the failure.
    _record(lake, [_result("a", passed=True), _result("b", passed=False)], DAY, later)
    assert len(read_results(lake)) == 2 and len(incidents.all_results(lake)) == 4
    by_check = {i.check: i for i in incidents.incidents(lake)}
    auto, failing = by_check["a"], by_check["b"]
    assert (auto.status, auto.status_by, auto.status_at) == ("resolved", "auto", later)
    assert auto.latest_passed and auto.last_seen_failing == AT
    assert incidents.history(lake, auto.id) == []
    assert (failing.status, failing.failures) == ("open", 2)
    assert [i.check for i in incidents.open_incidents(lake)] == ["b"]
    # Judged by the current results only, "a" never failed.
    assert {i.check for i in incidents.incidents(lake, read_results(lake))} == {"b"}

    # Someone re-opens it after that pass: their word stands until the next result.
    reopened = incidents.set_status(
        lake, auto.id, "open", by="carol", at=later + timedelta(minutes=1)
    )
    assert (reopened.status, reopened.status_by) == ("open", "carol")
    _record(lake, [_result("a", passed=True)], DAY + timedelta(days=1), later + timedelta(hours=1))
    assert incidents.get(lake, auto.id).status == "resolved"
    # An acknowledged incident whose check passes later is resolved too.
    incidents.set_status(
        lake, failing.id, "acknowledged", by="dave", at=later + timedelta(minutes=2)
    )
    _record(lake, [_result("b", passed=True)], DAY + timedelta(days=2), later + timedelta(hours=2))
    assert incidents.get(lake, failing.id).status == "resolved"
    assert incidents.open_incidents(lake) == []
