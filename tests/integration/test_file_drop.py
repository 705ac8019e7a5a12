"""CMDB and ITSM exports dropped in a folder (CSV, JSON, XML) reach silver."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from opslake.ingest.connectors.file_drop import CmdbFileDrop, ItsmFileDrop
from opslake.lake import quarantine
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.settings import Settings

CMDB_XML = """<?xml version="1.0" encoding="UTF-8"?>
<cmdb exported_at="{now}">
  <ci><entity_id>vm-0001</entity_id><kind>cloud</kind><type>vm</type>
      <name>vm-0001.gov.local</name><department>大数据局</department><business>政务服务网</business>
      <ip>10.0.0.1</ip><lifecycle_state>in_service</lifecycle_state>
      <warranty_end>2027-05-01</warranty_end><updated_at>{now}</updated_at></ci>
  <ci><entity_id>host-0001</entity_id><kind>cloud</kind><type>host</type>
      <name>host-0001.gov.local</name><lifecycle_state>in_service</lifecycle_state></ci>
  <relation src="vm-0001" relation="runs_on" dst="host-0001"/>
</cmdb>
"""

TICKET = {
    "ticket_id": "INC-1",
    "type": "incident",
    "status": "resolved",
    "priority": "P2",
    "business": "政务服务网",
    "ci": "vm-0001",
    "title": "portal slow",
    "opened_at": "{now}",
    "acknowledged_at": "{now}",
    "resolved_at": "{now}",
    "sla_target_minutes": 240,
}

TICKETS_XML = """<tickets><ticket><ticket_id>CHG-7</ticket_id><type>change</type>
<status>closed</status><ci>vm-0001</ci><opened_at>{now}</opened_at>
<change_result>failed</change_result></ticket></tickets>"""


def _settle(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (0, 0))  # old enough to count as completely written


def test_dropped_exports_are_landed_once_moved_aside_and_reach_silver(tmp_path: Path) -> None:
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path / "lake")})
    zone = LandingZone.from_settings(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    iso = now.isoformat().replace("+00:00", "Z")
    cmdb_dir, itsm_dir = tmp_path / "cmdb-drop", tmp_path / "itsm-drop"
    cmdb_dir.mkdir()
    itsm_dir.mkdir()
    (cmdb_dir / "export.xml").write_text(CMDB_XML.format(now=iso))
    ticket = {k: (v.format(now=iso) if isinstance(v, str) else v) for k, v in TICKET.items()}
    (itsm_dir / "tickets.json").write_text(json.dumps([ticket, {"ticket_id": "INC-2"}]))
    (itsm_dir / "changes.xml").write_text(TICKETS_XML.format(now=iso))
    (itsm_dir / "writing.json").write_text("[")  # not settled yet: left alone
    (itsm_dir / "notes.txt").write_text("not an export")
    _settle(cmdb_dir / "export.xml", itsm_dir / "tickets.json", itsm_dir / "changes.xml")

    landed = CmdbFileDrop(str(cmdb_dir)).collect(zone, now) + ItsmFileDrop(str(itsm_dir)).collect(
        zone, now
    )
    assert sorted(b.fmt for b in landed) == ["json", "xml", "xml"]
    assert {b.connector for b in landed} == {"cmdb-file-drop/1", "itsm-file-drop/1"}
    assert sorted(p.name for p in itsm_dir.iterdir() if p.is_file()) == [
        "notes.txt",
        "writing.json",
    ]
    # A file put back (a crash before the move) is recognised, not landed twice.
    moved = next((itsm_dir / ".landed").glob("*-tickets.json"))
    (itsm_dir / "tickets.json").write_bytes(moved.read_bytes())
    _settle(itsm_dir / "tickets.json")
    [again] = ItsmFileDrop(str(itsm_dir)).collect(zone, now)
    assert again.duplicate

    day = now.date().isoformat()
    runner.materialize(
        settings,
        [day],
        ["landing", "bronze", "silver/assets", "silver/relations", "silver/tickets"],
    )
    lake = Lake.from_settings(settings)
    assets = lake.read_table("silver", "assets", dts=[day]).to_pylist()
    assert {a["entity_id"] for a in assets} == {"vm-0001", "host-0001"}
    assert next(a for a in assets if a["entity_id"] == "vm-0001")["department"] == "大数据局"
    relations = lake.read_table("silver", "relations", dts=[day]).to_pylist()
    assert [(r["src_entity_id"], r["relation"], r["dst_entity_id"]) for r in relations] == [
        ("vm-0001", "runs_on", "host-0001")
    ]
    tickets = {
        t["ticket_id"]: t for t in lake.read_table("silver", "tickets", dts=[day]).to_pylist()
    }
    assert set(tickets) == {"INC-1", "CHG-7"}
    assert tickets["CHG-7"]["change_result"] == "failed"
    assert tickets["INC-1"]["sla_target_minutes"] == 240
    rejected = quarantine.read(lake, [day]).to_pylist()
    assert [r["source"] for r in rejected] == ["itsm"]
    assert "is missing" in rejected[0]["reason"] and "INC-2" in rejected[0]["raw"]


def test_hostile_xml_is_refused_with_a_reason() -> None:
    from opslake.ingest.parsers import cmdb
    from opslake.lake.landing import LandedBatch
    from opslake.security.crypto import FieldCipher
    from opslake.security.fields import sealer

    batch = LandedBatch(
        "cmdb", "b", "2026-03-02", "p", "s", 0, "2026-03-02T00:00:00+00:00", "xml", "t"
    )
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><cmdb>&a;</cmdb>'
    result = cmdb.parse(bomb, batch, seal=sealer(FieldCipher(bytes(16))))
    assert result.table.num_rows == 0
    assert "DOCTYPE" in result.rejects[0].reason
