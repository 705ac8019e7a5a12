"""Landing and bronze assets, generated per source from a declarative spec (no twins)."""

import functools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa

from opslake.assets.keys import BRONZE_SOURCES, FINDINGS_SOURCES, OWNER, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.ingest.parsers import ParseResult
from opslake.lake import quarantine
from opslake.lake.landing import LandedBatch
from opslake.security.crypto import FieldCipher
from opslake.security.fields import sealer


@dataclass(frozen=True)
class BronzeTable:
    """A bronze table parsed from one source's landed batches."""

    name: str
    #: ``parse(data, batch)``; with ``sealed``, ``parse(data, batch, seal=…)``.
    parse: Callable[..., ParseResult]
    schema: pa.Schema
    description: str
    #: The table holds personal fields: the parser gets a ``seal``
    #: (opslake.security.fields) under the installation's data key and keeps only tokens.
    sealed: bool = False


@dataclass(frozen=True)
class SourceSpec:
    """A landing source and the bronze tables parsed from it."""

    source: str
    title: str
    fmt: str
    bronze: Sequence[BronzeTable]
    #: Assets of OpsLake itself that write this source; the day's landing waits for them so
    #: one run of the pipeline already carries what they produced into silver.
    produced_by: Sequence[dg.AssetKey] = ()
    #: OpsLake's own findings (quality, anomaly alerts): how much arrives follows what was
    #: found, so their senders are not held to their volume history.
    findings: bool = False


def source_assets(spec: SourceSpec) -> list[dg.AssetsDefinition]:
    """The landing asset of ``spec.source`` and one bronze asset per bronze table."""
    BRONZE_SOURCES.update({table.name: spec.source for table in spec.bronze})
    if spec.findings:
        FINDINGS_SOURCES.add(spec.source)

    @dg.asset(
        key=key("landing", spec.source),
        deps=list(spec.produced_by),
        group_name="landing",
        kinds={"file", spec.fmt},
        owners=[OWNER],
        partitions_def=DAILY,
        description=(
            f"{spec.title}: raw batches exactly as delivered, one manifest row per batch "
            f"(landing/source={spec.source}/dt=…). Materializing seals the day's manifest: it "
            "checks that every manifested object is present with its recorded size."
        ),
    )
    def landing_asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        zone = lake.landing()
        batches = zone.batches(spec.source, context.partition_key)
        missing = [b.path for b in batches
                   if zone.lake.fs.get_file_info(b.path).size != b.bytes]
        if missing:
            raise dg.Failure(f"{len(missing)} landed objects are missing or truncated, e.g. "
                             f"{missing[0]}; restore them or re-deliver those batches")
        return dg.MaterializeResult(metadata={
            "batches": len(batches),
            "bytes": sum(b.bytes for b in batches),
            "connectors": ", ".join(sorted({b.connector for b in batches})) or "-",
        })

    return [landing_asset, *(_bronze_asset(spec, table) for table in spec.bronze)]


def _bronze_asset(spec: SourceSpec, table: BronzeTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=key("bronze", table.name),
        deps=[key("landing", spec.source)],
        group_name="bronze",
        kinds={"parquet", "polars"},
        owners=[OWNER],
        partitions_def=DAILY,
        description=(
            f"{table.description} Parsed from landing/{spec.source}, one Parquet file per "
            "landed batch. Lines that do not parse go to bronze/quarantine with the reason."
        ),
    )
    def bronze_asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        zone, dt = lake.landing(), context.partition_key
        batches = zone.batches(spec.source, dt)
        rejects: list[pa.Table] = []
        rows = 0
        # Sealed in the parser, so no clear personal value reaches a bronze or quarantine file.
        parse_batch = functools.partial(
            table.parse, seal=sealer(FieldCipher.from_settings(lake.settings()))) \
            if table.sealed else table.parse

        def parse(batch: LandedBatch) -> ParseResult:
            return parse_batch(zone.read(batch), batch)

        def parts() -> Iterator[tuple[str, pa.Table]]:
            nonlocal rows
            for batch, result in _ordered_map(parse, batches):
                rows += result.table.num_rows
                if result.rejects:
                    rejects.append(quarantine.rejects_table(batch, result.rejects))
                yield batch.batch_id, result.table

        zone.lake.write_parts("bronze", table.name, {"dt": dt}, parts(), table.schema)
        quarantined = quarantine.write(zone.lake, table.name, dt, rejects)
        if quarantined:
            context.log.warning(f"{quarantined} {spec.source} lines quarantined for {dt}")
        return dg.MaterializeResult(metadata={
            "rows": rows, "batches": len(batches), "quarantined": quarantined,
        })

    return bronze_asset


def _ordered_map(fn: Callable[[LandedBatch], ParseResult],
                 batches: Sequence[LandedBatch]) -> Iterator[tuple[LandedBatch, ParseResult]]:
    """Parse batches on a few threads, yielding in order with a bounded number in flight.

    Parsing is mostly polars work that releases the GIL, and the caller writes the previous
    batch meanwhile; bounding what is in flight keeps memory at a few batches.
    """
    workers = min(4, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, pool.submit(fn, batch)))
            if len(pending) > workers:
                done_batch, future = pending.popleft()
                yield done_batch, future.result()
        while pending:
            done_batch, future = pending.popleft()
            yield done_batch, future.result()
