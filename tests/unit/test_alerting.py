"""Alert convergence rules (each with the case that must not be muted), grouping and root cause."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from opslake.alerting import rootcause
from opslake.alerting.convergence import Alert, Graph, MaintenanceWindow, group, mute
from opslake.alerting.rules import ConvergenceRules
from opslake.errors import ConfigError
from opslake.ml.features import Topology

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
REPO_RULES = ConvergenceRules.load(Path(__file__).resolve().parents[2] / "config" / "alerting")

#: who needs whom: ups-1 powers both PDUs (it is upstream of everything), pdu-1 powers host-1
#: and host-3, host-1 runs vm-1 and vm-2, vm-1 runs svc-a which app-a depends on;
#: host-2 (on pdu-2) runs vm-3.
NEEDS = {
    "pdu-1": ["ups-1"],
    "pdu-2": ["ups-1"],
    "host-1": ["pdu-1"],
    "host-3": ["pdu-1"],
    "host-2": ["pdu-2"],
    "vm-1": ["host-1"],
    "vm-2": ["host-1"],
    "vm-3": ["host-2"],
    "svc-a": ["vm-1"],
    "app-a": ["svc-a"],
}
KINDS = {
    "ups-1": "facility",
    "pdu-1": "facility",
    "pdu-2": "facility",
    "host-1": "cloud",
    "host-2": "cloud",
    "host-3": "cloud",
    "vm-1": "cloud",
    "vm-2": "cloud",
    "vm-3": "cloud",
    "svc-a": "application",
    "app-a": "application",
}


def _graph(max_shared_fraction: float = 0.2) -> Graph:
    needed_by: dict[str, list[str]] = {}
    for src, dsts in NEEDS.items():
        for d in dsts:
            needed_by.setdefault(d, []).append(src)
    attrs = pd.DataFrame(
        {
            "kind": KINDS,
            "type": {k: k.split("-")[0] for k in KINDS},
            "business": None,
            "department": None,
        }
    )
    topology = Topology(
        attrs, {k: tuple(v) for k, v in NEEDS.items()}, {k: tuple(v) for k, v in needed_by.items()}
    )
    hosts = {"vm-1": ("host-1",), "vm-2": ("host-1",), "vm-3": ("host-2",), "svc-a": ("vm-1",)}
    return Graph(topology, 6, hosts, max_shared_fraction)


_n = iter(range(10_000))


def _alert(
    entity: str,
    minute: float,
    name: str = "NodeCpuHigh",
    *,
    lasts: float | None = 10,
    severity: str = "major",
    fingerprint: str | None = None,
) -> Alert:
    start = T0 + timedelta(minutes=minute)
    return Alert(
        f"a{next(_n)}",
        fingerprint or f"{name}/{entity}",
        "alertmanager",
        name,
        severity,
        name,
        entity,
        {"alertname": name, "entity_id": entity},
        start,
        None if lasts is None else start + timedelta(minutes=lasts),
    )


def _mute(alerts: list[Alert], windows=(), as_of: datetime | None = None) -> dict[str, str | None]:
    alerts.sort(key=lambda a: (a.starts_at, a.alert_id))
    mute(alerts, REPO_RULES, _graph(), list(windows), as_of or T0 + timedelta(days=1))
    return {a.alert_id: a.muted_by for a in alerts}


def test_inhibition_mutes_what_depends_on_a_down_host_and_nothing_else() -> None:
    down = _alert("host-1", 0, "HostDown", lasts=30, severity="critical")
    on_it = _alert("vm-1", 2)
    two_hops = _alert("svc-a", 3, "HttpErrorRatioHigh")
    other_host = _alert("vm-3", 2)  # must not: runs on another host
    after = _alert("vm-2", 45)  # must not: the host is back by then
    muted = _mute([down, on_it, two_hops, other_host, after])
    assert muted[on_it.alert_id] == f"inhibited:host-down:{down.alert_id}"
    assert muted[two_hops.alert_id].startswith("inhibited:host-down")
    assert muted[other_host.alert_id] is None and muted[after.alert_id] is None
    assert muted[down.alert_id] is None  # the source itself is never muted


def test_maintenance_mutes_alerts_inside_a_change_window_but_not_one_that_outlasts_it() -> None:
    window = MaintenanceWindow("CHG-1", "host-1", T0, T0 + timedelta(hours=1))
    inside = _alert("vm-1", 10, lasts=20)  # runs on the changed host, over in time
    on_ci = _alert("host-1", 5, lasts=5)
    outlasts = _alert("vm-2", 40, lasts=60)  # must not: still firing after the window
    elsewhere = _alert("vm-3", 10, lasts=5)  # must not: another host
    before = _alert("vm-1", -30, "HttpLatencyHigh", lasts=5)  # must not: before the window
    muted = _mute([inside, on_it := on_ci, outlasts, elsewhere, before], [window])
    assert muted[inside.alert_id] == "maintenance:CHG-1" == muted[on_it.alert_id]
    assert muted[outlasts.alert_id] is None and muted[elsewhere.alert_id] is None
    assert muted[before.alert_id] is None


def test_maintenance_mutes_a_firing_alert_only_while_the_window_is_open() -> None:
    window = MaintenanceWindow("CHG-2", "host-1", T0, T0 + timedelta(hours=1))
    during = _mute(
        [firing := _alert("vm-1", 10, lasts=None)], [window], as_of=T0 + timedelta(minutes=30)
    )
    assert during[firing.alert_id] == "maintenance:CHG-2"
    after = _mute(
        [again := _alert("vm-1", 10, lasts=None)], [window], as_of=T0 + timedelta(minutes=61)
    )
    assert after[again.alert_id] is None


def test_flapping_mutes_the_fourth_start_within_an_hour_only() -> None:
    fast = [_alert("vm-1", m, lasts=3, fingerprint="fp-fast") for m in (0, 12, 24, 36, 48)]
    three = [_alert("vm-2", m, lasts=3, fingerprint="fp-three") for m in (0, 20, 40)]
    slow = [_alert("vm-3", m, lasts=3, fingerprint="fp-slow") for m in (0, 70, 140, 210)]
    muted = _mute([*fast, *three, *slow])
    assert [muted[a.alert_id] is not None for a in fast] == [False, False, False, True, True]
    assert muted[fast[3].alert_id].startswith("flapping:4 starts")
    assert not any(muted[a.alert_id] for a in three + slow)  # must not: 3 / hour, 4 / 4 h


def test_a_fault_spreading_through_the_topology_is_one_incident_and_a_concurrent_one_is_not() -> (
    None
):
    fault = [
        _alert("host-1", 0),
        _alert("vm-1", 2),
        _alert("vm-2", 3),
        _alert("svc-a", 5, "HttpErrorRatioHigh"),
        _alert("app-a", 7, "HttpErrorRatioHigh"),
    ]
    # Same UPS, same minutes, another PDU: a UPS under everything says nothing about both.
    elsewhere = [_alert("host-2", 1), _alert("vm-3", 4)]
    alerts = sorted(fault + elsewhere, key=lambda a: (a.starts_at, a.alert_id))
    incidents = group(alerts, REPO_RULES, _graph())
    members = [{a.alert_id for a in i.alerts} for i in incidents]
    assert {a.alert_id for a in fault} in members
    assert {a.alert_id for a in elsewhere} in members and len(incidents) == 2
    # Without the limit the UPS joins them: the rule is what keeps them apart.
    assert len(group(alerts, REPO_RULES, _graph(max_shared_fraction=1.0))) == 1


def test_same_fingerprint_refiring_joins_its_incident_with_a_count() -> None:
    first = _alert("vm-3", 0, lasts=10)
    again = _alert("vm-3", 40, lasts=10)  # 30 min after resolving: same incident
    much_later = _alert("vm-3", 400, lasts=10)  # beyond the 2 h dedup window: a new one
    alerts = [first, again, much_later]
    mute(alerts, REPO_RULES, _graph(), [], T0 + timedelta(days=1))
    incidents = group(alerts, REPO_RULES, _graph())
    assert [len(i.alerts) for i in incidents] == [2, 1]
    assert [a.occurrence for a in incidents[0].alerts] == [1, 2]
    assert incidents[0].fingerprints == 1


def test_correlation_rule_groups_background_alerts_by_name_across_the_estate() -> None:
    certs = [
        _alert("vm-1", 0, "CertificateExpiringSoon", severity="info"),
        _alert("vm-3", 90, "CertificateExpiringSoon", severity="info"),
        _alert("host-3", 500, "CertificateExpiringSoon", severity="info"),
    ]  # > 6 h later
    incidents = group(sorted(certs, key=lambda a: a.starts_at), REPO_RULES, _graph())
    assert [len(i.alerts) for i in incidents] == [2, 1]
    assert {i.correlation for i in incidents} == {"rule:background-checks"}


def test_root_cause_is_the_upstream_ci_that_alerted_first() -> None:
    alerts = [
        _alert("host-1", 0),
        _alert("vm-1", 2),
        _alert("vm-2", 2),
        _alert("svc-a", 4, "HttpErrorRatioHigh"),
        _alert("app-a", 5, "HttpErrorRatioHigh"),
    ]
    [incident] = group(alerts, REPO_RULES, _graph())
    ranking = rootcause.rank(incident, _graph())
    assert ranking[0].entity_id == "host-1" and ranking[0].coverage == 1.0
    assert ranking[0].precedence == 1.0 and ranking[0].first_alert == "NodeCpuHigh"
    assert [c.entity_id for c in ranking[:3]] == ["host-1", "pdu-1", "ups-1"]


def test_root_cause_names_a_silent_upstream_ci_and_weighs_changes_and_anomalies() -> None:
    # Both hosts on pdu-1 alert at once; the PDU itself raised nothing (in this small estate
    # 6 of 11 CIs need pdu-1, so the share limit is raised for it to relate them).
    graph = _graph(max_shared_fraction=0.6)
    [incident] = group([_alert("host-1", 0), _alert("host-3", 0)], REPO_RULES, graph)
    assert rootcause.rank(incident, graph)[0].entity_id == "pdu-1"
    # The app and its service alert together: a change on the service an hour before wins...
    alerts = [_alert("app-a", 0, "HttpErrorRatioHigh"), _alert("svc-a", 0, "HttpErrorRatioHigh")]
    [incident] = group(alerts, REPO_RULES, _graph())
    change = MaintenanceWindow("CHG-9", "svc-a", T0 - timedelta(hours=1), T0)
    top = rootcause.rank(incident, _graph(), changes=[change])[0]
    assert (top.entity_id, top.change_ticket) == ("svc-a", "CHG-9")
    # ...and, without it, the VM under the service that was anomalous just before does.
    peak = rootcause.AnomalyPeak("vm-1", T0 - timedelta(minutes=5), 0.99)
    ranked = rootcause.rank(incident, _graph(), anomalies=[peak])
    assert ranked[0].entity_id == "svc-a" and ranked[1].entity_id == "vm-1"
    assert ranked[1].anomaly == 0.99


def test_rule_files_report_every_problem_with_the_fix() -> None:
    with pytest.raises(ConfigError) as err:
        ConvergenceRules.parse(
            {
                "grouping": {"window": "15 minutes"},
                "inhibit": [
                    {"name": "x", "source": {"alertname": "HostDown"}},
                    {"name": "y", "source": {"alertname": "HostDown"}, "scope": "sideways"},
                    {"source": {}},
                ],
                "correlation": [{"name": "x", "match": {"alertname": "A"}}],
                "silence": {},
            },
            "rules.yaml",
        )
    text = str(err.value)
    assert "'15 minutes' is not a duration; write e.g. 30s, 15m" in text
    assert "scope 'sideways' is not one of" in text
    assert "inhibit[2] needs a name" in text
    assert "rule names ['x'] are used twice" in text
    assert "unknown section(s) ['silence']" in text


def test_an_incident_that_fires_again_after_resolving_counts_as_reopened() -> None:
    first, overlap = _alert("vm-3", 0, lasts=10), _alert("host-2", 5, lasts=20)
    again = _alert("vm-3", 40, lasts=None)  # after both resolved: reopened once
    [incident] = group([first, overlap, again], REPO_RULES, _graph())
    assert incident.reopened == 1 and incident.ended_at is None
    [calm] = group(
        [_alert("vm-3", 0, lasts=10), _alert("host-2", 5, lasts=20)], REPO_RULES, _graph()
    )
    assert calm.reopened == 0 and calm.ended_at == T0 + timedelta(minutes=25)
