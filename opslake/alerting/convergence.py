"""Alert convergence: alert episodes, what mutes them, and the incidents they form (S5.5c).

Silver ``events`` keeps one row per alert state; an *alert* here is one firing episode of one
fingerprint (its firing row and, once known, its resolution). Convergence then:

1. **mutes** (keeps, marks, does not notify) an episode that is
   - *flapping*: the ``flap_count``-th or later start of its fingerprint within ``flap_window``;
   - in *maintenance*: it starts inside an announced change window of its CI (or of the CI it
     runs on) and has ended by the window's end (one still firing after the window is not muted);
   - *inhibited*: an inhibit rule's source alert fires on a CI it depends on when it starts;
2. **groups** episodes into incidents, in start order:
   - a correlation rule (files) puts matching alerts with equal ``group_by`` labels within its
     window together;
   - topology and time: an alert joins every incident that has an alert started within
     ``window`` on a related CI (see :meth:`Graph.related`: ``max_hops`` along runs-on,
     depends-on, powered-by), merging them;
   - otherwise the same fingerprint firing again within ``dedup_window`` of its last
     resolution joins its earlier incident (deduplication with counts); else it opens one.

Muted alerts still join incidents (they are evidence for root cause), and an incident with
only muted alerts is muted itself. Everything is deterministic: ids come from fingerprints and
start times, so re-running a day gives the same incidents.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
import pyarrow as pa

from opslake.alerting.rules import SEVERITIES, ConvergenceRules
from opslake.ml.features import Topology

#: Event sources that are not operational alerts (data-quality failures have their own
#: incidents in opslake.quality.incidents).
EXCLUDED_SOURCES = frozenset({"opslake-quality"})


@dataclass
class Alert:
    """One firing episode of one fingerprint."""

    alert_id: str
    fingerprint: str
    source: str
    alertname: str
    severity: str
    title: str
    entity_id: str | None
    labels: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    muted_by: str | None = None
    occurrence: int = 1

    def fields(self, kinds: Mapping[str, str]) -> dict[str, str | None]:
        """What matchers look at: labels plus the alert's own fields and its CI's kind."""
        return {
            **self.labels,
            "source": self.source,
            "severity": self.severity,
            "alertname": self.alertname,
            "entity_id": self.entity_id,
            "kind": kinds.get(self.entity_id or ""),
        }

    def firing_at(self, t: datetime) -> bool:
        """Started by ``t`` and not yet resolved then."""
        return self.starts_at <= t and (self.ends_at is None or self.ends_at > t)


@dataclass
class Incident:
    """Alerts that belong together, with how they were put together."""

    incident_id: str
    correlation: str
    alerts: list[Alert] = field(default_factory=list)

    @property
    def started_at(self) -> datetime:
        return min(a.starts_at for a in self.alerts)

    @property
    def last_start(self) -> datetime:
        return max(a.starts_at for a in self.alerts)

    @property
    def ended_at(self) -> datetime | None:
        """When the last alert resolved; None while any still fires."""
        ends = [a.ends_at for a in self.alerts]
        return None if any(e is None for e in ends) else max(ends)  # type: ignore[type-var]

    @property
    def reopened(self) -> int:
        """How many times a new alert fired after every earlier one had resolved."""
        count, end = 0, None
        for a in sorted(self.alerts, key=lambda b: b.starts_at):
            if end is not None and end is not _OPEN and a.starts_at > end:
                count += 1
            if end is _OPEN or a.ends_at is None:
                end = _OPEN
            else:
                end = a.ends_at if end is None else max(end, a.ends_at)
        return count

    @property
    def muted(self) -> bool:
        return all(a.muted_by for a in self.alerts)

    @property
    def severity(self) -> str:
        pool = [a for a in self.alerts if not a.muted_by] or self.alerts
        return max((a.severity for a in pool), key=severity_rank)

    @property
    def entities(self) -> list[str]:
        return sorted({a.entity_id for a in self.alerts if a.entity_id})

    @property
    def fingerprints(self) -> int:
        return len({a.fingerprint for a in self.alerts})


#: An interval end that has not come yet (an alert still firing).
_OPEN = object()


def severity_rank(severity: str) -> int:
    """Order of severities (unknown ones rank lowest)."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def _digest(*parts: object) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16]


def alert_episodes(events: pa.Table) -> list[Alert]:
    """Firing episodes from silver events rows (any days), oldest first.

    A resolution without its firing row (the alert fired before the rows read) still makes
    an episode: it is what is known of it.
    """
    by_key: dict[tuple[str, datetime], Alert] = {}
    for row in sorted(
        events.to_pylist(),
        key=lambda r: (r["starts_at"], r["fingerprint"], r["status"] != "firing"),
    ):
        if row["source"] in EXCLUDED_SOURCES or row["starts_at"] is None:
            continue
        key = (row["fingerprint"], row["starts_at"])
        alert = by_key.get(key)
        if alert is None:
            labels = dict(row["labels"] or [])
            alert = by_key[key] = Alert(
                _digest(row["fingerprint"], row["starts_at"].isoformat()),
                row["fingerprint"],
                row["source"],
                labels.get("alertname") or row["title"] or "",
                (row["severity"] or "warning").lower(),
                row["title"] or "",
                row["entity_id"],
                labels,
                row["starts_at"],
                None,
            )
        if row["status"] == "resolved":
            alert.ends_at = row["ends_at"] or row["received_at"]
    return sorted(by_key.values(), key=lambda a: (a.starts_at, a.alert_id))


@dataclass(frozen=True)
class MaintenanceWindow:
    """An announced change window on one CI."""

    ticket_id: str
    entity_id: str
    start: datetime
    end: datetime


def maintenance_windows(tickets: pa.Table) -> list[MaintenanceWindow]:
    """Change tickets with a window (latest row per ticket)."""
    latest: dict[str, dict] = {}
    for row in tickets.to_pylist():
        if (
            row["type"] == "change"
            and row["change_window_start"]
            and row["change_window_end"]
            and row["entity_id"]
        ):
            latest[row["ticket_id"]] = row
    return [
        MaintenanceWindow(t, r["entity_id"], r["change_window_start"], r["change_window_end"])
        for t, r in sorted(latest.items())
    ]


class Graph:
    """The topology as convergence needs it: hop-limited upstream sets, hosts and CI kinds."""

    def __init__(
        self,
        topology: Topology,
        max_hops: int,
        hosts: Mapping[str, tuple[str, ...]] | None = None,
        max_shared_fraction: float = 1.0,
    ) -> None:
        self.topology, self.max_hops = topology, max_hops
        self.hosts = hosts or {}
        self.max_shared_fraction = max_shared_fraction
        self._up: dict[str, dict[str, int]] = {}
        self._fanout: dict[str, int] = {}
        self.kinds: dict[str, str] = (
            topology.attrs["kind"].to_dict() if "kind" in topology.attrs else {}
        )

    @classmethod
    def at(
        cls,
        assets: pd.DataFrame,
        relations: pd.DataFrame,
        when: datetime,
        max_hops: int,
        max_shared_fraction: float = 1.0,
    ) -> Graph:
        """The CMDB's topology valid at ``when`` (silver assets and relations as DataFrames)."""
        topology = Topology.at(assets, relations, when)
        hosts: dict[str, list[str]] = {}
        runs_on = relations[relations["relation"] == "runs_on"]
        for src, dst in sorted(
            set(zip(runs_on["src_entity_id"], runs_on["dst_entity_id"], strict=True))
        ):
            if dst in topology.needs.get(src, ()):  # valid at ``when``
                hosts.setdefault(src, []).append(dst)
        return cls(topology, max_hops, {k: tuple(v) for k, v in hosts.items()}, max_shared_fraction)

    def upstream(self, entity_id: str) -> dict[str, int]:
        """``entity_id`` and every CI it needs within ``max_hops``, with the hop count."""
        if entity_id not in self._up:
            hops = {entity_id: 0}
            queue = deque([entity_id])
            while queue:
                cur = queue.popleft()
                if hops[cur] >= self.max_hops:
                    continue
                for nxt in self.topology.needs.get(cur, ()):
                    if nxt not in hops:
                        hops[nxt] = hops[cur] + 1
                        queue.append(nxt)
            self._up[entity_id] = hops
        return self._up[entity_id]

    def related(self, a: str | None, b: str | None) -> bool:
        """Same CI, one upstream of the other, or both below a CI that few others need.

        A CI that a large share of the estate needs (a UPS, a core switch:
        ``max_shared_fraction``) says nothing about two alerts below it together; two
        concurrent faults under one UPS stay apart.
        """
        if not a or not b:
            return False
        up_a, up_b = self.upstream(a), self.upstream(b)
        if a == b or a in up_b or b in up_a:
            return True
        return any(self._specific(c) for c in up_a.keys() & up_b.keys())

    def _specific(self, entity_id: str) -> bool:
        if entity_id not in self._fanout:
            self._fanout[entity_id] = len(self.topology.downstream(entity_id))
        return self._fanout[entity_id] <= self.max_shared_fraction * max(len(self.kinds), 1)

    def depends_on(self, child: str | None, parent: str | None) -> bool:
        """Whether ``child`` needs ``parent`` within ``max_hops`` (directly or not)."""
        return bool(child and parent) and child != parent and parent in self.upstream(child)  # type: ignore[arg-type]


def mute(
    alerts: list[Alert],
    rules: ConvergenceRules,
    graph: Graph,
    windows: list[MaintenanceWindow],
    as_of: datetime,
) -> None:
    """Mark flapping, maintenance and inhibited alerts as known at ``as_of`` (first reason wins).

    An alert still firing at ``as_of`` inside a change window is muted until the window
    closes; evaluated after that, it is not.
    """
    starts: dict[str, list[datetime]] = {}
    by_entity: dict[str, list[MaintenanceWindow]] = {}
    for w in windows:
        by_entity.setdefault(w.entity_id, []).append(w)
    for a in alerts:
        seen = starts.setdefault(a.fingerprint, [])
        seen.append(a.starts_at)
        a.occurrence = len(seen)
        recent = [s for s in seen if a.starts_at - s < timedelta(seconds=rules.flap_window_s)]
        if len(recent) >= rules.flap_count:
            a.muted_by = f"flapping:{len(recent)} starts in {rules.flap_window_s // 60} min"
            continue
        if a.entity_id:
            hosts = [
                a.entity_id,
                *(graph.hosts.get(a.entity_id, ()) if rules.maintenance_hosted else ()),
            ]
            for w in (w for h in hosts for w in by_entity.get(h, ())):
                end = a.ends_at or as_of
                if w.start <= a.starts_at <= w.end and end <= w.end:
                    a.muted_by = f"maintenance:{w.ticket_id}"
                    break
            if a.muted_by:
                continue
        for rule in rules.inhibit:
            if not rule.target.matches(a.fields(graph.kinds)):
                continue
            for s in alerts:
                if s is a or s.starts_at > a.starts_at:
                    continue
                if (
                    s.firing_at(a.starts_at)
                    and rule.source.matches(s.fields(graph.kinds))
                    and _in_scope(rule.scope, graph, a.entity_id, s.entity_id)
                ):
                    a.muted_by = f"inhibited:{rule.name}:{s.alert_id}"
                    break
            if a.muted_by:
                break


def _in_scope(scope: str, graph: Graph, target: str | None, source: str | None) -> bool:
    if scope == "same_entity":
        return bool(target) and target == source
    return graph.depends_on(target, source)


def group(alerts: list[Alert], rules: ConvergenceRules, graph: Graph) -> list[Incident]:
    """Incidents from alerts in start order (see the module docstring)."""
    incidents: dict[str, Incident] = {}
    of_alert: dict[str, str] = {}
    rule_open: dict[tuple, str] = {}
    last_of_fp: dict[str, Alert] = {}
    window = timedelta(seconds=rules.window_s)
    starts = [a.starts_at for a in alerts]
    for i, a in enumerate(alerts):
        fields = a.fields(graph.kinds)
        rule = next((r for r in rules.correlation if r.match.matches(fields)), None)
        target: str | None = None
        if rule is not None:
            key = (rule.name, *(fields.get(g) or "" for g in rule.group_by))
            inc_id = rule_open.get(key)
            if inc_id and a.starts_at - incidents[inc_id].last_start <= timedelta(
                seconds=rule.window_s
            ):
                target = inc_id
            else:
                target = _open(incidents, a, f"rule:{rule.name}")
                rule_open[key] = target
        else:
            hits = sorted(
                {
                    of_alert[b.alert_id]
                    for b in _recent(alerts, starts, i, window)
                    if incidents[of_alert[b.alert_id]].correlation == "topology"
                    and graph.related(a.entity_id, b.entity_id)
                },
                key=lambda n: incidents[n].started_at,
            )
            prev = last_of_fp.get(a.fingerprint)
            if hits:
                target = hits[0]
                for other in hits[1:]:
                    for b in incidents.pop(other).alerts:
                        incidents[target].alerts.append(b)
                        of_alert[b.alert_id] = target
            elif prev is not None and a.starts_at - (prev.ends_at or a.starts_at) <= timedelta(
                seconds=rules.dedup_window_s
            ):
                target = of_alert[prev.alert_id]
            else:
                target = _open(incidents, a, "topology")
        if a.alert_id not in {b.alert_id for b in incidents[target].alerts}:
            incidents[target].alerts.append(a)
        of_alert[a.alert_id] = target
        last_of_fp[a.fingerprint] = a
    for inc in incidents.values():
        inc.alerts.sort(key=lambda b: (b.starts_at, b.alert_id))
    return sorted(incidents.values(), key=lambda i: (i.started_at, i.incident_id))


def _open(incidents: dict[str, Incident], first: Alert, correlation: str) -> str:
    inc_id = "INC-" + _digest(first.alert_id, correlation)[:12]
    incidents[inc_id] = Incident(inc_id, correlation, [first])
    return inc_id


def _recent(alerts: list[Alert], starts: list[datetime], i: int, window: timedelta) -> list[Alert]:
    """Alerts before the ``i``-th (already grouped) that started within ``window`` of it."""
    return alerts[bisect.bisect_left(starts, starts[i] - window) : i]
