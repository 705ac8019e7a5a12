"""Sensitive landing sources stored SM4-GCM-encrypted, checksummed over the plaintext."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from opslake.crypto import DataKeys, key_id
from opslake.errors import SealedBatchError
from opslake.lake.landing import SEALED_OVERHEAD, SM4_GCM, LandingZone
from opslake.lake.storage import Lake
from opslake.settings import Settings
from opslake.simulate.cmdb import plan_history
from opslake.simulate.config import SimulationConfig
from opslake.simulate.estate import build_estate

DAY = "2026-03-02"
OLD_KEY, NEW_KEY = bytes(range(16)), bytes(range(16, 32))
TICKETS = (
    b"ticket_id,type,status,reporter_contact\n"
    b"INC-1,incident,open,li.wei@tax.zj.gov.cn\nINC-2,request,open,13912345678\n"
)


def _zone(lake: Lake, key: bytes, *previous: bytes) -> LandingZone:
    return LandingZone(lake, keys=lambda: DataKeys(key, previous))


def _cmdb_export() -> tuple[bytes, list[str]]:
    """A simulated CMDB snapshot with an e-mail contact added; its contacts."""
    cfg = SimulationConfig(seed=3, entities=30, days=1)
    export = json.loads(plan_history(cfg, build_estate(cfg)).snapshot_bytes(0))
    export["cis"][0]["owner_contact"] = "zhang.min@dc.zj.gov.cn"
    return json.dumps(export, ensure_ascii=False).encode(), [
        ci["owner_contact"] for ci in export["cis"] if ci.get("owner_contact")
    ]


def test_sealed_batch_round_trips_with_plaintext_checksum(
    landing: LandingZone, settings: Settings
) -> None:
    export, contacts = _cmdb_export()
    batch = landing.write("cmdb", iter([export[:1000], export[1000:]]), fmt="json", dt=DAY)
    assert (batch.encryption, batch.key_id) == (
        SM4_GCM,
        DataKeys.from_settings(settings).current_id,
    )
    assert batch.sha256 == hashlib.sha256(export).hexdigest() and batch.bytes == len(export)
    assert batch.batch_id == batch.sha256[:32]  # content hash of what arrived, not of the seal
    raw = Path(batch.path).read_bytes()
    assert len(raw) == batch.stored_bytes == len(export) + SEALED_OVERHEAD
    assert len(contacts) > 20 and not any(c.encode() in raw for c in contacts)
    assert b"owner_contact" not in raw and b"tax-portal" not in raw
    assert landing.read(batch) == export
    assert landing.batches("cmdb", DAY) == [batch]


def test_itsm_is_sealed_and_other_sources_stay_clear(landing: LandingZone) -> None:
    tickets = landing.write("itsm", TICKETS, fmt="csv", dt=DAY)
    raw = Path(tickets.path).read_bytes()
    assert b"li.wei@" not in raw and b"13912345678" not in raw
    logs = landing.write("syslog", b"<13>1 - host - - - - hi\n", fmt="log", dt=DAY)
    assert logs.encryption == "" and Path(logs.path).read_bytes() == b"<13>1 - host - - - - hi\n"
    assert landing.read(tickets) == TICKETS


def test_the_setting_names_the_sealed_sources(settings: Settings, lake: Lake) -> None:
    assert settings.landing_encrypted_sources == ("cmdb", "itsm")
    only = Settings.from_env(
        {"OPSLAKE_HOME": settings.home, "OPSLAKE_LANDING_ENCRYPTED_SOURCES": "syslog"}
    )
    zone = LandingZone.from_settings(only, lake)
    assert zone.write("syslog", b"x\n", fmt="log", dt=DAY).encryption == SM4_GCM
    assert zone.write("cmdb", b"{}", fmt="json", dt=DAY).encryption == ""
    none = Settings.from_env(
        {"OPSLAKE_HOME": settings.home, "OPSLAKE_LANDING_ENCRYPTED_SOURCES": "none"}
    )
    assert none.landing_encrypted_sources == ()


def test_redelivery_of_a_sealed_batch_is_a_duplicate(landing: LandingZone) -> None:
    export, _ = _cmdb_export()
    first = landing.write("cmdb", export, fmt="json", dt=DAY)
    again = landing.write("cmdb", iter([export]), fmt="json", dt="2026-03-03")  # next day
    assert again.duplicate and again.batch_id == first.batch_id and again.dt == DAY
    named = landing.write("itsm", TICKETS, fmt="csv", dt=DAY, batch_id="itsm-1")
    assert landing.write("itsm", TICKETS, fmt="csv", dt=DAY, batch_id="itsm-1").duplicate
    assert len(landing.batches("cmdb", DAY)) == 1 and landing.read(named) == TICKETS


def test_clear_batches_landed_before_still_read_and_dedupe(lake: Lake) -> None:
    clear = LandingZone(lake, encrypted_sources=())
    old = clear.write("cmdb", b'{"cis": []}', fmt="json", dt=DAY)
    assert old.encryption == ""
    sealed = _zone(lake, OLD_KEY)
    assert sealed.read(old) == b'{"cis": []}'
    assert sealed.write("cmdb", b'{"cis": []}', fmt="json", dt=DAY).duplicate


def test_wrong_or_missing_key_is_a_clear_error(lake: Lake) -> None:
    batch = _zone(lake, OLD_KEY).write("cmdb", b'{"cis": []}', fmt="json", dt=DAY)
    with pytest.raises(
        SealedBatchError, match=f"data key {key_id(OLD_KEY)}.*OPSLAKE_DATA_KEY_PREVIOUS"
    ):
        _zone(lake, NEW_KEY).read(batch)
    assert _zone(lake, NEW_KEY, OLD_KEY).read(batch) == b'{"cis": []}'  # rotation
    keyless = LandingZone(lake)
    with pytest.raises(SealedBatchError, match="LandingZone.from_settings"):
        keyless.read(batch)
    with pytest.raises(SealedBatchError, match="without the data key"):
        keyless.write("itsm", TICKETS, fmt="csv", dt=DAY)
    assert keyless.batches("itsm", DAY) == []  # refused, never landed in clear


def test_altered_or_moved_object_is_refused(lake: Lake) -> None:
    zone = _zone(lake, OLD_KEY)
    batch = zone.write("cmdb", b'{"cis": [1, 2, 3]}', fmt="json", dt=DAY)
    raw = bytearray(Path(batch.path).read_bytes())
    raw[-20] ^= 1
    Path(batch.path).write_bytes(bytes(raw))
    with pytest.raises(SealedBatchError, match="failed authentication"):
        zone.read(batch)
    other = zone.write("cmdb", b'{"cis": [4]}', fmt="json", dt="2026-03-05")
    Path(batch.path).write_bytes(Path(other.path).read_bytes())  # another day's object
    with pytest.raises(SealedBatchError, match="another source or day"):
        zone.read(batch)
