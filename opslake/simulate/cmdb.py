"""How the CMDB changes day by day, and its daily full-snapshot export.

Day one is the estate as built. From the second day on, each day some CIs change an
attribute (owner, lifecycle state), a few VMs are added (``planned``, later ``in_service``),
retired or migrated to another host, and a few are re-addressed; the legacy CIs that were
already retired on day one are purged from the export. Structural changes (adds,
retirements, migrations, new IPs) happen at 19:00 UTC (03:00 local, the maintenance
window): scrapes from then on carry the new ``instance`` and faults spread over the new
topology. A CI changes at most once a day, so every change is visible in a snapshot.

The export need not be the topology (``SimulationConfig`` realism knobs): a share of
relations is missing from it or recorded pointing at another CI of the right type, and some
VMs and containers that run and report are not in it at all. Each relation's fate is drawn
once, from a hash of the relation, so an error persists from day to day as a real one does;
faults spread on the real relations (``relations``), the export shows the recorded ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from opslake.simulate.catalog import IP_BLOCK, OWNERS, PHONE_PREFIXES
from opslake.simulate.config import HOUR_S, SimulationConfig, iso, rng_for, unit_hash
from opslake.simulate.estate import (
    CI_FIELDS,
    Entity,
    Estate,
    device_name,
    location_of,
    numbered_id,
    spare,
)
from opslake.simulate.truth import Tally

STRUCTURAL_HOUR = 19
Relation = tuple[str, str, str]
#: The attributes that make a version (silver ``assets`` columns); ``updated_at`` is not one.
VERSION_FIELDS = tuple(f for f in CI_FIELDS if f != "updated_at")


@dataclass
class CmdbHistory:
    """Daily CMDB states and the facts other sources need from them."""

    cfg: SimulationConfig
    snapshots: list[dict[str, dict[str, object]]] = field(default_factory=list)
    relations: list[frozenset[Relation]] = field(default_factory=list)
    retired_at: dict[str, int] = field(default_factory=dict)
    ip_changes: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    #: CIs that run and report but are not in the CMDB export.
    unknown: frozenset[str] = frozenset()
    #: What the export records for a real relation: itself, None (missing) or a stale one.
    recorded: dict[Relation, Relation | None] = field(default_factory=dict)

    def exported_cis(self, day: int) -> dict[str, dict[str, object]]:
        """The CIs of day ``day``'s export (the CMDB's view: no unknown CIs)."""
        cis = self.snapshots[day]
        return {k: v for k, v in cis.items() if k not in self.unknown} if self.unknown else cis

    def exported_relations(self, day: int) -> frozenset[Relation]:
        """The relations of day ``day``'s export: the real ones as the CMDB records them."""
        cfg, real = self.cfg, self.relations[day]
        if not (cfg.cmdb_missing or cfg.cmdb_stale or self.unknown):
            return real
        cis = self.snapshots[day]
        out = set()
        for rel in sorted(real):
            if rel not in self.recorded:
                self.recorded[rel] = self._record(rel, cis)
            shown = self.recorded[rel]
            if shown is not None and shown[0] not in self.unknown and shown[2] not in self.unknown:
                out.add(shown)
        return frozenset(out)

    def _record(self, rel: Relation, cis: dict[str, dict[str, object]]) -> Relation | None:
        """How the CMDB records ``rel``: as it is, not at all, or pointing at a wrong CI."""
        src, kind, dst = rel
        if kind == "belongs_to" or dst not in cis:
            return rel
        u = unit_hash(self.cfg.seed, "cmdb-record", src, kind, dst)
        if u < self.cfg.cmdb_missing:
            return None
        if u < self.cfg.cmdb_missing + self.cfg.cmdb_stale:
            typ = cis[dst]["type"]
            pool = sorted(
                k
                for k, v in cis.items()
                if v["type"] == typ
                and k != dst
                and k not in self.unknown
                and v["lifecycle_state"] != "retired"
            )
            if pool:
                pick = unit_hash(self.cfg.seed, "cmdb-stale", src, kind, dst)
                return (src, kind, pool[int(pick * len(pool))])
        return rel

    def errors(self) -> dict[str, object]:
        """Where the export differs from the real topology, for the ground truth."""
        missing = sorted(list(r) for r, shown in self.recorded.items() if shown is None)
        stale = sorted(
            [list(r), list(shown)]
            for r, shown in self.recorded.items()
            if shown is not None and shown != r
        )
        return {
            "missing_relations": missing,
            "stale_relations": stale,
            "unknown_cis": sorted(self.unknown),
        }

    def structural_ts(self, day: int) -> int:
        """When day ``day``'s structural changes take effect."""
        return self.cfg.day_start(day) + STRUCTURAL_HOUR * HOUR_S

    def relations_at(self, ts: float) -> frozenset[Relation]:
        """The relation set in effect at epoch second ``ts``."""
        day = min(max(self.cfg.day_of(ts), 0), self.cfg.days - 1)
        if ts >= self.structural_ts(day) or day == 0:
            return self.relations[day]
        return self.relations[day - 1]

    def ip_at(self, entity: Entity, ts: float) -> str:
        """The address ``entity`` had at ``ts`` (re-addressing happens in the window)."""
        change = self.ip_changes.get(entity.entity_id)
        if change and ts >= change[0]:
            return change[2]
        return change[1] if change else entity.ip

    def alive(self, entity_id: str, ts: float) -> bool:
        """False once a CI has been retired."""
        return ts < self.retired_at.get(entity_id, 1 << 62)

    def snapshot_bytes(self, day: int) -> bytes:
        """The CMDB export of day ``day``: one JSON document, one CI or relation per line."""
        cis = self.exported_cis(day)
        head = json.dumps({"exported_at": iso(self.cfg.day_start(day + 1) - 60)})[:-1]
        ci_lines = ",\n".join(json.dumps(cis[k], ensure_ascii=False) for k in sorted(cis))
        rel_lines = ",\n".join(
            json.dumps({"src": s, "relation": r, "dst": d})
            for s, r, d in sorted(self.exported_relations(day))
        )
        return f'{head},\n"cis": [\n{ci_lines}],\n"relations": [\n{rel_lines}]}}\n'.encode()

    def count_versions(self) -> Tally:
        """New CI versions per snapshot: new CIs plus CIs whose attributes changed."""
        tally = Tally([self.cfg.day(d) for d in range(self.cfg.days)])
        before: dict[str, tuple] = {}
        for d in range(len(self.snapshots)):
            cis = self.exported_cis(d)
            now = {k: tuple(v[f] for f in VERSION_FIELDS) for k, v in cis.items()}
            tally.add(self.cfg.day(d), sum(1 for k, v in now.items() if before.get(k) != v))
            before = now
        return tally

    def count_relation_intervals(self) -> Tally:
        """New relation validity intervals per snapshot."""
        tally = Tally([self.cfg.day(d) for d in range(self.cfg.days)])
        before: frozenset[Relation] = frozenset()
        for d in range(len(self.relations)):
            rels = self.exported_relations(d)
            tally.add(self.cfg.day(d), len(rels - before))
            before = rels
        return tally


def plan_history(cfg: SimulationConfig, estate: Estate) -> CmdbHistory:
    """Play the CMDB forward over the run; adds new CIs to ``estate`` as it goes."""
    hist = CmdbHistory(cfg)
    if cfg.unknown_cis:
        hist.unknown = frozenset(
            e
            for e in estate.ids("vm", "container")
            if estate.entities[e].monitored
            and unit_hash(cfg.seed, "unknown-ci", e) < cfg.unknown_cis
        )
    state = {eid: e.record() for eid, e in estate.entities.items()}
    rels = set(estate.relations)
    hist.snapshots.append({k: dict(v) for k, v in state.items()})
    hist.relations.append(frozenset(rels))
    planned: list[str] = []
    ip_seq = 0
    n = cfg.entities
    for d in range(1, cfg.days):
        rng = rng_for(cfg.seed, "cmdb", d)
        t_struct = hist.structural_ts(d)
        touched: set[str] = set()

        def pick(
            pool: list[str], rng: np.random.Generator = rng, touched: set[str] = touched
        ) -> str | None:
            """A CI from ``pool`` not yet changed today (one change a day keeps it visible)."""
            pool = [p for p in pool if p not in touched]
            if not pool:
                return None
            chosen = pool[int(rng.integers(len(pool)))]
            touched.add(chosen)
            return chosen

        def stamp(eid: str, ts: int, **changes: object) -> None:
            state[eid].update(changes, updated_at=iso(ts))
            for k, v in changes.items():
                if hasattr(estate.entities[eid], k) and k != "ip":
                    setattr(estate.entities[eid], k, v)

        if d == 1:  # legacy CIs retired before the run leave the export
            for eid in [k for k, v in state.items() if v["lifecycle_state"] == "retired"]:
                del state[eid]
                touched.add(eid)
        for eid in planned:
            touched.add(eid)
            stamp(
                eid,
                cfg.day_start(d) + int(rng.integers(2, 9)) * HOUR_S,
                lifecycle_state="in_service",
            )
        planned = []

        for _ in range(max(1, n // 400)):
            eid = pick([v for v in spare(estate, rels) if estate.entities[v].monitored])
            if eid is None:
                break
            stamp(eid, t_struct, lifecycle_state="retired")
            hist.retired_at[eid] = t_struct
            rels = {r for r in rels if eid not in (r[0], r[2])}

        vm_hosts = sorted(
            {dst for src, rel, dst in rels if rel == "runs_on" and src.startswith("vm-")}
        )
        if len(vm_hosts) >= 2:
            movers = [
                src
                for src, rel, _ in sorted(rels)
                if rel == "runs_on" and src in estate.entities and estate.entities[src].type == "vm"
            ]
            eid = pick(movers)
            if eid is not None:
                old = next(r for r in rels if r[0] == eid and r[1] == "runs_on")
                new_host = [h for h in vm_hosts if h != old[2]][
                    int(rng.integers(len(vm_hosts) - 1))
                ]
                rels.discard(old)
                rels.add((eid, "runs_on", new_host))
                host = estate.entities[new_host]
                stamp(eid, t_struct, region=host.region, location=host.location)

        for _ in range(max(1, n // 500)):
            pool = [
                e
                for e in estate.ids("vm", "container")
                if e in state
                and state[e]["lifecycle_state"] != "retired"
                and e not in hist.ip_changes
            ]
            eid = pick(pool)
            if eid is None:
                break
            typ = estate.entities[eid].type
            new_ip = f"10.{IP_BLOCK[typ]}.{200 + ip_seq // 250}.{ip_seq % 250 + 1}"
            ip_seq += 1
            hist.ip_changes[eid] = (t_struct, str(state[eid]["ip"]), new_ip)
            stamp(eid, t_struct, ip=new_ip)

        live = [
            k for k, v in state.items() if v["lifecycle_state"] in ("in_service", "maintenance")
        ]
        for _ in range(max(2, n // 80)):
            eid = pick(live)
            if eid is None:
                break
            ts = cfg.day_start(d) + int(rng.integers(HOUR_S, 9 * HOUR_S))
            if rng.random() < 0.5:
                owner = str(state[eid]["owner"])
                new_owner = [o for o in OWNERS if o != owner][int(rng.integers(len(OWNERS) - 1))]
                phone = (
                    PHONE_PREFIXES[int(rng.integers(len(PHONE_PREFIXES)))]
                    + f"{int(rng.integers(10**8)):08d}"
                )
                stamp(eid, ts, owner=new_owner, owner_contact=phone)
            else:
                flip = (
                    "maintenance" if state[eid]["lifecycle_state"] == "in_service" else "in_service"
                )
                stamp(eid, ts, lifecycle_state=flip)

        for _ in range(max(1, n // 250)):
            number = estate.next_number["vm"]
            estate.next_number["vm"] += 1
            eid = numbered_id("vm", number)
            host = (
                estate.entities[vm_hosts[int(rng.integers(len(vm_hosts)))]]
                if vm_hosts
                else estate.entities[estate.by_type["host"][0]]
            )
            template = estate.entities[estate.by_type["vm"][0]]
            e = Entity(
                **{
                    **template.__dict__,
                    "entity_id": eid,
                    "name": device_name("vm", eid, location_of(host)),
                    "region": host.region,
                    "location": host.location,
                    "ip": f"10.{IP_BLOCK['vm']}.{number // 250}.{number % 250 + 1}",
                    "serial": f"{template.vendor[:2].upper()}{int(rng.integers(16**10)):010X}",
                    "business": None,
                    "purchase_date": cfg.day(d),
                    "warranty_end": cfg.day(d + 3 * 365),
                    "contract_end": None,
                    "licence_end": None,
                    "lifecycle_state": "planned",
                    "updated_at": iso(t_struct),
                    "monitored": False,
                }
            )
            estate.entities[eid] = e
            estate.by_type["vm"].append(eid)
            state[eid] = e.record()
            touched.add(eid)
            planned.append(eid)
            rels.add((eid, "runs_on", host.entity_id))
            storage = estate.by_type["storage"]
            rels.add((eid, "depends_on", storage[number % len(storage)]))

        hist.snapshots.append({k: dict(v) for k, v in state.items()})
        hist.relations.append(frozenset(rels))
    return hist
