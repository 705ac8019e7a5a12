"""Alert convergence on a simulated estate with injected faults, judged by its ground truth.

Four days of a 500-object estate (seed 7) go through real Dagster into silver; gold/incidents
is materialized for every day. A fault's alerts are the rule alerts (not the simulator's
background noise) that start on its cause or a CI it reached, from 5 minutes before it to 15
minutes after it ended, and whose fingerprint was not already firing in the 2 hours before
(a file system filling up all day on a CI the fault happens to reach is not the fault's).
Printed: compression (alert episodes per incident), how often a fault is split across
incidents, and root-cause top-1 / top-3 accuracy.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta

import pytest

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.settings import Settings
from opslake.simulate import SimulationConfig, simulate
from opslake.simulate.alerts import NOISE

DAYS = ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
SELECT = [
    "bronze/alertmanager_alerts",
    "bronze/itsm_tickets",
    "bronze/cmdb_cis",
    "bronze/cmdb_relations",
    "silver/events",
    "silver/tickets",
    "silver/assets",
    "silver/relations",
    "gold/incidents",
]
NOISE_NAMES = {n[0] for n in NOISE}


@pytest.fixture(scope="module")
def converged(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("lake")
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})
    lake = Lake.from_settings(settings)
    truth = simulate(
        SimulationConfig(
            seed=7, entities=500, days=len(DAYS), start=date.fromisoformat(DAYS[0]), step_seconds=60
        ),
        LandingZone.from_settings(settings, lake),
    )
    runner.materialize(settings, DAYS, SELECT)
    incidents = lake.read_table("gold", "incidents").to_pylist()
    alerts = lake.read_table("gold", "incident_alerts").to_pylist()
    stats = lake.read_table("gold", "incident_stats").to_pylist()
    return truth, incidents, alerts, stats


def _fault_alerts(fault: dict, alerts: list[dict]) -> list[dict]:
    cis = {fault["cause_entity"], *fault["affected"]}
    lo = datetime.fromisoformat(fault["start"]) - timedelta(minutes=5)
    hi = datetime.fromisoformat(fault["end"]) + timedelta(minutes=15)
    before = {a["fingerprint"] for a in alerts if lo - timedelta(hours=2) <= a["starts_at"] < lo}
    return [
        a
        for a in alerts
        if a["entity_id"] in cis
        and lo <= a["starts_at"] <= hi
        and a["alertname"] not in NOISE_NAMES
        and a["fingerprint"] not in before
    ]


def test_compression_split_rate_and_root_cause_accuracy(converged) -> None:
    truth, incidents, alerts, stats = converged
    # Each day's own incidents (one carried over midnight appears in both days' partitions).
    latest = {i["incident_id"]: i for i in sorted(incidents, key=lambda i: i["updated_at"])}
    members = {}
    for a in alerts:
        members[(a["incident_id"], a["alert_id"])] = a
    episodes = {a["alert_id"]: a for a in members.values()}
    ratio = len(episodes) / len(latest)
    split = top1 = top3 = judged = 0
    for fault in truth.faults:
        theirs = _fault_alerts(fault, list(episodes.values()))
        if not theirs:
            continue
        judged += 1
        homes = Counter(a["incident_id"] for a in theirs)
        split += len(homes) > 1
        main = latest[homes.most_common(1)[0][0]]
        ranked = [c["entity_id"] for c in json.loads(main["root_causes"])]
        top1 += ranked[:1] == [fault["cause_entity"]]
        top3 += fault["cause_entity"] in ranked[:3]
        print(
            f"{fault['fault_id']} {fault['fault_type']:26s} cause {fault['cause_entity']:28s} "
            f"alerts {len(theirs):3d} incidents {len(homes)} ranked {ranked[:3]}"
        )
    print(
        f"\nalert episodes {len(episodes)}, incidents {len(latest)}: compression "
        f"{ratio:.1f}:1 (per day {[round(s['compression_ratio'], 1) for s in stats]})"
    )
    print(
        f"faults judged {judged}: split {split} ({split / judged:.0%}), root cause top-1 "
        f"{top1}/{judged} ({top1 / judged:.0%}), top-3 {top3}/{judged} ({top3 / judged:.0%})"
    )
    assert judged >= 10
    assert ratio >= 10.0
    assert split / judged <= 0.05
    assert top3 / judged >= 0.8
    assert sum(s["alerts"] for s in stats) == len(episodes)


def test_every_incident_is_enriched_and_explained(converged) -> None:
    _, incidents, alerts, _ = converged
    topology = [i for i in incidents if i["correlation"] == "topology"]
    assert topology and all(i["root_cause"] for i in topology)
    for inc in topology:
        enrichment = json.loads(inc["enrichment"])
        cause = enrichment["cause_ci"]
        assert cause["entity_id"] == inc["root_cause"] and cause["in_cmdb"]
        assert cause["warranty_state"] in ("in_force", "expiring", "expired", "unknown")
        assert enrichment["runbooks"] and enrichment["owners"]
        evidence = json.loads(inc["root_causes"])[0]
        assert set(evidence) >= {"coverage", "precedence", "anomaly", "change", "score"}
    # Failed changes: the changed CI's alerts inside its window are muted (maintenance), and
    # the incident names the change among its recent changes.
    muted = [a for a in alerts if (a["muted_by"] or "").startswith("maintenance:")]
    assert muted
    tickets = {a["muted_by"].split(":")[1] for a in muted}
    named = {
        c["ticket_id"] for i in incidents for c in json.loads(i["enrichment"])["recent_changes"]
    }
    assert tickets & named
