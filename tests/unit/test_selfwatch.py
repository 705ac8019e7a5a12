"""The platform's own alert rules (config/alerting/self.yaml), the histogram quantile the
opslake-self connector computes, and the request counting of GET /metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from opslake.alerting import platform, selfwatch
from opslake.alerting.selfwatch import Sample
from opslake.api.telemetry import Telemetry, TelemetryMiddleware
from opslake.errors import ConfigError
from opslake.ingest.connectors.self_watch import exposition, quantile
from opslake.ingest.parsers import prometheus
from opslake.lake.landing import LandingZone
from opslake.settings import DEFAULT_ALERTING_DIR

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
API = {"entity_id": "opslake-api"}


def test_the_shipped_rules_load() -> None:
    rules = {r.name: r for r in selfwatch.load(DEFAULT_ALERTING_DIR)}
    assert set(rules) == {"ApiErrorBurst", "ApiUnreachable", "SupersetDown", "CollectionLag"}
    assert (rules["ApiErrorBurst"].metric, rules["ApiErrorBurst"].above) == (
        "opslake_api_errors_5xx",
        4.0,
    )
    assert rules["CollectionLag"].severity == "major"


def test_every_problem_of_a_rules_file_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "self.yaml").write_text(
        "rules:\n"
        "  - {name: A, metric: m}\n"
        "  - {name: B, metric: m, above: 1, severity: loud}\n"
        "  - {name: C, metric: m, below: 1, colour: red}\n"
        "  - {metric: m, above: 1}\n"
    )
    with pytest.raises(ConfigError) as raised:
        selfwatch.load(tmp_path)
    text = str(raised.value)
    assert "rule 'A': give a bound" in text
    assert "severity 'loud'" in text
    assert "unknown field(s) ['colour']" in text
    assert "rules[3] needs a name and a metric" in text


def _states(zone: LandingZone) -> list[tuple[str, str]]:
    out = []
    for batch in sorted(
        zone.batches(platform.SOURCE, AT.date().isoformat()), key=lambda b: b.received
    ):
        for alert in json.loads(zone.read(batch))["alerts"]:
            out.append((alert["labels"]["alertname"], alert["status"]))
    return out


def test_a_burst_fires_once_and_resolves_once(landing: LandingZone) -> None:
    [burst] = [r for r in selfwatch.load(DEFAULT_ALERTING_DIR) if r.name == "ApiErrorBurst"]
    minutes = [0.0, 9.0, 12.0, 3.0, 2.0]  # 5xx answers per collection
    for k, errors in enumerate(minutes):
        samples = [
            Sample("opslake_api_errors_5xx", API, errors),
            Sample("opslake_api_requests", API, 100.0),  # another metric: not judged
        ]
        selfwatch.evaluate(landing, [burst], samples, AT + timedelta(minutes=k))
    assert _states(landing) == [("ApiErrorBurst", "firing"), ("ApiErrorBurst", "resolved")]
    firing = platform.open_since(landing, burst.fingerprint(Sample("x", API, 0)), AT)
    assert firing is None  # resolved: nothing open


def test_a_rule_matches_its_labels_and_keeps_one_alert_per_series(landing: LandingZone) -> None:
    [lag] = [r for r in selfwatch.load(DEFAULT_ALERTING_DIR) if r.name == "CollectionLag"]
    late = {"entity_id": "collector-a", "task": "a"}
    fine = {"entity_id": "collector-b", "task": "b"}
    for k in range(2):
        selfwatch.evaluate(
            landing,
            [lag],
            [
                Sample("opslake_collection_lag_seconds", late, 900.0),
                Sample("opslake_collection_lag_seconds", fine, 30.0),
            ],
            AT + timedelta(minutes=k),
        )
    [batch] = landing.batches(platform.SOURCE, AT.date().isoformat())
    [alert] = json.loads(landing.read(batch))["alerts"]
    assert alert["labels"] == {
        "alertname": "CollectionLag",
        "severity": "major",
        "entity_id": "collector-a",
        "task": "a",
        "job": "opslake-self",
    }
    assert "900 (> 600)" in alert["annotations"]["description"]


def test_quantile_interpolates_within_its_bucket() -> None:
    # 100 answers: 50 under 10 ms, 90 under 100 ms, all under 1 s.
    buckets = {0.01: 50.0, 0.1: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(buckets, 0.5) == pytest.approx(0.01)
    assert quantile(buckets, 0.95) == pytest.approx(0.1 + 0.9 * 0.5)
    assert quantile({0.1: 0.0, float("inf"): 0.0}, 0.95) is None
    # Beyond the last finite bound only that bound is known.
    assert quantile({0.1: 1.0, float("inf"): 10.0}, 0.95) == pytest.approx(0.1)


def test_the_figures_land_as_exposition_bronze_parses(landing: LandingZone) -> None:
    body = exposition([Sample("opslake_api_up", API, 1.0)], AT)
    batch = landing.write("prometheus", body, fmt="prom", received_at=AT)
    parsed = prometheus.parse(landing.read(batch), batch)
    assert not parsed.rejects
    [row] = parsed.table.to_pylist()
    assert row["label_set"] == '{entity_id="opslake-api",job="opslake-self"}'
    assert row["ts"] == AT and row["value"] == 1.0


def test_requests_are_counted_by_route_template_and_status_class() -> None:
    app = FastAPI()
    telemetry = Telemetry()
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)

    @app.get("/things/{thing_id}")
    def thing(thing_id: int) -> dict[str, int]:
        if thing_id == 0:
            raise HTTPException(status_code=503)
        return {"id": thing_id}

    with TestClient(app) as client:
        for path in ("/things/1", "/things/2", "/things/0", "/nowhere"):
            client.get(path)
    counts = {
        (s.labels["route"], s.labels["status_class"]): s.value
        for family in text_string_to_metric_families(telemetry.exposition().decode())
        for s in family.samples
        if s.name == "opslake_http_requests_total"
    }
    assert counts == {
        ("/things/{thing_id}", "2xx"): 2.0,
        ("/things/{thing_id}", "5xx"): 1.0,
        ("(unmatched)", "4xx"): 1.0,
    }
