"""Landing retention: purge landed objects older than the retention, never one silver lacks.

A landed batch is purged only when its day is older than ``retention_days`` AND every silver
table that reads its source has consumed it. Consumption is known from a marker each silver
partition writes once it is durable (``mark_silvered``): the batch ids of the bronze files
of that day it was built from (bronze files are named by batch id). Silver rows cannot tell
this by themselves: CMDB history (assets, relations) carries no batch id. A batch that
landed after its day's silver was built is not in the marker, so it is kept until silver is
built again; a lake without markers (built before them) purges nothing until then.

Purging writes the tombstone first (the manifest row with ``purged_at``, checksum kept), then
deletes the object, so a crash in between leaves a tombstone whose object the next purge
removes, never a manifest row pointing at nothing. Bronze keeps every purged batch's file,
which is what re-materializing an old day reads (opslake.assets.ingest).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.storage import Lake

#: Which silver tables must hold a source's batches: source → bronze table → silver tables.
Readers = Mapping[str, Mapping[str, Sequence[str]]]


def bronze_batch_ids(lake: Lake, bronze_tables: Sequence[str], dt: str) -> dict[str, list[str]]:
    """Per bronze table, the batch ids of its files for day ``dt``."""
    return {
        table: [
            f.rsplit("/", 1)[-1].removesuffix(".parquet")
            for f in lake.list_files(lake.table_path("bronze", table, {"dt": dt}))
            if f.endswith(".parquet")
        ]
        for table in bronze_tables
    }


def _marker_path(lake: Lake, silver_table: str, dt: str) -> str:
    return lake.path("landing", "_silvered", f"table={silver_table}", f"dt={dt}.json")


def mark_silvered(
    lake: Lake, silver_table: str, dt: str, consumed: Mapping[str, Sequence[str]], at: datetime
) -> None:
    """Record that silver ``silver_table`` day ``dt`` is durable with these bronze batches."""
    body = {
        "table": silver_table,
        "dt": dt,
        "at": at.astimezone(UTC).isoformat(),
        "bronze": {table: sorted(ids) for table, ids in consumed.items()},
    }
    lake.put_atomic(
        _marker_path(lake, silver_table, dt), [json.dumps(body, sort_keys=True).encode()]
    )


def silvered(lake: Lake, silver_table: str, dt: str) -> dict[str, set[str]]:
    """Per bronze table, the batch ids silver ``silver_table`` day ``dt`` was last built from."""
    path = _marker_path(lake, silver_table, dt)
    if not lake.exists(path):
        return {}
    return {table: set(ids) for table, ids in json.loads(lake.read_bytes(path))["bronze"].items()}


@dataclass
class PurgeReport:
    """What one purge did (or, with ``dry_run``, would do)."""

    cutoff: str
    dry_run: bool
    purged: list[LandedBatch] = field(default_factory=list)
    #: Batches past the retention that stay, with the reason (not yet in silver, …).
    kept: list[tuple[LandedBatch, str]] = field(default_factory=list)

    @property
    def purged_bytes(self) -> int:
        """Bytes of landing objects removed (as stored)."""
        return sum(b.stored_bytes for b in self.purged)

    def counts(self) -> dict[str, object]:
        """The figures a log line or an audit entry records."""
        return {
            "cutoff": self.cutoff,
            "dry_run": self.dry_run,
            "purged": len(self.purged),
            "purged_bytes": self.purged_bytes,
            "kept": len(self.kept),
            "sources": sorted({b.source for b in self.purged}),
        }


def purge(
    zone: LandingZone,
    readers: Readers,
    *,
    retention_days: int,
    today: date,
    now: datetime,
    dry_run: bool = False,
) -> PurgeReport:
    """Purge the batches of days before ``today - retention_days`` that silver holds.

    ``retention_days`` 0 (keep forever) purges nothing. A source no silver table reads is
    never purged: nothing else holds its rows.
    """
    cutoff = (today - timedelta(days=retention_days)).isoformat() if retention_days else ""
    report = PurgeReport(cutoff=cutoff or "never", dry_run=dry_run)
    if not cutoff:
        return report
    lake = zone.lake
    for source in zone.sources():
        bronze = readers.get(source, {})
        for dt in (d for d in zone.days(source) if d < cutoff):
            done: dict[str, dict[str, set[str]]] = {}
            for batch in zone.batches(source, dt, purged=True):
                if batch.purged_at:
                    if not dry_run and lake.exists(batch.path):  # a purge cut short
                        lake.fs.delete_file(batch.path)
                    continue
                reason = _missing_from_silver(lake, batch, bronze, done)
                if reason:
                    report.kept.append((batch, reason))
                    continue
                if not dry_run:
                    zone.tombstone(batch, now)
                    if lake.exists(batch.path):
                        lake.fs.delete_file(batch.path)
                report.purged.append(batch)
    return report


def _missing_from_silver(
    lake: Lake,
    batch: LandedBatch,
    bronze: Mapping[str, Sequence[str]],
    done: dict[str, dict[str, set[str]]],
) -> str:
    """Why ``batch`` may not be purged yet ("" when every silver reader holds it)."""
    if not any(bronze.values()):
        return f"no silver table reads {batch.source}"
    for table, silver_tables in bronze.items():
        part = f"{lake.table_path('bronze', table, {'dt': batch.dt})}/{batch.batch_id}.parquet"
        if not lake.exists(part):
            return f"not in bronze/{table}"
        for silver in silver_tables:
            if silver not in done:
                done[silver] = silvered(lake, silver, batch.dt)
            if batch.batch_id not in done[silver].get(table, set()):
                return f"not yet in silver/{silver}"
    return ""
