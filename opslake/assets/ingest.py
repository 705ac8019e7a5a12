"""Landing and bronze assets, generated per source from a declarative spec (no twins)."""

import functools
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from opslake.assets.keys import BRONZE_SOURCES, FINDINGS_SOURCES, OWNER, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.assets.sharded import fan_out_asset, load_states, summed_metadata
from opslake.ingest.parsers import ParseResult
from opslake.lake import quarantine
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import QUARANTINE
from opslake.lake.shards import drop_states, part_name, save_state, shard_of
from opslake.lake.storage import Lake
from opslake.security.crypto import FieldCipher
from opslake.security.fields import sealer
from opslake.settings import Settings

#: Landed bytes parsed at once by one bronze step (more when a single batch is larger). At
#: 8,000 objects (170 MB hourly files) 384 MiB let two parse at once and the step peaked at
#: 2.75 GiB; 256 MiB parses one while the previous is written: 1.99 GiB, the same CPU.
INFLIGHT_BYTES = 256 * 2**20


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
    #: A heavy table: its day is parsed in ``Settings.day_shards`` steps (by batch id).
    sharded: bool = False


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
            "checks that every manifested object is present with its recorded size (batches "
            "purged by retention keep only their manifest row)."
        ),
    )
    def landing_asset(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> dg.MaterializeResult:
        zone = lake.landing()
        batches = zone.batches(spec.source, context.partition_key)
        missing = [
            b.path for b in batches if zone.lake.fs.get_file_info(b.path).size != b.stored_bytes
        ]
        if missing:
            raise dg.Failure(
                f"{len(missing)} landed objects are missing or truncated, e.g. "
                f"{missing[0]}; restore them or re-deliver those batches",
                allow_retries=False,
            )
        return dg.MaterializeResult(
            metadata={
                "batches": len(batches),
                "bytes": sum(b.bytes for b in batches),
                "connectors": ", ".join(sorted({b.connector for b in batches})) or "-",
            }
        )

    return [landing_asset, *(_bronze_asset(spec, table) for table in spec.bronze)]


def _bronze_asset(spec: SourceSpec, table: BronzeTable) -> dg.AssetsDefinition:
    description = (
        f"{table.description} Parsed from landing/{spec.source}, one Parquet file per "
        "landed batch. Lines that do not parse go to bronze/quarantine with the reason."
    )
    shards = Settings.from_env().day_shards if table.sharded else 1

    def parse_day(
        context: dg.OpExecutionContext | dg.AssetExecutionContext, lake: LakeResource, shard: int
    ) -> dict:
        """Parse the day's batches of day shard ``shard`` (by batch id); its figures."""
        zone, dt = lake.landing(), context.partition_key
        batches = zone.batches(spec.source, dt, purged=True)
        if shards > 1:
            mine = shard_of(pa.array([b.batch_id for b in batches], pa.string()), shards)
            batches = [b for b, s in zip(batches, mine, strict=True) if s == shard]
        # Batches purged from landing are not parsed again: their bronze file and
        # quarantine rows stay as the run before wrote them (the day rebuilds the same).
        rejects = _kept_for_purged(zone.lake, table.name, dt, batches)
        rows = 0
        # Sealed in the parser, so no clear personal value reaches a bronze or quarantine file.
        parse_batch = (
            functools.partial(table.parse, seal=sealer(FieldCipher.from_settings(lake.settings())))
            if table.sealed
            else table.parse
        )

        def parse(batch: LandedBatch) -> ParseResult:
            return parse_batch(zone.read(batch), batch)

        def parts() -> Iterator[tuple[str, pa.Table]]:
            nonlocal rows
            for batch, result in _ordered_map(parse, [b for b in batches if not b.purged_at]):
                rows += result.table.num_rows
                if result.rejects:
                    rejects[batch.batch_id] = quarantine.rejects_table(batch, result.rejects)
                yield batch.batch_id, result.table

        zone.lake.write_parts("bronze", table.name, {"dt": dt}, parts(), table.schema, prune=False)
        if shards == 1:  # one shard of several leaves the others' files; the merge prunes
            zone.lake.prune_parts(
                "bronze", table.name, {"dt": dt}, {f"{b.batch_id}.parquet" for b in batches}
            )
        quarantined = quarantine.write(
            zone.lake,
            table.name,
            dt,
            [rejects[b.batch_id] for b in batches if b.batch_id in rejects],
            part=part_name(shard),
            prune=shards == 1,
        )
        if quarantined:
            context.log.warning(f"{quarantined} {spec.source} lines quarantined for {dt}")
        return {
            "rows": rows,
            "batches": len(batches),
            "quarantined": quarantined,
            "purged_batches_kept": sum(1 for b in batches if b.purged_at),
        }

    if shards > 1:
        return _sharded_bronze(spec, table, description, shards, parse_day)

    @dg.asset(
        key=key("bronze", table.name),
        deps=[key("landing", spec.source)],
        group_name="bronze",
        kinds={"parquet", "polars"},
        owners=[OWNER],
        partitions_def=DAILY,
        description=description,
    )
    def bronze_asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=parse_day(context, lake, 0))

    return bronze_asset


def _sharded_bronze(
    spec: SourceSpec,
    table: BronzeTable,
    description: str,
    shards: int,
    parse_day: Callable[[dg.OpExecutionContext, LakeResource, int], dict],
) -> dg.AssetsDefinition:
    """The bronze asset of ``table`` as one step per day shard of landed batches, merged."""

    def shard_step(context: dg.OpExecutionContext, lake: LakeResource, shard: int) -> None:
        metadata = parse_day(context, lake, shard)
        save_state(
            lake.lake(),
            "bronze",
            table.name,
            context.partition_key,
            shard,
            {"metadata": metadata},
            QUARANTINE.empty_table(),
        )

    def merge_step(
        context: dg.OpExecutionContext, lake: LakeResource
    ) -> tuple[dict, list[dg.AssetCheckResult]]:
        zone, dt = lake.landing(), context.partition_key
        states = load_states(zone.lake, "bronze", table.name, dt, shards)
        # Files of batches no longer in the day's manifest, and quarantine parts of an
        # earlier run with more shards, go as an unsharded run's would.
        zone.lake.prune_parts(
            "bronze",
            table.name,
            {"dt": dt},
            {f"{b.batch_id}.parquet" for b in zone.batches(spec.source, dt, purged=True)},
        )
        zone.lake.prune_parts(
            "bronze",
            quarantine.TABLE,
            {"dt": dt, "table": table.name},
            {f"{part_name(i)}.parquet" for i in range(shards)},
        )
        drop_states(zone.lake, "bronze", table.name, dt)
        return summed_metadata(states), []

    return fan_out_asset(
        key("bronze", table.name),
        deps=[key("landing", spec.source)],
        shards=shards,
        description=description,
        kinds={"parquet", "polars"},
        shard_step=shard_step,
        merge_step=merge_step,
    )


def _kept_for_purged(
    lake: Lake, table: str, dt: str, batches: Sequence[LandedBatch]
) -> dict[str, pa.Table]:
    """Quarantine rows of the purged ``batches``, by batch id; fails if a bronze file is gone.

    A purged batch cannot be parsed again, so its day is rebuilt from what bronze kept. If
    that is gone too, writing the day would silently lose its rows: the step fails instead.
    """
    purged = [b for b in batches if b.purged_at]
    gone = [
        b.batch_id
        for b in purged
        if not lake.exists(f"{lake.table_path('bronze', table, {'dt': dt})}/{b.batch_id}.parquet")
    ]
    if gone:
        raise dg.Failure(
            f"{len(gone)} batch(es) of bronze/{table} {dt} (e.g. {gone[0]}) were purged from "
            "landing by retention and their bronze file is missing too, so the day cannot be "
            "rebuilt without losing rows: restore the lake from a backup (opslake backup "
            "restore) or re-deliver those batches",
            allow_retries=False,
        )
    if not purged:
        return {}
    rows = quarantine.read_part(lake, dt, table, QUARANTINE.names)
    return {
        b.batch_id: kept
        for b in purged
        if (kept := rows.filter(pc.equal(rows["batch_id"], b.batch_id))).num_rows
    }


def _ordered_map(
    fn: Callable[[LandedBatch], ParseResult], batches: Sequence[LandedBatch]
) -> Iterator[tuple[LandedBatch, ParseResult]]:
    """Parse batches on a few threads, yielding in order with a bounded amount in flight.

    Parsing is mostly polars work that releases the GIL, and the caller writes the previous
    batch meanwhile. What is in flight is bounded by count and by landed bytes
    (``INFLIGHT_BYTES``, at least one batch), so memory follows the batches' size only up
    to that bound: a province's hourly scrape files of 170 MB are parsed one at a
    time, a live source's small batches a few at a time.
    """
    workers = min(4, (os.cpu_count() or 1) + 1)
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        held = 0
        for batch in batches:
            while pending and (len(pending) > workers or held + batch.bytes > INFLIGHT_BYTES):
                done_batch, future = pending.popleft()
                held -= done_batch.bytes
                yield done_batch, future.result()
            pending.append((batch, pool.submit(fn, batch)))
            held += batch.bytes
        while pending:
            done_batch, future = pending.popleft()
            yield done_batch, future.result()
