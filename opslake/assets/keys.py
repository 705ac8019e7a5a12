"""Asset keys carry their layer (``silver/metric_points``); one factory for daily tables."""

from collections.abc import Callable, Iterable, Iterator, Sequence

import dagster as dg
import pyarrow as pa

from opslake.assets.partitions import DAILY
from opslake.lake.storage import Lake
from opslake.orchestration.resources import LakeResource

OWNER = "team:data-platform"

#: Builds one day of a table: (lake, day, metadata to fill) → a table or slices of it.
Build = Callable[[Lake, str, dict], pa.Table | Iterable[pa.Table]]


def key(layer: str, name: str) -> dg.AssetKey:
    """The asset key of table ``name`` in ``layer``."""
    return dg.AssetKey([layer, name])


def daily_table_asset(layer: str, name: str, *, deps: Sequence[dg.AssetKey], schema: pa.Schema,
                      description: str, build: Build) -> dg.AssetsDefinition:
    """A daily-partitioned asset that writes ``build``'s output as ``layer/name/dt=D``.

    Its materialization records the row count and, where the table has ``entity_id``, how
    many rows have none (kept, never dropped), plus whatever ``build`` adds.
    """

    @dg.asset(
        key=key(layer, name),
        deps=list(deps),
        group_name=layer,
        kinds={"parquet", "polars"},
        owners=[OWNER],
        partitions_def=DAILY,
        description=description,
    )
    def table_asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        lk, dt = lake.lake(), context.partition_key
        metadata: dict = {"rows": 0}
        if "entity_id" in schema.names:
            metadata["rows_without_entity"] = 0
        out = build(lk, dt, metadata)

        def counted() -> Iterator[pa.Table]:
            for chunk in [out] if isinstance(out, pa.Table) else out:
                metadata["rows"] += chunk.num_rows
                if "entity_id" in schema.names:
                    metadata["rows_without_entity"] += chunk.column("entity_id").null_count
                yield chunk

        lk.write_parts(layer, name, {"dt": dt}, [("part-0", counted())], schema)
        return dg.MaterializeResult(metadata=metadata)

    return table_asset
