"""Faults with a known root cause that spread along the topology to what depends on it.

A fault starts at a cause CI (a host, PDU, storage pool, database, switch, or an application
or service changed by a failed change) and reaches the CIs that run on, depend on or are
powered by it, hop by hop, each hop a little later and a little weaker. Every reached CI
gets an :class:`Impact` (a window and a severity) that metrics, logs, probes and tickets use.

With the realism knobs on, a fault may also reach one or two CIs that no relation leads to
(``off_topology``: a shared resource the CMDB does not model), and unrelated short
anomalies (``noise_overlap``) start around a fault's start on its neighbours or anywhere;
they are no fault's impacts, so their alerts and anomalies are noise to root cause.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from opslake.simulate.cmdb import CmdbHistory
from opslake.simulate.config import DAY_S, SimulationConfig, iso, rng_for
from opslake.simulate.estate import PROPAGATING, Estate, dependants

#: cause type → (fault type, Chinese description), and how often it is the cause.
FAULT_TYPES = {
    "host": ("host_cpu_saturation", "主机CPU饱和"),
    "db": ("db_connection_exhaustion", "数据库连接耗尽"),
    "storage": ("storage_latency_spike", "存储时延突增"),
    "switch": ("switch_port_errors", "交换机端口错包"),
    "pdu": ("pdu_overload", "PDU过载"),
}
CAUSE_WEIGHTS = {"host": 0.30, "db": 0.25, "storage": 0.15, "switch": 0.15, "pdu": 0.15}
FAILED_CHANGE = ("failed_change", "变更失败")
MAX_HOPS = 5
MAX_AFFECTED = 250
DECAY = 0.75  # severity kept per hop


@dataclass(frozen=True)
class Impact:
    """How hard and when a fault hits one CI (hop 0 is the cause)."""

    entity_id: str
    start: int
    end: int
    severity: float
    hop: int
    fault_id: str


@dataclass(frozen=True)
class FailedChange:
    """A change that will fail: its ticket, the changed CI and when its window opens."""

    ticket_id: str
    ci: str
    window_start: int


@dataclass
class Fault:
    """One injected fault and everything it touched."""

    fault_id: str
    fault_type: str
    cause_entity: str
    cause_kind: str
    cause_type: str
    start: int
    end: int
    description: str
    change_ticket_id: str | None
    impacts: list[Impact] = field(default_factory=list)
    off_topology: list[str] = field(default_factory=list)

    @property
    def affected(self) -> list[str]:
        """CIs reached from the cause, in the order the fault reached them."""
        return [i.entity_id for i in self.impacts if i.hop > 0]

    def to_dict(self) -> dict[str, object]:
        """The ground-truth record."""
        return {
            "fault_id": self.fault_id,
            "fault_type": self.fault_type,
            "cause_entity": self.cause_entity,
            "cause_kind": self.cause_kind,
            "cause_type": self.cause_type,
            "start": iso(self.start),
            "end": iso(self.end),
            "affected": self.affected,
            "affected_from": {i.entity_id: iso(i.start) for i in self.impacts if i.hop > 0},
            "change_ticket_id": self.change_ticket_id,
            "description": self.description,
            "off_topology": list(self.off_topology),
        }


def faults_per_day(entities: int) -> int:
    """A handful a day, more for a larger estate."""
    return max(2, round(entities / 150))


def plan_faults(
    cfg: SimulationConfig, estate: Estate, hist: CmdbHistory, failed: list[FailedChange]
) -> list[Fault]:
    """Choose every fault of the run and work out how each one spreads."""
    faults: list[Fault] = []
    deps_cache: dict[int, dict[str, list[str]]] = {}
    for d in range(cfg.days):
        rng = rng_for(cfg.seed, "faults", d)
        day0 = cfg.day_start(d)
        todays = [c for c in failed if cfg.day_of(c.window_start) == d]
        planned: list[tuple[str, str, int, int, str | None]] = []
        used: set[str] = set()
        for change in todays:
            start = change.window_start + int(rng.integers(5, 31)) * 60
            planned.append(
                (
                    change.ci,
                    "change",
                    start,
                    start + int(rng.integers(20, 91)) * 60,
                    change.ticket_id,
                )
            )
            used.add(change.ci)
        types = list(CAUSE_WEIGHTS)
        weights = [CAUSE_WEIGHTS[t] for t in types]
        for _ in range(max(0, faults_per_day(cfg.entities) - len(todays))):
            typ = types[int(rng.choice(len(types), p=weights))]
            start = day0 + int(rng.integers(0, DAY_S - 1800))
            pool = [
                e
                for e in estate.ids(typ)
                if estate.entities[e].monitored and hist.alive(e, start) and e not in used
            ]
            if not pool:
                continue
            cause = pool[int(rng.integers(len(pool)))]
            used.add(cause)
            planned.append((cause, typ, start, start + int(rng.integers(10, 91)) * 60, None))
        planned.sort(key=lambda p: (p[2], p[0]))
        for k, (cause, typ, start, end, ticket) in enumerate(planned, start=1):
            end = min(end, cfg.end_ts)
            entity = estate.entities[cause]
            ftype, text = FAILED_CHANGE if ticket else FAULT_TYPES[typ]
            fault = Fault(
                f"F-{cfg.day(d).replace('-', '')}-{k:02d}",
                ftype,
                cause,
                entity.kind,
                entity.type,
                start,
                end,
                f"{cause} {text}",
                ticket,
            )
            rels = hist.relations_at(start)
            deps = deps_cache.setdefault(id(rels), dependants(set(rels)))
            fault.impacts = _spread(fault, deps, estate, hist, rng)
            if cfg.off_topology:
                _leave_topology(cfg, fault, estate, hist)
            faults.append(fault)
    return faults


def _reachable_pool(estate: Estate, hist: CmdbHistory, at: int) -> list[str]:
    """Monitored CIs alive at ``at`` whose metrics show a fault (all but a few types)."""
    from opslake.simulate.metrics import FAMILIES

    types = {t for f in FAMILIES if f.fault for t in f.types}
    return [
        e
        for e, ent in estate.entities.items()
        if ent.monitored and ent.type in types and hist.alive(e, at)
    ]


def _leave_topology(cfg: SimulationConfig, fault: Fault, estate: Estate, hist: CmdbHistory) -> None:
    """With chance ``off_topology``, the fault also reaches 1-2 CIs no relation leads to."""
    rng = rng_for(cfg.seed, "off-topology", fault.fault_id)
    if rng.random() >= cfg.off_topology:
        return
    seen = {i.entity_id for i in fault.impacts}
    pool = [e for e in _reachable_pool(estate, hist, fault.start) if e not in seen]
    for _ in range(int(rng.integers(1, 3))):
        if not pool:
            break
        eid = pool.pop(int(rng.integers(len(pool))))
        start = fault.start + int(rng.integers(30, 151))
        if start >= fault.end:
            continue
        fault.impacts.append(Impact(eid, start, fault.end, DECAY, 1, fault.fault_id))
        fault.off_topology.append(eid)


def overlapping_noise(
    cfg: SimulationConfig, estate: Estate, hist: CmdbHistory, faults: list[Fault]
) -> list[Impact]:
    """Unrelated short anomalies around each fault's start (``noise_overlap`` per fault).

    Half fall on a neighbour of what the fault reached (a CI that shares something it
    needs with a reached CI, but was not reached), half anywhere; each lasts 5-25 minutes
    and starts within 10 minutes of the fault's start. Their ``fault_id`` is ``N-...``.
    """
    out: list[Impact] = []
    if not cfg.noise_overlap:
        return out
    for fault in faults:
        rng = rng_for(cfg.seed, "noise-overlap", fault.fault_id)
        reached = {i.entity_id for i in fault.impacts}
        pool = [e for e in _reachable_pool(estate, hist, fault.start) if e not in reached]
        if not pool:
            continue
        rels = hist.relations_at(fault.start)
        needs: dict[str, list[str]] = {}
        for src, kind, dst in sorted(rels):
            if kind in PROPAGATING:
                needs.setdefault(src, []).append(dst)
        deps = dependants(set(rels))
        allowed = set(pool)
        for k in range(int(rng.poisson(cfg.noise_overlap))):
            eid = None
            if rng.random() < 0.5:
                near = sorted(
                    {
                        s
                        for r in reached
                        for up in needs.get(r, ())
                        for s in deps.get(up, ())
                        if s in allowed
                    }
                )
                if near:
                    eid = near[int(rng.integers(len(near)))]
            if eid is None:
                eid = pool[int(rng.integers(len(pool)))]
            start = fault.start + int(rng.integers(-600, 601))
            end = min(start + int(rng.integers(5, 26)) * 60, cfg.end_ts)
            start = max(start, cfg.start_ts)
            if start >= end:
                continue
            out.append(
                Impact(
                    eid,
                    start,
                    end,
                    float(rng.uniform(0.6, 1.0)),
                    1,
                    f"N-{fault.fault_id[2:]}-{k + 1}",
                )
            )
    return out


def _spread(
    fault: Fault,
    deps: dict[str, list[str]],
    estate: Estate,
    hist: CmdbHistory,
    rng: np.random.Generator,
) -> list[Impact]:
    """Breadth-first from the cause: each hop starts 30-150 s later and is weaker."""
    impacts = [Impact(fault.cause_entity, fault.start, fault.end, 1.0, 0, fault.fault_id)]
    seen = {fault.cause_entity}
    queue = deque([(fault.cause_entity, 0, fault.start)])
    while queue and len(impacts) < MAX_AFFECTED:
        eid, hop, t0 = queue.popleft()
        if hop >= MAX_HOPS:
            continue
        for child in deps.get(eid, []):
            if (
                child in seen
                or not estate.entities[child].monitored
                or not hist.alive(child, fault.start)
            ):
                continue
            seen.add(child)
            start = t0 + int(rng.integers(30, 151))
            end = fault.end + (hop + 1) * int(rng.integers(0, 61))
            if start >= end:
                continue
            impacts.append(Impact(child, start, end, DECAY ** (hop + 1), hop + 1, fault.fault_id))
            queue.append((child, hop + 1, start))
    return impacts
