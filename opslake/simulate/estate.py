"""The managed estate on day one: configuration items of all five kinds and their topology.

Relations run from the dependant to what it needs (``src`` needs ``dst``):
``vm runs_on host``, ``container runs_on host``, ``svc runs_on vm|container``,
``db|middleware|queue|identity runs_on vm``, ``host|switch|storage|security located_in rack``,
``pdu located_in rack``, ``host|switch|storage|security powered_by pdu``,
``pdu powered_by ups``, ``rack depends_on cooling``, ``host depends_on switch``,
``vm depends_on storage``, ``app depends_on svc``, ``svc depends_on db|middleware|queue|identity``
and ``app belongs_to biz-<slug>``. Businesses are not CIs: the ``belongs_to`` target is the
business id ``biz-<slug>`` and every CI of an application stack carries the business name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from opslake.simulate.catalog import (
    APP_SUFFIXES,
    BUSINESSES,
    IP_BLOCK,
    LOCATIONS,
    OWNERS,
    PHONE_PREFIXES,
    PLATFORM_DEPARTMENT,
    SERVICE_SUFFIXES,
    TYPES,
    Business,
    Location,
)
from opslake.simulate.config import DAY_S, SimulationConfig, iso, rng_for

#: CMDB fields in export order (the silver ``assets`` columns less the validity interval).
CI_FIELDS = (
    "entity_id",
    "kind",
    "type",
    "name",
    "department",
    "business",
    "region",
    "location",
    "vendor",
    "model",
    "serial",
    "ip",
    "lifecycle_state",
    "purchase_date",
    "warranty_end",
    "contract_end",
    "licence_end",
    "owner",
    "owner_contact",
    "updated_at",
)
PLATFORM_TYPES = ("db", "middleware", "queue", "identity")
SECURITY_TYPES = ("firewall", "waf", "ids", "bastion")
RACKED_TYPES = ("host", "switch", "storage", *SECURITY_TYPES)
#: Relations along which a fault spreads from what is needed to what needs it.
PROPAGATING = ("runs_on", "depends_on", "powered_by")


@dataclass
class Entity:
    """One configuration item with its CMDB attributes and how it is scraped."""

    entity_id: str
    kind: str
    type: str
    name: str
    department: str
    business: str | None
    region: str
    location: str
    vendor: str
    model: str
    serial: str
    ip: str
    lifecycle_state: str
    purchase_date: str
    warranty_end: str
    contract_end: str | None
    licence_end: str | None
    owner: str
    owner_contact: str
    updated_at: str
    port: int = 0
    job: str = ""
    monitored: bool = True  # emits metrics, logs and probes

    def record(self) -> dict[str, object]:
        """The CI as the CMDB exports it."""
        return {k: getattr(self, k) for k in CI_FIELDS}


@dataclass
class Estate:
    """All CIs (in id order per type) and the initial relation set."""

    entities: dict[str, Entity]
    relations: set[tuple[str, str, str]]
    by_type: dict[str, list[str]]
    next_number: dict[str, int] = field(default_factory=dict)

    def ids(self, *types: str) -> list[str]:
        """Ids of the given types, in type then id order."""
        return [i for t in types for i in self.by_type.get(t, [])]


def type_counts(n: int) -> dict[str, int]:
    """How many CIs of each type an estate of about ``n`` objects has."""
    counts = {t: max(1, round(n * spec.share)) for t, spec in TYPES.items() if t != "vm"}
    counts["svc"] = max(counts["svc"], counts["app"])
    counts["vm"] = max(len(PLATFORM_TYPES) + 2, n - sum(counts.values()))
    return {t: counts[t] for t in TYPES}


def dependants(relations: set[tuple[str, str, str]]) -> dict[str, list[str]]:
    """For each CI, the CIs that need it (sorted), following the propagating relations."""
    out: dict[str, list[str]] = {}
    for src, rel, dst in sorted(relations):
        if rel in PROPAGATING:
            out.setdefault(dst, []).append(src)
    return out


class _Builder:
    """Draws attributes for one estate; kept as a class so the draws stay in one stream."""

    def __init__(self, cfg: SimulationConfig) -> None:
        self.cfg = cfg
        self.rng = rng_for(cfg.seed, "estate")
        self.end_date = cfg.start + timedelta(days=cfg.days)

    def pick(self, seq: tuple | list) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def ip(self, typ: str, number: int) -> str:
        block = IP_BLOCK[typ]
        return f"10.{block}.{number // 250}.{number % 250 + 1}"

    def phone(self) -> str:
        return self.pick(PHONE_PREFIXES) + f"{int(self.rng.integers(10**8)):08d}"

    def dates(self, software: bool) -> tuple[str, str, str | None, str | None]:
        """Purchase, warranty, contract and licence dates, some expiring near the end."""
        rng, start, end = self.rng, self.cfg.start, self.end_date
        purchase = start - timedelta(days=int(rng.integers(60, 6 * 365)))
        warranty = purchase + timedelta(days=365 * int(rng.choice([3, 5])))
        contract: date | None = warranty + timedelta(days=365 * int(rng.integers(1, 4)))
        licence: date | None = (
            purchase + timedelta(days=365 * int(rng.integers(1, 8))) if software else None
        )

        def nudge(d: date | None) -> date | None:
            # Reports must find items expiring within 30 and 90 days, and expired ones.
            if d is None:
                return None
            u = rng.random()
            if u < 0.05:
                return end + timedelta(days=int(rng.integers(1, 31)))
            if u < 0.12:
                return end + timedelta(days=int(rng.integers(31, 91)))
            if u < 0.20:
                return start - timedelta(days=int(rng.integers(1, 400)))
            return d

        warranty = nudge(warranty) or warranty
        contract = nudge(contract) if rng.random() < 0.85 else None
        licence = nudge(licence)
        return (
            purchase.isoformat(),
            warranty.isoformat(),
            contract.isoformat() if contract else None,
            licence.isoformat() if licence else None,
        )

    def entity(
        self,
        typ: str,
        entity_id: str,
        number: int,
        name: str,
        loc: Location,
        department: str = PLATFORM_DEPARTMENT,
        business: str | None = None,
    ) -> Entity:
        spec = TYPES[typ]
        vendor, model = self.pick(spec.vendors)
        purchase, warranty, contract, licence = self.dates(spec.software)
        updated = (
            self.cfg.start_ts
            - int(self.rng.integers(1, 900)) * DAY_S
            + int(self.rng.integers(0, 10 * 3600))
        )
        serial = f"{vendor[:2].upper()}{int(self.rng.integers(16**10)):010X}"
        return Entity(
            entity_id=entity_id,
            kind=spec.kind,
            type=typ,
            name=name,
            department=department,
            business=business,
            region=loc.region,
            location=loc.name,
            vendor=vendor,
            model=model,
            serial=serial,
            ip=self.ip(typ, number),
            lifecycle_state="in_service",
            purchase_date=purchase,
            warranty_end=warranty,
            contract_end=contract,
            licence_end=licence,
            owner=self.pick(OWNERS),
            owner_contact=self.phone(),
            updated_at=iso(updated),
            port=spec.port,
            job=spec.job,
        )


def numbered_id(typ: str, number: int) -> str:
    """Readable id of a numbered CI, e.g. ``vm-0012``."""
    return f"{TYPES[typ].prefix}-{number:04d}"


def device_name(typ: str, entity_id: str, loc: Location) -> str:
    """The CMDB ``name`` (and syslog hostname) of a CI; deliberately not its entity id."""
    if TYPES[typ].kind in ("facility", "security") or typ == "switch":
        return f"{loc.code}-{entity_id.upper()}"
    return f"{entity_id}.gov.local"


def location_of(entity: Entity) -> Location:
    """The data-centre room an entity is in."""
    return next((loc for loc in LOCATIONS if loc.name == entity.location), LOCATIONS[0])


def build_estate(cfg: SimulationConfig) -> Estate:
    """Create the day-one estate of about ``cfg.entities`` CIs with its topology."""
    b = _Builder(cfg)
    rng = b.rng
    counts = type_counts(cfg.entities)
    ents: dict[str, Entity] = {}
    by_type: dict[str, list[str]] = {t: [] for t in TYPES}
    rels: set[tuple[str, str, str]] = set()
    n_loc = min(len(LOCATIONS), max(1, (counts["rack"] + 3) // 4))
    locs = LOCATIONS[:n_loc]

    def add(e: Entity) -> Entity:
        ents[e.entity_id] = e
        by_type[e.type].append(e.entity_id)
        return e

    def numbered(typ: str, n: int, loc_of: Callable[[int], Location]) -> list[Entity]:
        out = []
        for i in range(1, n + 1):
            eid = numbered_id(typ, i)
            loc = loc_of(i)
            out.append(add(b.entity(typ, eid, i, device_name(typ, eid, loc), loc)))
        return out

    # Facilities: racks spread over the rooms in use, power and cooling per room.
    racks = numbered("rack", counts["rack"], lambda i: locs[(i - 1) % n_loc])
    rack_loc = {r.entity_id: locs[(i) % n_loc] for i, r in enumerate(racks)}
    ups = numbered("ups", counts["ups"], lambda i: locs[(i - 1) % n_loc])
    cooling = numbered("cooling", counts["cooling"], lambda i: locs[(i - 1) % n_loc])
    pdus = numbered("pdu", counts["pdu"], lambda i: rack_loc[racks[(i - 1) % len(racks)].entity_id])
    rack_pdus: dict[str, list[str]] = {}
    for i, p in enumerate(pdus):
        rack = racks[i % len(racks)].entity_id
        rels.add((p.entity_id, "located_in", rack))
        rels.add((p.entity_id, "powered_by", ups[i % len(ups)].entity_id))
        rack_pdus.setdefault(rack, []).append(p.entity_id)
    for i, r in enumerate(racks):
        rels.add((r.entity_id, "depends_on", cooling[i % len(cooling)].entity_id))

    # Racked devices: hosts, switches, storage and security appliances, round-robin.
    slot = 0
    racked: dict[str, list[Entity]] = {}
    for typ in ("switch", "storage", "host", *SECURITY_TYPES):
        items = []
        for i in range(1, counts[typ] + 1):
            rack = racks[slot % len(racks)].entity_id
            slot += 1
            loc = rack_loc[rack]
            eid = numbered_id(typ, i)
            e = add(b.entity(typ, eid, i, device_name(typ, eid, loc), loc))
            rels.add((eid, "located_in", rack))
            feeds = rack_pdus.get(rack) or [pdus[(slot - 1) % len(pdus)].entity_id]
            rels.add((eid, "powered_by", feeds[i % len(feeds)]))
            items.append(e)
        racked[typ] = items
    switches, storage, hosts = racked["switch"], racked["storage"], racked["host"]
    for i, h in enumerate(hosts):
        rels.add((h.entity_id, "depends_on", switches[i % len(switches)].entity_id))

    # Compute: a third of the hosts are container nodes when there are enough of them.
    k8s = hosts[-max(1, len(hosts) // 3) :] if len(hosts) >= 3 else hosts
    vm_hosts = hosts[: len(hosts) - len(k8s)] if len(hosts) >= 3 else hosts
    loc_by_name = {loc.name: loc for loc in LOCATIONS}
    vms = []
    for i in range(1, counts["vm"] + 1):
        host = vm_hosts[int(rng.integers(len(vm_hosts)))]
        eid = numbered_id("vm", i)
        loc = loc_by_name[host.location]
        vms.append(add(b.entity("vm", eid, i, device_name("vm", eid, loc), loc)))
        rels.add((eid, "runs_on", host.entity_id))
        rels.add((eid, "depends_on", storage[(i - 1) % len(storage)].entity_id))
    containers = []
    for i in range(1, counts["container"] + 1):
        host = k8s[int(rng.integers(len(k8s)))]
        eid = numbered_id("container", i)
        loc = loc_by_name[host.location]
        containers.append(
            add(b.entity("container", eid, i, device_name("container", eid, loc), loc))
        )
        rels.add((eid, "runs_on", host.entity_id))

    # Applications, round-robin over businesses; services round-robin over applications.
    n_app = counts["app"]
    apps: list[tuple[str, Business, str]] = []
    for i in range(n_app):
        biz = BUSINESSES[i % len(BUSINESSES)]
        k = i // len(BUSINESSES)
        suffix = APP_SUFFIXES[k % len(APP_SUFFIXES)]
        if k >= len(APP_SUFFIXES):
            suffix += f"{k // len(APP_SUFFIXES) + 1}"
        apps.append((f"{biz.slug}-{suffix}", biz, f"app-{biz.slug}-{suffix}"))
    svc_of_app: dict[str, list[str]] = {a[2]: [] for a in apps}
    svc_specs: list[tuple[str, str, Business]] = []
    for i in range(counts["svc"]):
        slug, biz, app_id = apps[i % n_app]
        k = i // n_app
        suffix = SERVICE_SUFFIXES[k % len(SERVICE_SUFFIXES)]
        if k >= len(SERVICE_SUFFIXES):
            suffix += f"{k // len(SERVICE_SUFFIXES) + 1}"
        svc_id = f"svc-{slug}-{suffix}"
        svc_of_app[app_id].append(svc_id)
        svc_specs.append((svc_id, app_id, biz))
    used_biz = list(dict.fromkeys(a[1] for a in apps))

    # Shared platforms run on the first VMs; databases belong to one business each.
    vm_iter = iter(vms)
    hosting: dict[str, Entity] = {}
    platforms: dict[str, list[Entity]] = {}
    for typ in PLATFORM_TYPES:
        items = []
        for i in range(1, counts[typ] + 1):
            vm = next(vm_iter)
            eid = numbered_id(typ, i)
            loc = loc_by_name[vm.location]
            biz = used_biz[(i - 1) % len(used_biz)] if typ == "db" else None
            e = add(
                b.entity(
                    typ,
                    eid,
                    i,
                    device_name(typ, eid, loc),
                    loc,
                    biz.department if biz else PLATFORM_DEPARTMENT,
                    biz.name if biz else None,
                )
            )
            rels.add((eid, "runs_on", vm.entity_id))
            hosting[eid] = vm
            items.append(e)
        platforms[typ] = items
    free_vms = list(vm_iter) or vms
    dbs_of_biz: dict[str, list[str]] = {}
    for db in platforms["db"]:
        dbs_of_biz.setdefault(db.business or "", []).append(db.entity_id)

    for n, (svc_id, app_id, biz) in enumerate(svc_specs):
        on_container = bool(containers) and n % 3 == 2
        runner = (
            containers[(n // 3) % len(containers)] if on_container else free_vms[n % len(free_vms)]
        )
        loc = loc_by_name[runner.location]
        add(
            b.entity("svc", svc_id, n + 1, f"{svc_id}.svc.gov.local", loc, biz.department, biz.name)
        )
        rels.add((svc_id, "runs_on", runner.entity_id))
        hosting[svc_id] = runner
        dbs = dbs_of_biz.get(biz.name) or [d.entity_id for d in platforms["db"]]
        rels.add((svc_id, "depends_on", dbs[n % len(dbs)]))
        if rng.random() < 0.5:
            rels.add((svc_id, "depends_on", b.pick(platforms["middleware"]).entity_id))
        if rng.random() < 0.35:
            rels.add((svc_id, "depends_on", b.pick(platforms["queue"]).entity_id))
        if svc_id.endswith(("-api", "-auth")) or rng.random() < 0.3:
            rels.add((svc_id, "depends_on", b.pick(platforms["identity"]).entity_id))
    for number, (slug, biz, app_id) in enumerate(apps, start=1):
        first = hosting[svc_of_app[app_id][0]]
        loc = loc_by_name[first.location]
        add(b.entity("app", app_id, number, f"{slug}.zj.gov.cn", loc, biz.department, biz.name))
        rels.add((app_id, "belongs_to", f"biz-{biz.slug}"))
        for svc_id in svc_of_app[app_id]:
            rels.add((app_id, "depends_on", svc_id))

    # A VM or container that hosts business workload carries that business.
    for hosted, runner in hosting.items():
        e = ents[hosted]
        if e.business and runner.business is None:
            runner.business, runner.department = e.business, e.department

    # A few CIs start in maintenance; they still run and report.
    for eid in list(ents):
        if rng.random() < 0.02:
            ents[eid].lifecycle_state = "maintenance"

    # Legacy CIs already retired on day one: in the first snapshot only, never monitored.
    nxt = {t: len(by_type[t]) + 1 for t in TYPES}
    for _ in range(max(1, cfg.entities // 100)):
        eid = numbered_id("vm", nxt["vm"])
        loc = locs[0]
        e = add(b.entity("vm", eid, nxt["vm"], device_name("vm", eid, loc), loc))
        e.lifecycle_state, e.monitored = "retired", False
        nxt["vm"] += 1
    return Estate(ents, rels, by_type, nxt)


def spare(estate: Estate, relations: set[tuple[str, str, str]]) -> list[str]:
    """VMs that host nothing: safe to retire or migrate without breaking a service."""
    busy = {dst for _, rel, dst in relations if rel == "runs_on"}
    return [
        v
        for v in estate.by_type["vm"]
        if v not in busy and estate.entities[v].lifecycle_state != "retired"
    ]
