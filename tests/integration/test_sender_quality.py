"""One sender never poisons a day (issue 16): a bad sender's alerts warn, the others reach gold.

Two push keys post Alertmanager notifications through the real API: one good, one whose
alerts lack ``status``. Whether the endpoint lands those (the bronze parser quarantines
them) or refuses them with 422 (kept as ``push_rejects``), the day is then materialized
through Dagster: the bad key's parse-rate result only warns, names the key id, and the good
key's alerts reach silver events and gold incidents. A batch landed directly by a path that
validates nothing (``sender="file-drop-x"``) must do no more harm.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.quality import alerts
from opslake.quality.results import read_results
from opslake.security.identity import IdentityStore
from opslake.settings import Settings
from tests.keys import PASSWORD, bearer

AM = "/v1/ingest/alertmanager"
FILE_DROP = "file-drop-x"


def _key(settings: Settings, user: str) -> tuple[str, str]:
    """(key id, raw key) of a new push-only sender."""
    store = IdentityStore.sealed(settings)
    store.add_user(user, "ingest", PASSWORD)
    return store.create_key(user, quota_per_day=10_000)


def _payload(tag: str, n: int, *, status: bool = True) -> dict:
    starts = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    alert_list = [
        {
            "labels": {"alertname": "HostDown", "entity_id": f"vm-{i:04d}"},
            "annotations": {"summary": f"{tag} host {i} down"},
            "startsAt": starts,
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": f"{tag}-{i:04d}",
        }
        for i in range(n)
    ]
    if status:
        for alert in alert_list:
            alert["status"] = "firing"
    return {
        "version": "4",
        "status": "firing",
        "receiver": "opslake",
        "groupKey": tag,
        "groupLabels": {"alertname": "HostDown"},
        "alerts": alert_list,
    }


def test_a_bad_sender_warns_and_the_good_senders_alerts_reach_gold(
    settings: Settings, lake: Lake, landing: LandingZone
) -> None:
    good_id, good_key = _key(settings, "am-good")
    bad_id, bad_key = _key(settings, "am-bad")
    with TestClient(create_app(settings)) as client:
        good = [
            client.post(AM, json=_payload(f"good{p}", 2), headers=bearer(good_key))
            for p in range(3)
        ]
        # Six bodies: refused, they are six lines (one over the five forgiven lines).
        bad = [
            client.post(AM, json=_payload(f"bad{p}", 2, status=False), headers=bearer(bad_key))
            for p in range(6)
        ]
    assert [a.status_code for a in good] == [200] * 3, [a.text for a in good]
    assert {a.status_code for a in bad} <= {200, 422}, [a.text for a in bad]
    day = datetime.now(UTC).date().isoformat()
    assert {b.sender for b in landing.batches("alertmanager", day)} <= {good_id, bad_id}
    # A path that validates nothing: eight alerts the bronze parser will quarantine.
    landing.write(
        "alertmanager",
        json.dumps(_payload("drop", 8, status=False)).encode(),
        fmt="json",
        dt=day,
        connector="file-drop/1",
        sender=FILE_DROP,
    )

    # Raises QualityBlocked if any blocking check failed with ERROR severity.
    runner.materialize(
        settings,
        [day],
        ["landing/alertmanager", "bronze/alertmanager_alerts", "silver/events", "gold/incidents"],
    )

    results = [
        r
        for r in read_results(lake, [day]).to_pylist()
        if (r["table"], r["check"]) == ("events", "lines_parse")
    ]
    failing = {r["source"]: r for r in results if not r["passed"]}
    assert set(failing) == {f"alertmanager/{bad_id}", f"alertmanager/{FILE_DROP}"}
    assert {r["severity"] for r in failing.values()} == {"warning"}
    assert any(r["passed"] and r["source"] == f"alertmanager/{good_id}" for r in results)

    events = lake.read_table("silver", "events", dts=[day]).to_pylist()
    fingerprints = {e["fingerprint"] for e in events if e["source"] == "alertmanager"}
    wanted = {f"good{p}-{i:04d}" for p in range(3) for i in range(2)}
    assert fingerprints == wanted
    gold = lake.read_table("gold", "incident_alerts", dts=[day]).column("fingerprint")
    assert wanted <= set(gold.to_pylist())

    [quality] = [
        e
        for e in events
        if e["source"] == alerts.EVENT_SOURCE and dict(e["labels"])["check"] == "lines_parse"
    ]
    assert quality["severity"] == "warning"
    assert bad_id in quality["description"] and FILE_DROP in quality["description"]
    assert good_id not in quality["description"]
    assert f"alertmanager/{bad_id}" in dict(quality["labels"])["source"]
