"""Conformers: bronze → silver with exact schemas, dedup, entity mapping, SCD-2, determinism."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from opslake.errors import SecurityError
from opslake.ingest.parsers import alertmanager, cmdb, itsm, probes, prometheus_text, syslog
from opslake.lake import schemas
from opslake.lake.landing import LandedBatch
from opslake.security.crypto import FieldCipher
from opslake.security.fields import OWNER_CONTACT, reseal, sealer
from opslake.transforms import cmdb as cmdb_silver
from opslake.transforms import events, logs, metrics, tickets
from opslake.transforms import probes as probes_silver
from opslake.transforms.entities import EntityResolver

KEY, OLD_KEY = bytes(range(16)), bytes(16)
CIPHER = FieldCipher(KEY)
SEAL = sealer(CIPHER)


def batch(
    source: str, batch_id: str, received: str = "2026-11-24T23:00:00+00:00", dt: str = "2026-11-24"
) -> LandedBatch:
    return LandedBatch(
        source=source,
        batch_id=batch_id,
        dt=dt,
        path=f"landing/{batch_id}",
        sha256="0" * 64,
        bytes=0,
        received_at=received,
        fmt="x",
        connector="test",
    )


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def shuffled(table: pa.Table, seed: int = 7) -> pa.Table:
    order = list(range(table.num_rows))
    random.Random(seed).shuffle(order)
    return table.take(order)


def asset(
    entity_id: str,
    name: str | None,
    ip: str | None,
    valid_from: datetime,
    valid_to: datetime | None = None,
) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(schemas.ASSETS.names)
    row.update(
        entity_id=entity_id,
        kind="cloud",
        name=name,
        ip=ip,
        valid_from=valid_from,
        valid_to=valid_to,
    )
    return row


T0, T1 = utc(2026, 1, 1), utc(2026, 6, 1)
ASSETS = pa.Table.from_pylist(
    [
        asset("vm-0012", "vm-0012.gov.local", "10.20.1.12", T0),
        asset("vm-0013", "VM-0013.gov.local", "10.20.1.13", T0),
        asset("app-tax-portal", None, None, T0),
        asset("old-0001", "old-0001.gov.local", "10.20.9.9", T0, T1),  # retired; its IP reused
        asset("new-0001", "new-0001.gov.local", "10.20.9.9", T1),
        asset("twin-a", "twin-a.gov.local", "10.0.0.5", T0),  # two live CIs claim one IP
        asset("twin-b", "twin-b.gov.local", "10.0.0.5", T0),
    ],
    schema=schemas.ASSETS,
)


@pytest.fixture
def resolver() -> EntityResolver:
    return EntityResolver(ASSETS)


# --- entity resolver -------------------------------------------------------------------------


def test_resolver_maps_ids_names_ips_and_instance_strings(resolver: EntityResolver) -> None:
    raw = [
        "vm-0012",
        "VM-0012.gov.local",
        "vm-0013.gov.local",
        "10.20.1.12",
        "10.20.1.13:9100",
        "https://vm-0012.gov.local:8443/health",
        "vm-0013.dc2.internal",
        "app-tax-portal",
        "unknown.gov.local",
        "10.99.0.1:9100",
        None,
        "",
        "10.0.0.5",
        "twin-a",
        "10.20.9.9",
        "[fe80::1]:9100",
    ]
    expected = [
        "vm-0012",
        "vm-0012",
        "vm-0013",
        "vm-0012",
        "vm-0013",
        "vm-0012",
        "vm-0013",
        "app-tax-portal",
        None,
        None,
        None,
        None,
        None,
        "twin-a",
        "new-0001",
        None,
    ]
    assert resolver.resolve(pl.Series(raw)).to_list() == expected
    assert resolver.resolve(pa.array(raw)).to_list() == expected
    assert resolver.resolve(pa.chunked_array([raw[:5], raw[5:]])).to_list() == expected


def test_resolver_as_of_uses_the_cmdb_of_that_time() -> None:
    before = EntityResolver(ASSETS, as_of=utc(2026, 3, 1))
    assert before.resolve(pl.Series(["10.20.9.9", "new-0001"])).to_list() == ["old-0001", None]
    # Without a time, a retired entity still resolves by its own id or name.
    now = EntityResolver(ASSETS)
    assert now.resolve(pl.Series(["old-0001.gov.local"])).to_list() == ["old-0001"]


def test_resolver_expression_works_inside_a_frame(resolver: EntityResolver) -> None:
    frame = pl.DataFrame({"instance": ["10.20.1.12:9100", "nope:9100"]})
    out = frame.with_columns(resolver.expr(pl.col("instance")).alias("entity_id"))
    assert out.get_column("entity_id").to_list() == ["vm-0012", None]
    assert EntityResolver(schemas.ASSETS.empty_table()).resolve(
        pl.Series(["vm-0012"])
    ).to_list() == [None]


# --- metric points ---------------------------------------------------------------------------


def prom_file(batch_id: str, body: bytes, source: str = "prometheus") -> tuple[str, pa.Table]:
    """One bronze file as the silver reader yields it: its source and dictionary columns."""
    table = prometheus_text.parse(body, batch("prometheus", batch_id)).table
    for name in ("metric", "label_set", "batch_id"):
        table = table.set_column(
            table.schema.get_field_index(name), name, table.column(name).dictionary_encode()
        )
    return source, table


def reader(*files: tuple[str, pa.Table]) -> metrics.BronzeReader:
    return lambda columns: [(source, table.select(list(columns))) for source, table in files]


def resolve_instances(instances: pa.Array) -> pa.Array:
    return pa.array(
        [{"10.0.0.9:9100": "host-9"}.get(i) for i in instances.to_pylist()], pa.string()
    )


POINTS = (
    prom_file("b-2", b'm{entity_id="vm-2"} 2 1772409660000\nm{entity_id="vm-1"} 1 1772409600000\n'),
    prom_file(
        "b-1",
        b'm{entity_id="vm-2"} 9 1772409660000\n'
        b'm{instance="10.0.0.9:9100"} 5 1772409600000\n'
        b'm{instance="10.7.7.7:9100"} 6 1772409600000\n'
        b'a{entity_id="vm-1",job="x"} 3 1772409720000\n'
        b'a{entity_id="vm-1",job="x"} 4 1772409600000\n',
    ),
    prom_file("b-0", b'm{entity_id="vm-1"} 7 1772409660000\n', source="mqtt"),
)


def points(rows_per_shard: int, tmp_path: Path) -> pa.Table:
    return pa.concat_tables(
        metrics.to_silver(
            reader(*POINTS),
            resolve_instances,
            rows_per_shard=rows_per_shard,
            spill_dir=str(tmp_path),
        )
    )


def test_metric_points_dedup_sort_and_resolve_entities(tmp_path: Path) -> None:
    out = points(1000, tmp_path)
    assert out.schema == schemas.METRIC_POINTS
    rows = [
        (r["metric"], r["entity_id"], r["ts"].minute, r["value"], r["source"], r["batch_id"])
        for r in out.to_pylist()
    ]
    # vm-2's point arrived twice: the first delivery (batch b-1 sorts before b-2) wins.
    assert rows == [
        ("a", "vm-1", 0, 4.0, "prometheus", "b-1"),
        ("a", "vm-1", 2, 3.0, "prometheus", "b-1"),
        ("m", "host-9", 0, 5.0, "prometheus", "b-1"),
        ("m", "vm-1", 0, 1.0, "prometheus", "b-2"),
        ("m", "vm-1", 1, 7.0, "mqtt", "b-0"),
        ("m", "vm-2", 1, 9.0, "prometheus", "b-1"),
        ("m", None, 0, 6.0, "prometheus", "b-1"),
    ]
    assert out.column("labels").to_pylist()[2] == [("instance", "10.0.0.9:9100")]
    assert out.column("labels").to_pylist()[0] == [("job", "x")]
    # The spill files went with their directory.
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rows_per_shard", [1, 2, 3])
def test_metric_points_are_the_same_whatever_the_memory_budget(
    rows_per_shard: int, tmp_path: Path
) -> None:
    # A budget of one sample puts each series in a shard of its own.
    assert points(rows_per_shard, tmp_path).equals(points(1_000_000, tmp_path))


@pytest.mark.parametrize("shards", [2, 3, 5])
def test_day_shards_split_the_points_by_entity_and_add_up_to_the_day(
    shards: int, tmp_path: Path
) -> None:
    whole = points(1000, tmp_path)
    parts = [
        pa.concat_tables(
            [
                schemas.METRIC_POINTS.empty_table(),
                *metrics.to_silver(
                    reader(*POINTS),
                    resolve_instances,
                    rows_per_shard=2,
                    spill_dir=str(tmp_path),
                    day_shard=(i, shards),
                ),
            ]
        )
        for i in range(shards)
    ]
    entities = [set(part.column("entity_id").to_pylist()) for part in parts]
    # Every entity (unresolved ones included, as one) lives in exactly one shard ...
    for i, mine in enumerate(entities):
        for other in entities[i + 1 :]:
            assert not mine & other
    # ... which holds exactly its rows, sorted as silver is.
    for i, part in enumerate(parts):
        expected = [r for r in whole.to_pylist() if r["entity_id"] in entities[i]]
        assert part.to_pylist() == expected
    assert sum(p.num_rows for p in parts) == whole.num_rows
    assert list(tmp_path.iterdir()) == []


def test_metric_points_of_an_empty_day(tmp_path: Path) -> None:
    assert list(metrics.to_silver(reader(), resolve_instances, rows_per_shard=10)) == []


# --- events ----------------------------------------------------------------------------------


def am_alert(
    status: str, fingerprint: str, starts: str, ends: str = "0001-01-01T00:00:00Z", **labels: str
) -> dict[str, object]:
    return {
        "status": status,
        "labels": {"alertname": "NodeHighCPU", "job": "node", **labels},
        "annotations": {"summary": f"{fingerprint} CPU saturated", "description": "busy"}
        if labels.get("severity") == "critical"
        else {},
        "startsAt": starts,
        "endsAt": ends,
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }


def am_payload(status: str, *alerts: dict[str, object]) -> str:
    return json.dumps(
        {
            "receiver": "opslake",
            "status": status,
            "alerts": list(alerts),
            "groupLabels": {"alertname": "NodeHighCPU"},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "version": "4",
            "groupKey": '{}:{alertname="NodeHighCPU"}',
            "truncatedAlerts": 0,
        }
    )


A = am_alert(
    "firing",
    "aaaa000000000001",
    "2026-11-24T03:10:00Z",
    entity_id="vm-0012",
    instance="10.20.1.12:9100",
    severity="critical",
)
# Alerts Prometheus sends carry a provisional endsAt while firing: not an end.
B = am_alert(
    "firing",
    "bbbb000000000002",
    "2026-11-24T03:11:00Z",
    "2026-11-24T03:15:00Z",
    instance="10.20.1.13:9100",
    severity="Warning",
)
A_RESOLVED = {**A, "status": "resolved", "endsAt": "2026-11-24T03:40:00Z"}
C = am_alert("firing", "cccc000000000003", "2026-11-24T05:00:00Z", instance="10.99.9.9:9100")


def events_bronze() -> pa.Table:
    """Two batches: A and B notified, re-sent on repeat_interval, then A resolved."""
    first = "\n".join([am_payload("firing", A, B), am_payload("firing", A, B)])
    second = "\n".join(
        [
            am_payload("firing", A, B),
            am_payload("resolved", A_RESOLVED),
            am_payload("firing", C),
            am_payload("resolved", A_RESOLVED),
        ]
    )
    return pa.concat_tables(
        [
            alertmanager.parse(
                first.encode(), batch("alertmanager", "b1", "2026-11-24T04:00:00+00:00")
            ).table,
            alertmanager.parse(
                second.encode(), batch("alertmanager", "b2", "2026-11-24T06:00:00+00:00")
            ).table,
        ]
    )


def test_events_repeated_notifications_are_deduplicated(resolver: EntityResolver) -> None:
    bronze = events_bronze()
    assert bronze.num_rows == 9
    out = events.to_silver(bronze, resolver)
    assert out.schema == schemas.EVENTS
    rows = out.to_pylist()
    assert [(r["fingerprint"], r["status"]) for r in rows] == [
        ("aaaa000000000001", "firing"),
        ("aaaa000000000001", "resolved"),
        ("bbbb000000000002", "firing"),
        ("cccc000000000003", "firing"),
    ]
    # The first notification of each state is kept.
    assert rows[0]["batch_id"] == "b1" and rows[0]["received_at"] == utc(2026, 11, 24, 4)
    assert rows[1]["batch_id"] == "b2"
    assert len({r["event_id"] for r in rows}) == 4


def test_events_fields_are_conformed(resolver: EntityResolver) -> None:
    rows = {
        (r["fingerprint"][:4], r["status"]): r
        for r in events.to_silver(events_bronze(), resolver).to_pylist()
    }
    a = rows[("aaaa", "firing")]
    assert (a["source"], a["severity"], a["entity_id"]) == ("alertmanager", "critical", "vm-0012")
    assert a["title"] == "aaaa000000000001 CPU saturated" and a["description"] == "busy"
    assert a["starts_at"] == utc(2026, 11, 24, 3, 10)
    assert a["ends_at"] is None  # Go's zero time
    assert rows[("aaaa", "resolved")]["ends_at"] == utc(2026, 11, 24, 3, 40)
    b = rows[("bbbb", "firing")]
    assert b["severity"] == "warning"  # lower-cased
    assert b["title"] == "NodeHighCPU"  # no summary: the alert name
    assert b["entity_id"] == "vm-0013"  # from the instance via the CMDB IP
    assert b["ends_at"] is None  # null while firing
    c = rows[("cccc", "firing")]
    assert c["entity_id"] is None and c["severity"] is None
    assert dict(c["labels"])["instance"] == "10.99.9.9:9100"  # unmapped but kept


def test_events_zero_end_time_from_any_bronze_is_null(resolver: EntityResolver) -> None:
    alert = am_payload("resolved", {**B, "status": "resolved"})
    bronze = alertmanager.parse(alert.encode(), batch("alertmanager", "x")).table
    zero = pa.array([utc(1, 1, 1)] * bronze.num_rows, schemas.TS)
    bronze = bronze.set_column(bronze.schema.get_field_index("ends_at"), "ends_at", zero)
    assert events.to_silver(bronze, resolver).column("ends_at").to_pylist() == [None]


def test_events_are_deterministic(resolver: EntityResolver) -> None:
    bronze = events_bronze()
    out = events.to_silver(bronze, resolver)
    assert out.equals(events.to_silver(shuffled(bronze), resolver))
    assert out.equals(events.to_silver(bronze, resolver))
    # event_id depends only on (fingerprint, starts_at, status).
    ids = dict(
        zip(out.column("fingerprint").to_pylist(), out.column("event_id").to_pylist(), strict=False)
    )
    alone = events.to_silver(
        alertmanager.parse(am_payload("firing", B).encode(), batch("alertmanager", "x")).table,
        resolver,
    )
    assert alone.column("event_id").to_pylist() == [ids["bbbb000000000002"]]


# --- logs ------------------------------------------------------------------------------------

LOG_LINES = [
    '<165>1 2026-11-24T03:15:00Z vm-0012.gov.local nginx 1234 - [meta a="1"] upstream slow',
    "<11>1 2026-11-24T03:14:00Z rogue-box sshd - - - failed password",
    "<30>1 - 10.20.1.13 ntpd - - - no clock",
    "<13>Nov 24 03:15:00 vm-0013 cron[9]: job done",
]


def test_logs_map_hosts_and_keep_unknown_ones(resolver: EntityResolver) -> None:
    bronze = syslog.parse("\n".join(LOG_LINES).encode(), batch("syslog", "s1")).table
    out = logs.to_silver(bronze, resolver)
    assert out.schema == schemas.LOGS
    rows = out.to_pylist()
    assert [(r["host"], r["entity_id"]) for r in rows] == [
        ("rogue-box", None),
        ("vm-0012.gov.local", "vm-0012"),
        ("vm-0013", "vm-0013"),
        ("10.20.1.13", "vm-0013"),
    ]
    nginx = rows[1]
    assert (nginx["severity"], nginx["facility"]) == (5, 20)  # PRI 165 = 20 * 8 + 5
    assert nginx["app"] == "nginx" and nginx["message"] == "upstream slow"
    assert nginx["structured_data"] == '[meta a="1"]'
    assert nginx["source"] == "syslog" and nginx["batch_id"] == "s1"
    assert rows[3]["ts"] == utc(2026, 11, 24, 23)  # NILVALUE time: received time
    assert out.equals(logs.to_silver(shuffled(bronze), resolver))


# --- tickets ---------------------------------------------------------------------------------

TICKET_HEADER = (
    "ticket_id,type,status,priority,business,ci,title,opened_at,acknowledged_at,resolved_at,"
    "closed_at,assignee_group,sla_target_minutes,alert_fingerprint,change_window_start,"
    "change_window_end,change_result"
)
TICKET_CSV = "\n".join(
    [
        TICKET_HEADER,
        *[
            "INC-2,Incident,In_Progress,P1,tax,10.20.1.13,cpu,2026-11-24T03:15:00Z,,,,noc,60,,,,",
            "INC-1,incident,OPEN,P2,tax,vm-0012,disk,2026-11-24T01:00:00Z,,,,noc,240,,,,",
            (
                "CHG-3,CHANGE,Closed,P3,tax,ghost-0001,patch,2026-11-24T02:00:00Z,,,,rel,,,"
                "2026-11-24T02:00:00Z,2026-11-24T03:00:00Z,Failed"
            ),
        ],
    ]
)
TICKET_UPDATE = "\n".join(
    [
        TICKET_HEADER,
        *[
            (
                "INC-1,incident,resolved,P2,tax,vm-0012,disk,2026-11-24T01:00:00Z,2026-11-24T01:05:00Z,"
                "2026-11-24T02:00:00Z,,noc,240,,,,"
            ),
        ],
    ]
)


def test_tickets_are_normalised_and_latest_export_wins(resolver: EntityResolver) -> None:
    bronze = pa.concat_tables(
        [
            itsm.parse(TICKET_CSV.encode(), batch("itsm", "t1", "2026-11-24T12:00:00+00:00")).table,
            itsm.parse(
                TICKET_UPDATE.encode(), batch("itsm", "t2", "2026-11-24T18:00:00+00:00")
            ).table,
        ]
    )
    out = tickets.to_silver(bronze, resolver)
    assert out.schema == schemas.TICKETS
    rows = out.to_pylist()
    assert [r["ticket_id"] for r in rows] == ["INC-1", "CHG-3", "INC-2"]  # by opened_at
    inc1, chg3, inc2 = rows
    assert (inc1["status"], inc1["batch_id"]) == ("resolved", "t2")
    assert inc1["resolved_at"] == utc(2026, 11, 24, 2)
    assert (inc2["type"], inc2["status"], inc2["entity_id"]) == (
        "incident",
        "in_progress",
        "vm-0013",
    )
    assert (chg3["type"], chg3["change_result"]) == ("change", "failed")
    assert chg3["entity_id"] == "ghost-0001"  # unknown ci kept so a check can count it
    assert chg3["sla_target_minutes"] is None and inc1["sla_target_minutes"] == 240
    assert out.equals(tickets.to_silver(shuffled(bronze), resolver))


# --- probes ----------------------------------------------------------------------------------


def test_probes_conform_and_overlapping_batches_count_once() -> None:
    line = (
        '{{"ts": "2026-11-24T03:{m:02d}:00Z", "probe_id": "{p}", "target": "https://x", '
        '"entity_id": "app-tax-portal", "kind": "HTTP", "ok": true, "latency_ms": {m}.5, '
        '"status_code": 200, "error": null}}'
    )
    first = "\n".join(line.format(m=m, p=p) for m in range(3) for p in ("p-b", "p-a"))
    second = "\n".join(line.format(m=m, p="p-a") for m in range(2, 4))
    bronze = pa.concat_tables(
        [
            probes.parse(first.encode(), batch("probes", "p1")).table,
            probes.parse(second.encode(), batch("probes", "p2", "2026-11-24T23:30:00+00:00")).table,
        ]
    )
    out = probes_silver.to_silver(bronze)
    assert out.schema == schemas.PROBES
    keys = [(r["ts"].minute, r["probe_id"], r["batch_id"]) for r in out.to_pylist()]
    assert keys == [
        (0, "p-a", "p1"),
        (0, "p-b", "p1"),
        (1, "p-a", "p1"),
        (1, "p-b", "p1"),
        (2, "p-a", "p1"),
        (2, "p-b", "p1"),
        (3, "p-a", "p2"),
    ]
    assert set(out.column("kind").to_pylist()) == {"http"}
    assert set(out.column("source").to_pylist()) == {"probes"}
    assert out.equals(probes_silver.to_silver(shuffled(bronze)))


# --- CMDB: SCD-2 -----------------------------------------------------------------------------


def cmdb_snapshot(
    day: int,
    cis: list[dict[str, object]],
    relations: list[dict[str, str]],
    batch_id: str | None = None,
) -> cmdb.CmdbSnapshot:
    doc = {"exported_at": f"2026-11-{day:02d}T23:59:00Z", "cis": cis, "relations": relations}
    return cmdb.parse_snapshot(
        json.dumps(doc).encode(),
        seal=SEAL,
        batch=batch(
            "cmdb",
            batch_id or f"cmdb-{day}",
            f"2026-11-{day:02d}T23:59:30+00:00",
            f"2026-11-{day:02d}",
        ),
    )


def ci(entity_id: str, ip: str, updated_at: str | None, **fields: str) -> dict[str, object]:
    return {
        "entity_id": entity_id,
        "kind": "cloud",
        "type": "vm",
        "name": f"{entity_id}.gov.local",
        "ip": ip,
        "lifecycle_state": "in_service",
        "purchase_date": "2023-05-01",
        "owner_contact": "ops@gov.example",
        "updated_at": updated_at,
        **fields,
    }


RUNS = {"src": "vm-1", "relation": "runs_on", "dst": "host-1"}
DEPENDS = {"src": "app-1", "relation": "depends_on", "dst": "vm-1"}
OLD = "2026-10-01T00:00:00Z"
SNAPSHOTS = [
    # 20th: both VMs and both relations.
    cmdb_snapshot(20, [ci("vm-1", "10.0.0.1", OLD), ci("vm-2", "10.0.0.2", OLD)], [RUNS, DEPENDS]),
    # 21st: vm-1 re-addressed (updated_at in between snapshots); DEPENDS gone.
    cmdb_snapshot(
        21, [ci("vm-1", "10.0.0.9", "2026-11-21T08:00:00Z"), ci("vm-2", "10.0.0.2", OLD)], [RUNS]
    ),
    # 22nd: vm-2 missing; vm-1 unchanged; no relations at all.
    cmdb_snapshot(22, [ci("vm-1", "10.0.0.9", "2026-11-21T08:00:00Z")], []),
    # 23rd: vm-2 back unchanged with its stale updated_at; vm-1 changes with an updated_at
    # that is not credible (after the export), so the export time is used.
    cmdb_snapshot(
        23,
        [
            ci("vm-1", "10.0.0.9", "2026-12-01T00:00:00Z", lifecycle_state="retiring"),
            ci("vm-2", "10.0.0.2", OLD),
        ],
        [RUNS, DEPENDS],
    ),
]


def exported(day: int) -> datetime:
    return utc(2026, 11, day, 23, 59)


def assets_up_to(day: int) -> pa.Table:
    return pa.concat_tables([s.cis.table for s in SNAPSHOTS[: day - 19]])


def test_scd2_assets_change_removal_and_reappearance() -> None:
    out = cmdb_silver.to_silver_assets(assets_up_to(23))
    assert out.schema == schemas.ASSETS
    got = [
        (r["entity_id"], r["ip"], r["lifecycle_state"], r["valid_from"], r["valid_to"])
        for r in out.to_pylist()
    ]
    assert got == [
        # First version starts at updated_at (credible: no export before the 20th).
        ("vm-1", "10.0.0.1", "in_service", utc(2026, 10, 1), utc(2026, 11, 21, 8)),
        # Change: starts at updated_at, which lies between the two exports.
        ("vm-1", "10.0.0.9", "in_service", utc(2026, 11, 21, 8), exported(23)),
        # updated_at after the export is not credible: the export time is used.
        ("vm-1", "10.0.0.9", "retiring", exported(23), None),
        # Removal: ends at the first export without it.
        ("vm-2", "10.0.0.2", "in_service", utc(2026, 10, 1), exported(22)),
        # Reappearance: a new version from the export that shows it again.
        ("vm-2", "10.0.0.2", "in_service", exported(23), None),
    ]
    row = out.to_pylist()[0]
    assert CIPHER.decrypt(row["owner_contact_sm4"], OWNER_CONTACT) == "ops@gov.example"
    assert str(row["purchase_date"]) == "2023-05-01"


def test_scd2_assets_a_key_rotation_is_not_a_change_once_resealed() -> None:
    # Day 20 was sealed under an old key, days 21-23 under the new one (CIPHER).
    old = FieldCipher(OLD_KEY)
    rotated = FieldCipher(KEY, previous=[OLD_KEY])
    day20 = cmdb.parse_snapshot(
        json.dumps(
            {
                "exported_at": "2026-11-20T23:59:00Z",
                "cis": [ci("vm-1", "10.0.0.1", OLD), ci("vm-2", "10.0.0.2", OLD)],
            }
        ).encode(),
        batch("cmdb", "cmdb-20", "2026-11-20T23:59:30+00:00", "2026-11-20"),
        seal=sealer(old),
    ).cis.table
    bronze = pa.concat_tables([day20, *(s.cis.table for s in SNAPSHOTS[1:])])
    column = bronze.schema.get_field_index("owner_contact_sm4")
    resealed = bronze.set_column(
        column, "owner_contact_sm4", reseal(bronze["owner_contact_sm4"], OWNER_CONTACT, rotated)
    )
    assert resealed.equals(assets_up_to(23))
    assert cmdb_silver.to_silver_assets(resealed).equals(
        cmdb_silver.to_silver_assets(assets_up_to(23))
    )
    # Without re-sealing, the rotation would read as a changed contact on the 21st.
    assert (
        cmdb_silver.to_silver_assets(bronze).num_rows
        > cmdb_silver.to_silver_assets(resealed).num_rows
    )
    # Current-key tokens are passed on untouched; a clear value is refused.
    same = bronze["owner_contact_sm4"].slice(2)
    assert reseal(same, OWNER_CONTACT, rotated) is same
    with pytest.raises(SecurityError):
        reseal(pa.array(["ops@gov.example"]), OWNER_CONTACT, rotated)


def test_scd2_assets_partition_shows_history_as_of_its_day() -> None:
    out = cmdb_silver.to_silver_assets(assets_up_to(22))
    got = [(r["entity_id"], r["ip"], r["valid_to"]) for r in out.to_pylist()]
    assert got == [
        ("vm-1", "10.0.0.1", utc(2026, 11, 21, 8)),
        ("vm-1", "10.0.0.9", None),
        ("vm-2", "10.0.0.2", exported(22)),
    ]
    first_day = cmdb_silver.to_silver_assets(assets_up_to(20))
    assert first_day.column("valid_to").null_count == 2


def test_scd2_unchanged_snapshots_and_duplicate_deliveries_add_no_versions() -> None:
    same = [cmdb_snapshot(day, [ci("vm-1", "10.0.0.1", OLD)], [RUNS]) for day in (20, 21, 22)]
    again = cmdb_snapshot(21, [ci("vm-1", "10.0.0.1", OLD)], [RUNS], batch_id="cmdb-21-resent")
    bronze = pa.concat_tables([s.cis.table for s in [*same, again]])
    out = cmdb_silver.to_silver_assets(bronze)
    assert [(r["entity_id"], r["valid_from"], r["valid_to"]) for r in out.to_pylist()] == [
        ("vm-1", utc(2026, 10, 1), None)
    ]


def test_scd2_relations_from_export_times() -> None:
    rels = pa.concat_tables([s.relations.table for s in SNAPSHOTS])
    times = sorted(
        set(pa.concat_tables([s.cis.table for s in SNAPSHOTS]).column("exported_at").to_pylist())
    )
    out = cmdb_silver.to_silver_relations(rels, times)
    assert out.schema == schemas.RELATIONS_SCHEMA
    got = [
        (r["src_entity_id"], r["relation"], r["dst_entity_id"], r["valid_from"], r["valid_to"])
        for r in out.to_pylist()
    ]
    assert got == [
        ("app-1", "depends_on", "vm-1", exported(20), exported(21)),
        ("app-1", "depends_on", "vm-1", exported(23), None),
        # The 22nd's export listed no relations at all, which ends RUNS there.
        ("vm-1", "runs_on", "host-1", exported(20), exported(22)),
        ("vm-1", "runs_on", "host-1", exported(23), None),
    ]
    # Without the export times an empty relations list is invisible.
    unaware = cmdb_silver.to_silver_relations(rels)
    assert unaware.num_rows == 3


def test_scd2_is_deterministic_and_generic() -> None:
    bronze = assets_up_to(23)
    out = cmdb_silver.to_silver_assets(bronze)
    assert out.equals(cmdb_silver.to_silver_assets(shuffled(bronze)))
    assert out.equals(cmdb_silver.to_silver_assets(bronze))
    frame = pl.DataFrame(
        {"exported_at": [utc(2026, 1, d) for d in (1, 2, 3)], "k": ["x", "x", "x"], "v": [1, 2, 2]}
    )
    versions = cmdb_silver.scd2(frame, ["k"], ["v"])
    assert versions.rows() == [
        ("x", 1, utc(2026, 1, 1), utc(2026, 1, 2)),
        ("x", 2, utc(2026, 1, 2), None),
    ]
    empty = cmdb_silver.to_silver_assets(cmdb.BRONZE_SCHEMA.empty_table())
    assert empty.schema == schemas.ASSETS and empty.num_rows == 0
    empty_rel = cmdb_silver.to_silver_relations(cmdb.RELATIONS_BRONZE_SCHEMA.empty_table())
    assert empty_rel.schema == schemas.RELATIONS_SCHEMA and empty_rel.num_rows == 0


def test_resolver_from_conformed_assets() -> None:
    resolver = EntityResolver(cmdb_silver.to_silver_assets(assets_up_to(23)))
    assert resolver.resolve(
        pl.Series(["10.0.0.9:9100", "10.0.0.1", "vm-2.gov.local"])
    ).to_list() == ["vm-1", None, "vm-2"]
    # As of the 20th, the old address still pointed at vm-1.
    then = EntityResolver(cmdb_silver.to_silver_assets(assets_up_to(23)), as_of=exported(20))
    assert then.resolve(pl.Series(["10.0.0.1"])).to_list() == ["vm-1"]


@pytest.mark.parametrize(
    ("conform", "bronze", "silver"),
    [
        (lambda t, r: events.to_silver(t, r), alertmanager.BRONZE_SCHEMA, schemas.EVENTS),
        (lambda t, r: logs.to_silver(t, r), syslog.BRONZE_SCHEMA, schemas.LOGS),
        (lambda t, r: tickets.to_silver(t, r), itsm.BRONZE_SCHEMA, schemas.TICKETS),
        (lambda t, r: probes_silver.to_silver(t), probes.BRONZE_SCHEMA, schemas.PROBES),
    ],
)
def test_empty_day_gives_empty_silver_with_the_contract_schema(
    conform, bronze: pa.Schema, silver: pa.Schema, resolver: EntityResolver
) -> None:
    out = conform(bronze.empty_table(), resolver)
    assert out.schema == silver and out.num_rows == 0


def test_spills_of_a_killed_sort_are_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    host = socket.gethostname()
    killed = tmp_path / f"{metrics.SPILL_PREFIX}{host}_{dead}.x_y1z"
    mine = tmp_path / f"{metrics.SPILL_PREFIX}{host}_{os.getpid()}.a_b2c"
    for directory in (killed, mine):
        directory.mkdir()
        (directory / "shard-0.arrow").write_bytes(b"spilled")
    assert metrics.sweep_spills(tmp_path) == 1
    assert not killed.exists() and mine.exists()
