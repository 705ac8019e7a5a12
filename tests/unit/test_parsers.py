"""Parsers: real samples of each raw format → bronze rows, bad lines → rejects with reasons."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from opslake.ingest.parsers import ParseResult, alertmanager, cmdb, itsm, probes, syslog
from opslake.lake.landing import LandedBatch
from opslake.security.crypto import FieldCipher
from opslake.security.fields import OWNER_CONTACT, sealer

CIPHER = FieldCipher(bytes(range(16)))
SEAL = sealer(CIPHER)


def batch(
    source: str,
    batch_id: str = "b-001",
    dt: str = "2026-11-24",
    received: str = "2026-11-24T23:00:00+00:00",
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


# --- Alertmanager ----------------------------------------------------------------------------

# Exactly the shape Alertmanager 0.27 POSTs to a webhook receiver (version 4), one per line.
AM_FIRING = {
    "receiver": "opslake",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "NodeHighCPU",
                "entity_id": "vm-0012",
                "instance": "10.20.1.12:9100",
                "job": "node",
                "severity": "critical",
            },
            "annotations": {
                "description": "CPU busy above 90% for 10 minutes.",
                "summary": "vm-0012 CPU saturated",
            },
            "startsAt": "2026-11-24T03:10:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=node_cpu_utilisation_ratio"
            "+%3E+0.9&g0.tab=1",
            "fingerprint": "5f2a1c9e8b7d6a43",
        },
        {
            "status": "firing",
            "labels": {
                "alertname": "NodeHighCPU",
                "instance": "10.20.1.13:9100",
                "job": "node",
                "severity": "warning",
            },
            "annotations": {},
            "startsAt": "2026-11-24T03:11:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
            "fingerprint": "0a1b2c3d4e5f6789",
        },
    ],
    "groupLabels": {"alertname": "NodeHighCPU"},
    "commonLabels": {"alertname": "NodeHighCPU", "job": "node"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "version": "4",
    "groupKey": '{}:{alertname="NodeHighCPU"}',
    "truncatedAlerts": 0,
}


def test_alertmanager_payload_becomes_one_row_per_alert() -> None:
    data = (json.dumps(AM_FIRING) + "\n").encode()
    result = alertmanager.parse(data, batch("alertmanager"))
    assert result.rejects == []
    assert result.table.schema == alertmanager.BRONZE_SCHEMA
    rows = result.table.to_pylist()
    assert len(rows) == 2
    first = rows[0]
    assert first["receiver"] == "opslake"
    assert first["group_key"] == '{}:{alertname="NodeHighCPU"}'
    assert first["payload_status"] == "firing"
    assert first["version"] == "4"
    assert first["truncated_alerts"] == 0
    assert first["group_labels"] == [("alertname", "NodeHighCPU")]
    assert dict(first["labels"])["severity"] == "critical"
    assert dict(first["annotations"])["summary"] == "vm-0012 CPU saturated"
    assert first["starts_at"] == utc(2026, 11, 24, 3, 10, 0, 123456)  # ns truncated to µs
    assert first["ends_at"] is None  # Go's zero time: not set
    assert first["fingerprint"] == "5f2a1c9e8b7d6a43"
    assert first["batch_id"] == "b-001"
    assert first["received_at"] == utc(2026, 11, 24, 23)
    assert first["line_no"] == 1
    # Map keys are sorted so the same payload always gives the same bytes.
    assert [k for k, _ in first["labels"]] == sorted(k for k, _ in first["labels"])


def test_alertmanager_bad_payloads_and_alerts_are_rejected_good_ones_kept() -> None:
    bad_alert = {**AM_FIRING["alerts"][0], "fingerprint": None}
    mixed = {**AM_FIRING, "alerts": [bad_alert, AM_FIRING["alerts"][1]]}
    lines = [
        json.dumps(mixed),
        "{not json",
        json.dumps({**AM_FIRING, "version": "3"}),
        json.dumps({**AM_FIRING, "alerts": "none"}),
        json.dumps({**AM_FIRING, "alerts": [{**AM_FIRING["alerts"][1], "startsAt": "yesterday"}]}),
        "",
        json.dumps(AM_FIRING),
    ]
    result = alertmanager.parse("\n".join(lines).encode(), batch("alertmanager"))
    assert [r["line_no"] for r in result.table.to_pylist()] == [1, 7, 7]
    reasons = {r.line_no: r.reason for r in result.rejects}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "alerts[0]" in reasons[1] and "fingerprint" in reasons[1]
    assert "not JSON" in reasons[2]
    assert "version" in reasons[3] and "'3'" in reasons[3]
    assert "alerts" in reasons[4] and "array" in reasons[4]
    assert "startsAt" in reasons[5] and "yesterday" in reasons[5]
    # A rejected alert keeps its own JSON as the raw text, a rejected payload its line.
    assert json.loads(next(r.raw for r in result.rejects if r.line_no == 1)) == bad_alert
    assert next(r.raw for r in result.rejects if r.line_no == 2) == "{not json"


def test_alertmanager_non_utf8_line_is_rejected_alone() -> None:
    data = json.dumps(AM_FIRING).encode() + b"\n\xff\xfe{}\n" + json.dumps(AM_FIRING).encode()
    result = alertmanager.parse(data, batch("alertmanager"))
    assert result.table.num_rows == 4
    assert [(r.line_no, "UTF-8" in r.reason) for r in result.rejects] == [(2, True)]


# --- syslog ----------------------------------------------------------------------------------

SYSLOG_LINES = [
    # RFC 5424 with structured data (escaped quote and bracket) and a BOM before MSG.
    (
        "<165>1 2026-11-24T03:15:00.003+08:00 vm-0012.gov.local nginx 1234 ID47 "
        '[exampleSDID@32473 iut="3" eventSource="App\\"li\\]cation"][origin ip="10.20.1.12"] '
        "\ufeffupstream timed out"
    ),
    "<34>1 2026-11-24T03:16:00Z fw-0001.gov.local - - - - ",
    "<30>1 - switch-07 ntpd 88 - - clock unsynchronised",
    "<13>Nov 24 03:17:05 mymachine su[123]: 'su root' failed for lonvick on /dev/pts/8",
    "<13>Nov  4 00:00:01 mymachine kernel message without tag",
    "<999>1 2026-11-24T03:15:00Z h a - - - pri too large",
    "<34>2 2026-11-24T03:15:00Z h a - - - version two",
    "<34>1 2026-13-24T03:15:00Z h a - - - month 13",
    "<34>1 2026-11-24T03:15:00Z h a - - [unterminated sd",
    "plain garbage",
    "",
]
SYSLOG = "\n".join(SYSLOG_LINES)


def test_syslog_rfc5424_and_rfc3164_lines_parse() -> None:
    result = syslog.parse(SYSLOG.encode(), batch("syslog"))
    assert result.table.schema == syslog.BRONZE_SCHEMA
    rows = {r["line_no"]: r for r in result.table.to_pylist()}
    assert sorted(rows) == [1, 2, 3, 4, 5]
    first = rows[1]
    assert (first["format"], first["pri"], first["version"]) == ("rfc5424", 165, 1)
    assert first["ts"] == utc(2026, 11, 23, 19, 15, 0, 3000)
    assert (first["hostname"], first["app_name"], first["procid"], first["msgid"]) == (
        "vm-0012.gov.local",
        "nginx",
        "1234",
        "ID47",
    )
    assert first["structured_data"] == (
        '[exampleSDID@32473 iut="3" eventSource="App\\"li\\]cation"][origin ip="10.20.1.12"]'
    )
    assert first["message"] == "upstream timed out"
    assert rows[2]["app_name"] is None and rows[2]["structured_data"] is None
    assert rows[2]["message"] == ""
    assert rows[3]["ts"] is None  # NILVALUE timestamp: the conformer uses received_at
    legacy = rows[4]
    assert (legacy["format"], legacy["pri"], legacy["version"]) == ("rfc3164", 13, None)
    assert legacy["ts"] == utc(2026, 11, 24, 3, 17, 5)
    assert (legacy["hostname"], legacy["app_name"], legacy["procid"]) == ("mymachine", "su", "123")
    assert legacy["message"] == "'su root' failed for lonvick on /dev/pts/8"
    assert rows[5]["app_name"] is None and rows[5]["ts"] == utc(2026, 11, 4, 0, 0, 1)
    assert rows[5]["message"] == "kernel message without tag"


def test_syslog_bad_lines_become_rejects_with_reasons() -> None:
    result = syslog.parse(SYSLOG.encode(), batch("syslog"))
    reasons = {r.line_no: r.reason for r in result.rejects}
    assert sorted(reasons) == [6, 7, 8, 9, 10]  # the trailing blank line is not a reject
    assert "PRI 999" in reasons[6]
    assert "VERSION is 2" in reasons[7]
    assert "2026-13-24T03:15:00Z" in reasons[8]
    assert "malformed RFC 5424" in reasons[9]
    assert "not a syslog line" in reasons[10]
    assert next(r.raw for r in result.rejects if r.line_no == 10) == "plain garbage"


def test_syslog_rfc3164_december_line_in_january_batch_is_last_year() -> None:
    data = b"<13>Dec 31 23:59:59 host app: late\n<13>Jan  1 00:00:02 host app: early\n"
    result = syslog.parse(data, batch("syslog", dt="2027-01-01"))
    assert result.table.column("ts").to_pylist() == [
        utc(2026, 12, 31, 23, 59, 59),
        utc(2027, 1, 1, 0, 0, 2),
    ]


def test_syslog_large_batch_parses_vectorised() -> None:
    line = "<14>1 2026-11-24T{h:02d}:{m:02d}:00Z vm-{i:04d}.gov.local app - - - message {i}"
    lines = [line.format(h=i % 24, m=i % 60, i=i) for i in range(50_000)] + ["junk"]
    result = syslog.parse("\n".join(lines).encode(), batch("syslog"))
    assert result.table.num_rows == 50_000
    assert [r.line_no for r in result.rejects] == [50_001]


# --- ITSM ------------------------------------------------------------------------------------

ITSM_HEADER = (
    "ticket_id,type,status,priority,business,ci,title,opened_at,acknowledged_at,"
    "resolved_at,closed_at,assignee_group,sla_target_minutes,alert_fingerprint,"
    "change_window_start,change_window_end,change_result"
)
ITSM_LINES = [
    "\ufeff" + ITSM_HEADER,
    (
        'INC-0001,Incident,Resolved,P1,tax,vm-0012,"CPU saturated, portal slow",'
        "2026-11-24T03:15:00Z,2026-11-24T03:20:00Z,2026-11-24T04:00:00Z,,noc,60,"
        "5f2a1c9e8b7d6a43,,,"
    ),
    (
        'CHG-0002,change,closed,P3,tax,app-tax-portal,"Deploy ""v2""\nwith a note",'
        "2026-11-24T01:00:00Z,,,2026-11-24T03:00:00Z,release,,,2026-11-24T01:00:00Z,"
        "2026-11-24T02:00:00Z,successful"
    ),
    "REQ-0003,request,open,P4,hr,vm-0013,bad time,24/11/2026 03:15,,,,desk,480,,,,",
    "INC-0004,outage,open,P1,hr,vm-0013,bad type,2026-11-24T05:00:00Z,,,,noc,60,,,,",
    "INC-0005,incident,open,P1,hr,vm-0013,too few fields",
    "INC-0006,incident,open,P2,hr,vm-0013,bad sla,2026-11-24T05:00:00Z,,,,noc,soon,,,,",
    ",incident,open,P2,hr,vm-0013,no id,2026-11-24T05:00:00Z,,,,noc,30,,,,",
    "",
]
ITSM = "\r\n".join(ITSM_LINES)


def test_itsm_csv_rows_parse_with_quoted_fields() -> None:
    result = itsm.parse(ITSM.encode(), batch("itsm"))
    assert result.table.schema == itsm.BRONZE_SCHEMA
    rows = {r["ticket_id"]: r for r in result.table.to_pylist()}
    assert sorted(rows) == ["CHG-0002", "INC-0001"]
    inc = rows["INC-0001"]
    assert inc["title"] == "CPU saturated, portal slow"
    assert inc["type"] == "Incident"  # kept as exported; the conformer lower-cases
    assert inc["opened_at"] == utc(2026, 11, 24, 3, 15)
    assert inc["closed_at"] is None
    assert inc["sla_target_minutes"] == 60
    assert inc["alert_fingerprint"] == "5f2a1c9e8b7d6a43"
    assert inc["line_no"] == 2
    chg = rows["CHG-0002"]
    assert chg["title"] == 'Deploy "v2"\nwith a note'
    assert chg["change_window_end"] == utc(2026, 11, 24, 2)
    assert chg["change_result"] == "successful"
    assert chg["sla_target_minutes"] is None


def test_itsm_bad_rows_are_rejected_with_line_numbers() -> None:
    result = itsm.parse(ITSM.encode(), batch("itsm"))
    reasons = {r.line_no: r.reason for r in result.rejects}
    # CHG-0002 spans lines 3-4, so the bad rows start at line 5.
    assert sorted(reasons) == [5, 6, 7, 8, 9]
    assert "opened_at" in reasons[5] and "24/11/2026 03:15" in reasons[5]
    assert "type" in reasons[6] and "outage" in reasons[6]
    assert "7 fields" in reasons[7] and "17" in reasons[7]
    assert "sla_target_minutes" in reasons[8]
    assert "ticket_id" in reasons[9]
    assert next(r.raw for r in result.rejects if r.line_no == 7) == (
        "INC-0005,incident,open,P1,hr,vm-0013,too few fields"
    )


def test_itsm_header_without_needed_columns_rejects_the_batch() -> None:
    result = itsm.parse(b"id,kind\n1,incident\n", batch("itsm"))
    assert result.table.num_rows == 0
    assert result.table.schema == itsm.BRONZE_SCHEMA
    assert [r.line_no for r in result.rejects] == [0]
    assert "ticket_id" in result.rejects[0].reason


def test_itsm_columns_matched_by_name_and_empty_export_is_empty() -> None:
    columns = ITSM_HEADER.split(",")
    row = "INC-9,incident,open,P2,tax,vm-1,t,2026-11-24T05:00:00Z,,,,noc,30,,,,"
    reordered = ",".join(reversed(columns)) + "\n" + ",".join(reversed(row.split(",")))
    result = itsm.parse(reordered.encode(), batch("itsm"))
    assert result.rejects == []
    assert result.table.column("ticket_id").to_pylist() == ["INC-9"]
    empty = itsm.parse(b"", batch("itsm"))
    assert empty.table.schema == itsm.BRONZE_SCHEMA and empty.rejects == []


# --- CMDB ------------------------------------------------------------------------------------


def cmdb_ci(entity_id: str, **fields: object) -> dict[str, object]:
    ci: dict[str, object] = {
        "entity_id": entity_id,
        "kind": "cloud",
        "type": "vm",
        "name": f"{entity_id}.gov.local",
        "department": "Digital Office",
        "business": "tax",
        "region": "north",
        "location": "dc-1",
        "vendor": "Inspur",
        "model": "NF5280",
        "serial": "SN123",
        "ip": "10.20.1.12",
        "lifecycle_state": "in_service",
        "purchase_date": "2023-05-01",
        "warranty_end": "2027-05-01",
        "contract_end": "2026-12-31",
        "licence_end": None,
        "owner": "Li Wei",
        "owner_contact": "li.wei@gov.example",
        "updated_at": "2026-11-24T08:00:00Z",
    }
    ci.update(fields)
    return ci


CMDB_DOC = {
    "exported_at": "2026-11-24T23:59:00Z",
    "cis": [
        cmdb_ci("vm-0012"),
        cmdb_ci("host-0003", kind="cloud", type="host", ip="10.20.0.3"),
        cmdb_ci("vm-0099", kind="spaceship"),
        cmdb_ci("vm-0012", ip="10.9.9.9"),
        cmdb_ci("vm-0100", warranty_end="31/12/2027"),
        "not an object",
        cmdb_ci("vm-0101", serial=12345),
    ],
    "relations": [
        {"src": "vm-0012", "relation": "runs_on", "dst": "host-0003"},
        {"src": "vm-0012", "relation": "likes", "dst": "host-0003"},
        {"src": "vm-0012", "relation": "runs_on"},
    ],
}


def parse_cis(data: bytes, b: LandedBatch) -> ParseResult:
    return cmdb.parse(data, b, seal=SEAL)


def test_cmdb_export_gives_cis_and_relations() -> None:
    data = json.dumps(CMDB_DOC).encode()
    snapshot = cmdb.parse_snapshot(data, batch("cmdb"), seal=SEAL)
    cis = snapshot.cis.table
    assert cis.schema == cmdb.BRONZE_SCHEMA
    assert cis.column("entity_id").to_pylist() == ["vm-0012", "host-0003", "vm-0101"]
    first = cis.to_pylist()[0]
    assert first["exported_at"] == utc(2026, 11, 24, 23, 59)
    assert first["purchase_date"] == date(2023, 5, 1)
    assert first["licence_end"] is None
    assert first["updated_at"] == utc(2026, 11, 24, 8)
    assert cis.column("serial").to_pylist()[2] == "12345"  # numeric serials kept as text
    rels = snapshot.relations.table
    assert rels.schema == cmdb.RELATIONS_BRONZE_SCHEMA
    assert rels.select(["src", "relation", "dst"]).to_pylist() == [
        {"src": "vm-0012", "relation": "runs_on", "dst": "host-0003"}
    ]
    assert cmdb.parse(data, batch("cmdb"), seal=SEAL).table.equals(cis)
    assert cmdb.parse_relations(data, batch("cmdb")).table.equals(rels)


def test_cmdb_contacts_are_sealed_in_bronze_and_in_the_quarantine_copy() -> None:
    doc = {
        "exported_at": "2026-11-24T23:59:00Z",
        "cis": [
            cmdb_ci("vm-1", owner_contact="13812345678"),
            cmdb_ci(
                "vm-2",
                kind="spaceship",
                owner_contact="13900001111",
                owner_email="wang.fang@gov.example",
                mobile=13700002222,
            ),
            cmdb_ci("vm-3", owner_contact=None),
        ],
    }
    data = json.dumps(doc).encode()
    result = cmdb.parse(data, batch("cmdb"), seal=SEAL)
    tokens = result.table.column("owner_contact_sm4").to_pylist()
    assert tokens[0].startswith("sm4gcm:v1:") and tokens[1] is None
    assert CIPHER.decrypt(tokens[0], OWNER_CONTACT) == "13812345678"
    # Deterministic: parsing the same export again writes the same token.
    assert cmdb.parse(data, batch("cmdb"), seal=SEAL).table.equals(result.table)
    [reject] = result.rejects
    raw = json.loads(reject.raw)
    assert raw["kind"] == "spaceship" and raw["owner"] == "Li Wei"  # still inspectable
    for clear in ("13900001111", "wang.fang@gov.example", "13700002222"):
        assert clear not in reject.raw
    assert CIPHER.decrypt(raw["owner_contact"], OWNER_CONTACT) == "13900001111"
    assert CIPHER.decrypt(raw["owner_email"], "cmdb.owner_email") == "wang.fang@gov.example"
    unreadable = cmdb.parse(b'{"cis": [{"owner_contact": "13812345678"', batch("cmdb"), seal=SEAL)
    assert "13812345678" not in unreadable.rejects[0].raw
    assert "landing object" in unreadable.rejects[0].raw


def test_cmdb_bad_records_are_rejected_with_their_position() -> None:
    snapshot = cmdb.parse_snapshot(json.dumps(CMDB_DOC).encode(), batch("cmdb"), seal=SEAL)
    reasons = {r.line_no: r.reason for r in snapshot.cis.rejects}
    assert sorted(reasons) == [3, 4, 5, 6]
    assert "cis[2]" in reasons[3] and "spaceship" in reasons[3]
    assert "duplicate" in reasons[4] and "cis[0]" in reasons[4]
    assert "warranty_end" in reasons[5] and "31/12/2027" in reasons[5]
    assert "object" in reasons[6]
    assert (
        json.loads(next(r.raw for r in snapshot.cis.rejects if r.line_no == 3))["kind"]
        == "spaceship"
    )
    rel = {r.line_no: r.reason for r in snapshot.relations.rejects}
    assert sorted(rel) == [2, 3]
    assert "relations[1]" in rel[2] and "likes" in rel[2]
    assert "dst" in rel[3]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xfe not utf-8", "UTF-8"),
        (b'{"cis": [', "cannot be read"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"cis": [], "relations": []}).encode(), "exported_at"),
        (json.dumps({"exported_at": "2026-11-24T23:59:00Z", "cis": {}}).encode(), "'cis'"),
    ],
)
def test_cmdb_unreadable_document_is_one_reject_at_line_zero(data: bytes, expected: str) -> None:
    snapshot = cmdb.parse_snapshot(data, batch("cmdb"), seal=SEAL)
    assert snapshot.cis.table.schema == cmdb.BRONZE_SCHEMA
    assert snapshot.relations.table.schema == cmdb.RELATIONS_BRONZE_SCHEMA
    assert snapshot.cis.table.num_rows == snapshot.relations.table.num_rows == 0
    assert [r.line_no for r in snapshot.cis.rejects] == [0]
    assert expected in snapshot.cis.rejects[0].reason
    assert snapshot.relations.rejects == []  # reported once, with the CIs


# --- probes ----------------------------------------------------------------------------------

PROBE_LINES = [
    (
        '{"ts": "2026-11-24T03:15:00Z", "probe_id": "http-app-tax-portal", '
        '"target": "https://tax.gov.example/health", "entity_id": "app-tax-portal", '
        '"kind": "http", "ok": true, "latency_ms": 182.4, "status_code": 200, "error": null}'
    ),
    (
        '{"ts": "2026-11-24T03:15:00Z", "probe_id": "tcp-db-0001", "target": "10.20.3.1:5432", '
        '"entity_id": "db-0001", "kind": "tcp", "ok": false, "latency_ms": null, '
        '"status_code": null, "error": "connection refused"}'
    ),
    '{"ts": "2026-11-24T03:16:00Z", "probe_id": "http-x", "ok": "yes"}',
    '{"probe_id": "http-x", "ok": true}',
    '{"ts": "2026-11-24T03:16:00Z", "probe_id": "http-x", "ok": true, "latency_ms": -1}',
    "[1, 2, 3]",
    '{"ts": "2026-11-24T03:16:00Z", "probe_id": ',
]
PROBES = "\n".join(PROBE_LINES)


def test_probes_parse_and_bad_lines_are_rejected() -> None:
    result = probes.parse(PROBES.encode(), batch("probes"))
    assert result.table.schema == probes.BRONZE_SCHEMA
    rows = result.table.to_pylist()
    assert [r["probe_id"] for r in rows] == ["http-app-tax-portal", "tcp-db-0001"]
    assert rows[0]["ok"] is True and rows[0]["latency_ms"] == 182.4
    assert rows[0]["status_code"] == 200
    assert rows[1]["ok"] is False and rows[1]["status_code"] is None
    assert rows[1]["error"] == "connection refused"
    reasons = {r.line_no: r.reason for r in result.rejects}
    assert sorted(reasons) == [3, 4, 5, 6, 7]
    assert "'ok'" in reasons[3]
    assert "'ts'" in reasons[4]
    assert "latency_ms" in reasons[5]
    assert "object" in reasons[6]
    assert "not JSON" in reasons[7]


# --- all parsers -----------------------------------------------------------------------------

PARSERS = [
    (alertmanager.parse, alertmanager.BRONZE_SCHEMA),
    (syslog.parse, syslog.BRONZE_SCHEMA),
    (itsm.parse, itsm.BRONZE_SCHEMA),
    (parse_cis, cmdb.BRONZE_SCHEMA),
    (cmdb.parse_relations, cmdb.RELATIONS_BRONZE_SCHEMA),
    (probes.parse, probes.BRONZE_SCHEMA),
]


@pytest.mark.parametrize(("parse", "schema"), PARSERS)
@pytest.mark.parametrize("data", [b"", b"\n\n", b"\x00\xff garbage\n", b"garbage"])
def test_every_parser_returns_its_schema_and_never_raises(
    parse, schema: pa.Schema, data: bytes
) -> None:
    result = parse(data, batch("any"))
    assert result.table.schema == schema
    assert result.table.column("batch_id").type == pa.string()
    for reject in result.rejects:
        assert reject.line_no >= 0 and reject.reason


@pytest.mark.parametrize(
    ("parse", "sample"),
    [
        (alertmanager.parse, json.dumps(AM_FIRING)),
        (syslog.parse, SYSLOG),
        (itsm.parse, ITSM),
        (parse_cis, json.dumps(CMDB_DOC)),
        (probes.parse, PROBES),
    ],
)
def test_every_parser_is_deterministic(parse, sample: str) -> None:
    first, second = (parse(sample.encode(), batch("any")) for _ in range(2))
    assert first.table.equals(second.table)
    assert first.rejects == second.rejects
