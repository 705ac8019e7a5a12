"""Landing retention: purge only what silver holds, leave tombstones, keep bronze rebuildable."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from opslake.assets.ingest import _kept_for_purged
from opslake.errors import PurgedBatchError
from opslake.lake import quarantine
from opslake.lake.landing import LandingZone
from opslake.lake.retention import bronze_batch_ids, mark_silvered, purge, silvered
from opslake.lake.storage import Lake
from opslake.settings import Settings

OLD, RECENT = "2026-01-05", "2026-03-01"
TODAY = date(2026, 3, 2)
NOW = datetime(2026, 3, 2, 3, tzinfo=UTC)
READERS = {"cmdb": {"cmdb_cis": ["assets"]}, "syslog": {"syslog_lines": []}}
ROWS = pa.table({"batch_id": ["x"], "n": [1]})


def _bronze(lake: Lake, table: str, dt: str, *batch_ids: str) -> None:
    lake.write_parts(
        "bronze", table, {"dt": dt}, [(b, ROWS) for b in batch_ids], ROWS.schema, prune=False
    )


def _estate(landing: LandingZone) -> None:
    """cmdb-a: in bronze and silver; cmdb-b: in bronze only; cmdb-c: not even in bronze."""
    for batch_id in ("cmdb-a", "cmdb-b", "cmdb-c"):
        landing.write(
            "cmdb", f'{{"id": "{batch_id}"}}'.encode(), fmt="json", dt=OLD, batch_id=batch_id
        )
    landing.write("cmdb", b'{"id": "new"}', fmt="json", dt=RECENT, batch_id="cmdb-new")
    landing.write("syslog", b"<13>1 - h - - - - x\n", fmt="log", dt=OLD, batch_id="log-1")
    _bronze(landing.lake, "cmdb_cis", OLD, "cmdb-a")
    mark_silvered(
        landing.lake, "assets", OLD, bronze_batch_ids(landing.lake, ["cmdb_cis"], OLD), NOW
    )
    _bronze(landing.lake, "cmdb_cis", OLD, "cmdb-b")  # landed in bronze after silver was built


def test_purge_removes_only_batches_silver_holds(landing: LandingZone) -> None:
    _estate(landing)
    a = landing.batches("cmdb", OLD)[0]
    report = purge(landing, READERS, retention_days=30, today=TODAY, now=NOW)
    assert [b.batch_id for b in report.purged] == ["cmdb-a"]
    assert {b.batch_id: why for b, why in report.kept} == {
        "cmdb-b": "not yet in silver/assets",
        "cmdb-c": "not in bronze/cmdb_cis",
        "log-1": "no silver table reads syslog",
    }
    assert report.counts() == {
        "cutoff": "2026-01-31",
        "dry_run": False,
        "purged": 1,
        "purged_bytes": a.stored_bytes,
        "kept": 3,
        "sources": ["cmdb"],
    }
    assert not Path(a.path).exists()
    assert [b.batch_id for b in landing.batches("cmdb", OLD)] == ["cmdb-b", "cmdb-c"]
    [tomb] = [b for b in landing.batches("cmdb", OLD, purged=True) if b.purged_at]
    assert (tomb.batch_id, tomb.sha256, tomb.purged_at) == ("cmdb-a", a.sha256, NOW.isoformat())
    assert landing.read(landing.batches("cmdb", RECENT)[0]) == b'{"id": "new"}'
    with pytest.raises(PurgedBatchError, match="purged from landing.*restore"):
        landing.read(tomb)


def test_a_purged_batch_redelivered_is_still_a_duplicate(landing: LandingZone) -> None:
    _estate(landing)
    purge(landing, READERS, retention_days=30, today=TODAY, now=NOW)
    again = landing.write("cmdb", b'{"id": "cmdb-a"}', fmt="json", dt=OLD, batch_id="cmdb-a")
    assert again.duplicate and again.purged_at
    assert not Path(again.path).exists()


def test_a_later_silver_build_lets_the_batch_go(landing: LandingZone) -> None:
    _estate(landing)
    purge(landing, READERS, retention_days=30, today=TODAY, now=NOW)
    mark_silvered(
        landing.lake, "assets", OLD, bronze_batch_ids(landing.lake, ["cmdb_cis"], OLD), NOW
    )
    assert silvered(landing.lake, "assets", OLD) == {"cmdb_cis": {"cmdb-a", "cmdb-b"}}
    report = purge(landing, READERS, retention_days=30, today=TODAY, now=NOW)
    assert [b.batch_id for b in report.purged] == ["cmdb-b"]


def test_dry_run_and_retention_off_change_nothing(landing: LandingZone, settings: Settings) -> None:
    _estate(landing)
    assert settings.landing_retention_days == 0  # off by default: landing is kept forever
    assert purge(landing, READERS, retention_days=0, today=TODAY, now=NOW).purged == []
    dry = purge(landing, READERS, retention_days=30, today=TODAY, now=NOW, dry_run=True)
    assert [b.batch_id for b in dry.purged] == ["cmdb-a"]
    assert len(landing.batches("cmdb", OLD)) == 3 and Path(dry.purged[0].path).exists()
    assert purge(landing, READERS, retention_days=60, today=TODAY, now=NOW).purged == []


def test_a_purge_cut_short_is_finished_by_the_next(landing: LandingZone) -> None:
    _estate(landing)
    a = landing.batches("cmdb", OLD)[0]
    landing.tombstone(a, NOW)  # killed after the tombstone, before the object went
    assert Path(a.path).exists()
    assert purge(landing, READERS, retention_days=30, today=TODAY, now=NOW).purged == []
    assert not Path(a.path).exists()


def test_rebuilding_bronze_keeps_what_purged_batches_left(landing: LandingZone) -> None:
    _estate(landing)
    lake = landing.lake
    batch = landing.batches("cmdb", OLD)[0]
    quarantine.write(
        lake,
        "cmdb_cis",
        OLD,
        [
            quarantine.rejects_table(
                batch, [quarantine.Reject(line_no=3, raw="{bad", reason="not JSON")]
            )
        ],
    )
    purge(landing, READERS, retention_days=30, today=TODAY, now=NOW)
    batches = landing.batches("cmdb", OLD, purged=True)
    kept = _kept_for_purged(lake, "cmdb_cis", OLD, batches)
    assert list(kept) == ["cmdb-a"] and kept["cmdb-a"].column("raw").to_pylist() == ["{bad"]
    Path(lake.table_path("bronze", "cmdb_cis", {"dt": OLD}), "cmdb-a.parquet").unlink()
    with pytest.raises(dg.Failure, match="purged from landing.*bronze file is missing"):
        _kept_for_purged(lake, "cmdb_cis", OLD, batches)
