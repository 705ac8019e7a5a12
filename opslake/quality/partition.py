"""Quality checks of one table partition as the pipeline writes it: context, run, record.

The asset factories call :func:`checked`; it returns the chunks to write (offending rows
removed) and, once they are written, :meth:`PartitionCheck.finish` quarantines the offending
rows, records the results, lands quality alerts for failures and gives the Dagster check
results.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opslake.lake import quarantine
from opslake.lake.landing import LandedBatch, LandingZone, sender_of
from opslake.lake.schemas import ASSETS, QUARANTINE
from opslake.lake.storage import Lake
from opslake.quality.alerts import land_quality_alerts
from opslake.quality.results import CheckResult, read_results, write_results
from opslake.quality.suites import Suite
from opslake.quality.validate import Context, SenderLines, TableValidator, known_entities

#: The sender of a quarantined line whose batch has no manifest row (or a refused push
#: recorded before senders were).
UNKNOWN_SENDER = "unknown"


def _part_rows(lake: Lake, layer: str, name: str, dt: str, **more: str) -> dict[str, int]:
    """Rows of each file of one partition by file name (no extension), from the footers."""
    directory = lake.table_path(layer, name, {"dt": dt, **more})
    rows = {}
    for path in lake.list_files(directory, recursive=True):
        if path.endswith(".parquet"):
            with lake.fs.open_input_file(path) as f:
                rows[path.rsplit("/", 1)[-1].removesuffix(".parquet")] = pq.ParquetFile(
                    f
                ).metadata.num_rows
    return rows


def partition_rows(lake: Lake, layer: str, name: str, dt: str, **more: str) -> int:
    """Rows of one partition, from the Parquet footers (no data read)."""
    return sum(_part_rows(lake, layer, name, dt, **more).values())


def _senders(
    batch_ids: pa.Array | pa.ChunkedArray, manifest: Sequence[LandedBatch]
) -> pa.Array | pa.ChunkedArray:
    """The sender of each batch id, from the day's manifest rows."""
    ids = pa.array([b.batch_id for b in manifest], pa.string())
    names = pa.array([sender_of(b) for b in manifest], pa.string())
    return pc.fill_null(pc.take(names, pc.index_in(batch_ids, value_set=ids)), UNKNOWN_SENDER)


def _sum_by_sender(
    senders: pa.Array | pa.ChunkedArray, counts: pa.Array | pa.ChunkedArray
) -> dict[str, int]:
    totals = pa.table({"sender": senders, "n": counts}).group_by("sender").aggregate([("n", "sum")])
    return dict(zip(totals["sender"].to_pylist(), totals["n_sum"].to_pylist(), strict=True))


def delivered_rows(
    lake: Lake, bronze_table: str, dt: str, manifest: Sequence[LandedBatch]
) -> dict[str, int]:
    """Bronze rows of one day by sender (``manifest``: the source's batches of the day).

    Bronze writes one file per landed batch, named by its id, so each batch's rows come
    from a footer and its sender from its manifest row.
    """
    parts = _part_rows(lake, "bronze", bronze_table, dt)
    if not parts:
        return {}
    return _sum_by_sender(
        _senders(pa.array(list(parts), pa.string()), manifest),
        pa.array(list(parts.values()), pa.int64()),
    )


def rejected_lines(
    zone: LandingZone, bronze_table: str, source: str, dt: str, manifest: Sequence[LandedBatch]
) -> dict[str, int]:
    """Lines of one bronze table's day that were quarantined, by sender.

    A batch rejected as a whole (``line_no`` 0: unreadable, or a CSV header lacking a
    column) is one quarantine row but loses every line: it counts its non-blank lines. A
    row names its sender; rows written before senders were recorded get their batch's (in
    ``manifest``, the source's batches of the day). Pushes to ``source`` that the API
    refused count one line each against their sender.
    """
    lake = zone.lake
    parsed = quarantine.read_part(lake, dt, bronze_table, ["batch_id", "line_no", "sender"])
    pushed = quarantine.read_part(lake, dt, quarantine.PUSH_REJECTS, ["source", "sender"])
    pushed = pushed.filter(pc.equal(pushed["source"], source))
    if not parsed.num_rows + pushed.num_rows:
        return {}
    whole = pc.equal(parsed["line_no"], 0)
    whole_ids = pc.unique(parsed.filter(whole)["batch_id"])
    by_id = {b.batch_id: b for b in manifest}
    lines = pa.array(
        [_lines(zone, by_id[i]) if i in by_id else 1 for i in whole_ids.to_pylist()], pa.int64()
    )
    weights = pc.if_else(
        whole, pc.take(lines, pc.index_in(parsed["batch_id"], value_set=whole_ids)), 1
    )
    senders = pc.coalesce(parsed["sender"], _senders(parsed["batch_id"], manifest))
    return _sum_by_sender(
        pa.chunked_array(
            [*senders.chunks, *pc.fill_null(pushed["sender"], UNKNOWN_SENDER).chunks], pa.string()
        ),
        pa.chunked_array(
            [
                *weights.cast(pa.int64()).chunks,
                pa.repeat(pa.scalar(1, pa.int64()), pushed.num_rows),
            ],
            pa.int64(),
        ),
    )


def _lines(zone: LandingZone, batch: LandedBatch) -> int:
    """Non-blank lines of a landed batch (at least one; one for a purged batch's object)."""
    if batch.purged_at:
        return 1
    data = zone.read(batch, verify=False)
    return max(1, sum(1 for line in data.split(b"\n") if line.strip()))


def sender_lines(
    zone: LandingZone,
    bronze: Mapping[str, str],
    dt: str,
    history_days: Sequence[str],
    findings: Collection[str] = (),
) -> list[SenderLines]:
    """Per (landing source, sender) feeding the bronze tables: the day's lines and history.

    Sources in ``findings`` (OpsLake's own alerts) get no history: no volume is expected.
    """
    out = []
    for table, source in bronze.items():
        # Tombstones too: a purged batch's bronze rows still belong to its sender.
        manifest = zone.batches(source, dt, purged=True)
        rejected = rejected_lines(zone, table, source, dt, manifest)
        rows = delivered_rows(zone.lake, table, dt, manifest)
        history = (
            []
            if source in findings
            else [
                delivered_rows(zone.lake, table, d, zone.batches(source, d, purged=True))
                for d in history_days
            ]
        )
        for sender in sorted({*rejected, *rows, *(s for day in history for s in day)}):
            out.append(
                SenderLines(
                    source,
                    sender,
                    rejected.get(sender, 0),
                    rows.get(sender, 0),
                    tuple(day.get(sender, 0) for day in history),
                )
            )
    return out


def _context(
    zone: LandingZone, suite: Suite, dt: str, bronze: Mapping[str, str], findings: Collection[str]
) -> Context:
    lake = zone.lake
    day = date.fromisoformat(dt)
    earlier = sorted(d for d in lake.partitions(suite.layer, suite.table) if d < dt)[-7:]
    history = [partition_rows(lake, suite.layer, suite.table, d) for d in earlier]
    cmdb_days = [d for d in lake.partitions("silver", "assets") if d <= dt]
    cmdb = (
        known_entities(
            lake.read_table(
                "silver", "assets", schema=ASSETS, dts=cmdb_days[-1:], columns=["entity_id"]
            )
        )
        if cmdb_days
        else None
    )
    end = min(
        datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1), datetime.now(UTC)
    )
    return Context(
        cmdb=cmdb,
        history_rows=history,
        parse=sender_lines(zone, bronze, dt, earlier, findings),
        end=end,
    )


class PartitionCheck:
    """The checks of one partition being written."""

    def __init__(
        self,
        zone: LandingZone,
        suite: Suite,
        schema: pa.Schema,
        dt: str,
        bronze: Mapping[str, str],
        findings: Collection[str] = (),
    ) -> None:
        """``zone`` opens the landed batches (sealed ones too) whose lines are counted."""
        self.lake, self.suite, self.dt = zone.lake, suite, dt
        self.validator = TableValidator(suite, schema, _context(zone, suite, dt, bronze, findings))

    def chunks(self, chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """The chunks with offending rows removed."""
        for chunk in chunks:
            yield self.validator.chunk(chunk)

    def shard_figures(self) -> tuple[dict, pa.Table]:
        """What this shard of the partition learnt: figures and its quarantined rows."""
        observed = self.validator.observed_schema
        figures = self.validator.figures() | {
            "schema": base64.b64encode(observed.serialize().to_pybytes()).decode()
            if observed is not None
            else None
        }
        rows = pa.concat_tables([QUARANTINE.empty_table(), *self.validator.quarantined])
        return figures, rows

    def absorb(self, figures: dict, rows: pa.Table) -> None:
        """Merge one shard's ``shard_figures`` before ``finish``."""
        observed = (
            pa.ipc.read_schema(pa.py_buffer(base64.b64decode(figures["schema"])))
            if figures["schema"]
            else None
        )
        self.validator.absorb(figures, observed, rows)

    def finish(self, run_id: str) -> list[CheckResult]:
        """Quarantine, record and alert; returns the results."""
        results = self.validator.finish()
        quarantine.write(self.lake, self.suite.key, self.dt, self.validator.quarantined)
        previous = (
            read_results(self.lake, [self.dt])
            if self.lake.exists(self.lake.table_path("gold", "quality_results", {"dt": self.dt}))
            else None
        )
        failed_before = set()
        if previous is not None and previous.num_rows:
            mine = previous.filter(
                pc.and_(
                    pc.equal(previous["table"], self.suite.table),
                    pc.equal(previous["layer"], self.suite.layer),
                )
            )
            failed_before = {r["check"] for r in mine.to_pylist() if not r["passed"]}
        at = datetime.now(UTC)
        day = date.fromisoformat(self.dt)
        write_results(self.lake, results, day, at, run_id)
        land_quality_alerts(self.lake, results, day, at, previous_failed=failed_before)
        return results
