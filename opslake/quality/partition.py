"""Quality checks of one table partition as the pipeline writes it: context, run, record.

The asset factories call :func:`checked`; it returns the chunks to write (offending rows
removed) and, once they are written, :meth:`PartitionCheck.finish` quarantines the offending
rows, records the results, lands quality alerts for failures and gives the Dagster check
results.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opslake.lake import quarantine
from opslake.lake.landing import LandingZone
from opslake.lake.schemas import ASSETS
from opslake.lake.storage import Lake
from opslake.quality.alerts import land_quality_alerts
from opslake.quality.results import CheckResult, read_results, write_results
from opslake.quality.suites import Suite
from opslake.quality.validate import Context, TableValidator, known_entities


def partition_rows(lake: Lake, layer: str, name: str, dt: str, **more: str) -> int:
    """Rows of one partition, from the Parquet footers (no data read)."""
    directory = lake.table_path(layer, name, {"dt": dt, **more})
    if not lake.exists(directory):
        return 0
    files = [f for f in lake.list_files(directory, recursive=True) if f.endswith(".parquet")]
    total = 0
    for path in files:
        with lake.fs.open_input_file(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def rejected_lines(lake: Lake, bronze_table: str, dt: str) -> int:
    """Lines of one bronze table's day that the parser quarantined.

    A batch rejected as a whole (``line_no`` 0: unreadable, or a CSV header lacking a
    column) is one quarantine row but loses every line: it counts its non-blank lines.
    """
    directory = lake.table_path("bronze", quarantine.TABLE, {"dt": dt, "table": bronze_table})
    if not lake.exists(directory):
        return 0
    total = 0
    zone = LandingZone(lake)
    for path in lake.list_files(directory, recursive=True):
        if not path.endswith(".parquet"):
            continue
        with lake.fs.open_input_file(path) as f:
            rows = pq.read_table(f, columns=["source", "batch_id", "line_no"]).to_pylist()
        for row in rows:
            whole = None
            if row["line_no"] == 0:
                whole = next((b for b in zone.batches(row["source"], dt)
                              if b.batch_id == row["batch_id"]), None)
            if whole is None:
                total += 1
            else:
                lines = zone.read(whole, verify=False).split(b"\n")
                total += max(1, sum(1 for line in lines if line.strip()))
    return total


def _context(lake: Lake, suite: Suite, dt: str, bronze: Mapping[str, str]) -> Context:
    day = date.fromisoformat(dt)
    earlier = sorted(d for d in lake.partitions(suite.layer, suite.table) if d < dt)
    history = [partition_rows(lake, suite.layer, suite.table, d) for d in earlier[-7:]]
    cmdb_days = [d for d in lake.partitions("silver", "assets") if d <= dt]
    cmdb = known_entities(lake.read_table("silver", "assets", schema=ASSETS, dts=cmdb_days[-1:],
                                          columns=["entity_id"])) if cmdb_days else None
    parse = [(source, rejected_lines(lake, t, dt), partition_rows(lake, "bronze", t, dt))
             for t, source in bronze.items()]
    end = min(datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1),
              datetime.now(UTC))
    return Context(cmdb=cmdb, history_rows=history, parse=parse, end=end)


class PartitionCheck:
    """The checks of one partition being written."""

    def __init__(self, lake: Lake, suite: Suite, schema: pa.Schema, dt: str,
                 bronze: Mapping[str, str]) -> None:
        self.lake, self.suite, self.dt = lake, suite, dt
        self.validator = TableValidator(suite, schema, _context(lake, suite, dt, bronze))

    def chunks(self, chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """The chunks with offending rows removed."""
        for chunk in chunks:
            yield self.validator.chunk(chunk)

    def finish(self, run_id: str) -> list[CheckResult]:
        """Quarantine, record and alert; returns the results."""
        results = self.validator.finish()
        quarantine.write(self.lake, self.suite.key, self.dt, self.validator.quarantined)
        previous = read_results(self.lake, [self.dt]) if self.lake.exists(
            self.lake.table_path("gold", "quality_results", {"dt": self.dt})) else None
        failed_before = set()
        if previous is not None and previous.num_rows:
            mine = previous.filter(pc.and_(pc.equal(previous["table"], self.suite.table),
                                           pc.equal(previous["layer"], self.suite.layer)))
            failed_before = {r["check"] for r in mine.to_pylist() if not r["passed"]}
        at = datetime.now(UTC)
        day = date.fromisoformat(self.dt)
        write_results(self.lake, results, day, at, run_id)
        land_quality_alerts(self.lake, results, day, at, previous_failed=failed_before)
        return results
