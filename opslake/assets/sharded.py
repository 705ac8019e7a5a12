"""Daily tables computed as day × shard steps: N independent shard steps, then one merge.

With ``OPSLAKE_SHARDS`` above 1 a heavy table's day is a graph of ops rather than one op:
shard S builds its slice of the day (rows of the entities hashed to S), runs the row
checks on it and writes ``dt=D/part-S.parquet``; the merge step sums what the shards
learnt, judges the table contracts once for the whole day and records the
materialization. Every step is its own Dagster step, so the multiprocess, Dask, Celery or
Kubernetes executor spreads one day over the workers. The Dagster partition stays the
day: jobs, schedules, backfills and the daily assets downstream do not change. With one
shard the table is a plain daily asset (``daily_table_asset``), step for step as before.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa

from opslake.assets.keys import (
    OWNER,
    as_chunks,
    counted,
    daily_table_asset,
    finish_checks,
    key,
    new_metadata,
    partition_check,
    register_silver,
    table_check_specs,
)
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.lake.retention import bronze_batch_ids, mark_silvered
from opslake.lake.schemas import QUARANTINE
from opslake.lake.shards import drop_states, load_state, part_name, save_state
from opslake.lake.storage import Lake
from opslake.settings import Settings

#: Builds one shard of one day: (lake, day, shard, metadata to fill, settings) → rows.
ShardBuild = Callable[[Lake, str, int, dict, Settings], pa.Table | Iterable[pa.Table]]


def sharded_table_asset(
    layer: str,
    name: str,
    *,
    deps: Sequence[dg.AssetKey],
    schema: pa.Schema,
    description: str,
    build: ShardBuild,
    bronze: Sequence[str] = (),
    shards: int | None = None,
) -> dg.AssetsDefinition:
    """``daily_table_asset`` whose day is built in ``shards`` steps (``Settings.day_shards``).

    ``build`` is called once per shard; figures it records are summed over the shards,
    except those only shard 0 records (facts about the whole day, such as bronze rows).
    """
    shards = Settings.from_env().day_shards if shards is None else shards
    if shards == 1:
        return daily_table_asset(
            layer,
            name,
            deps=deps,
            schema=schema,
            description=description,
            settings=True,
            bronze=bronze,
            build=lambda lake, dt, metadata, settings: build(lake, dt, 0, metadata, settings),
        )
    specs = table_check_specs(layer, name)
    silvered = register_silver(layer, name, bronze)

    def shard_step(context: dg.OpExecutionContext, lake: LakeResource, shard: int) -> None:
        lk, dt = lake.lake(), context.partition_key
        metadata = new_metadata(schema)
        out = as_chunks(build(lk, dt, shard, metadata, lake.settings()))
        check = partition_check(lake.landing(), layer, name, schema, dt, bronze)
        chunks = check.chunks(out) if check else out
        lk.write_parts(
            layer,
            name,
            {"dt": dt},
            [(part_name(shard), counted(chunks, metadata, schema))],
            schema,
            prune=False,
        )
        figures, rows = check.shard_figures() if check else ({}, QUARANTINE.empty_table())
        save_state(lk, layer, name, dt, shard, {"metadata": metadata, "check": figures}, rows)
        context.log.info(f"shard {shard}/{shards} of {layer}/{name} {dt}: {metadata['rows']} rows")

    def merge_step(
        context: dg.OpExecutionContext, lake: LakeResource
    ) -> tuple[dict, list[dg.AssetCheckResult]]:
        lk, dt = lake.lake(), context.partition_key
        check = partition_check(lake.landing(), layer, name, schema, dt, bronze)
        states = load_states(lk, layer, name, dt, shards)
        if check:
            for figures, rows in states:
                check.absorb(figures["check"], rows)
        # Parts of an earlier run with more shards would otherwise be read as this day's.
        lk.prune_parts(layer, name, {"dt": dt}, {f"{part_name(i)}.parquet" for i in range(shards)})
        metadata = summed_metadata(states)
        checks = finish_checks(check, metadata, context) if check else []
        drop_states(lk, layer, name, dt)
        if silvered:  # taken after the shards read bronze: the day's run wrote bronze first
            mark_silvered(lk, name, dt, bronze_batch_ids(lk, bronze, dt), datetime.now(UTC))
        return metadata, checks

    return fan_out_asset(
        key(layer, name),
        deps=deps,
        shards=shards,
        check_specs=specs,
        description=description,
        kinds={"parquet", "polars"},
        shard_step=shard_step,
        merge_step=merge_step,
    )


def load_states(
    lake: Lake, layer: str, name: str, dt: str, shards: int
) -> list[tuple[dict, pa.Table]]:
    """What every shard of a day kept for the merge (``save_state``), in shard order."""
    return [load_state(lake, layer, name, dt, shard) for shard in range(shards)]


def summed_metadata(states: Sequence[tuple[dict, pa.Table]]) -> dict:
    """The shards' ``metadata`` figures added up."""
    metadata: dict = {}
    for figures, _rows in states:
        for field, value in figures["metadata"].items():
            metadata[field] = metadata.get(field, 0) + value
    return metadata


#: Runs shard ``shard`` of the day of ``context`` and keeps what the merge needs.
ShardStep = Callable[[dg.OpExecutionContext, LakeResource, int], None]
#: Merges the day's shards: (materialization metadata, check results).
MergeStep = Callable[[dg.OpExecutionContext, LakeResource], tuple[dict, list[dg.AssetCheckResult]]]


def fan_out_asset(
    asset_key: dg.AssetKey,
    *,
    deps: Sequence[dg.AssetKey],
    shards: int,
    description: str,
    kinds: set[str],
    shard_step: ShardStep,
    merge_step: MergeStep,
    check_specs: Sequence[dg.AssetCheckSpec] = (),
) -> dg.AssetsDefinition:
    """A daily asset computed as ``shards`` shard steps after ``deps``, then one merge step."""
    layer, name = asset_key.path
    stem = asset_key.to_python_identifier()

    def shard_op(shard: int) -> dg.OpDefinition:
        @dg.op(
            name=f"{stem}_shard_{shard}",
            ins={f"dep_{i}": dg.In(dg.Nothing) for i in range(len(deps))},
            out=dg.Out(dg.Nothing),
            tags={"opslake/shard": str(shard)},
            description=f"Shard {shard} of {shards} of {layer}/{name} for one day.",
        )
        def run_shard(context: dg.OpExecutionContext, lake: LakeResource) -> None:
            shard_step(context, lake, shard)

        return run_shard

    check_outs = {
        s.get_python_identifier(): dg.Out(dg.Nothing, is_required=False) for s in check_specs
    }

    @dg.op(
        name=f"{stem}_merge",
        ins={f"shard_{i}": dg.In(dg.Nothing) for i in range(shards)},
        out={"result": dg.Out(dg.Nothing), **check_outs},
        description=f"Merges the {shards} shards of {layer}/{name} for one day: table "
        "checks, quarantine and the materialization.",
    )
    def merge(
        context: dg.OpExecutionContext, lake: LakeResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        metadata, checks = merge_step(context, lake)
        yield dg.Output(None, "result", metadata=metadata)
        yield from checks

    shard_ops = [shard_op(i) for i in range(shards)]
    ins = {f"dep_{i}": dg.AssetIn(key=d, dagster_type=dg.Nothing) for i, d in enumerate(deps)}

    @dg.graph_multi_asset(
        name=stem,
        ins=ins,
        partitions_def=DAILY,
        check_specs=check_specs,
        group_name=layer,
        outs={
            "result": dg.AssetOut(
                key=asset_key,
                kinds=kinds,
                owners=[OWNER],
                dagster_type=dg.Nothing,
                description=f"{description} Built in {shards} shards "
                "(OPSLAKE_SHARDS), one step each.",
            )
        },
    )
    def fanned_out(**upstream: object) -> dict:
        done = merge(**{f"shard_{i}": op(**upstream) for i, op in enumerate(shard_ops)})
        if not check_outs:  # a single output is the handle itself
            return {"result": done}
        return {"result": done.result, **{out: getattr(done, out) for out in check_outs}}

    return fanned_out
