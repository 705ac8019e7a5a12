"""Serving: the read-only DuckDB warehouse, a snapshot of gold rebuilt off to the side."""

import dagster as dg

from opslake.assets import metric_catalog
from opslake.assets.keys import OWNER
from opslake.assets.resources import LakeResource
from opslake.lake.warehouse import build_warehouse
from opslake.metrics_catalog import tables


@dg.asset(
    key=dg.AssetKey(["serving", "warehouse"]),
    group_name="serving",
    kinds={"duckdb"},
    owners=[OWNER],
    deps=[
        *(
            dg.AssetKey(["gold", name])
            for name in (
                "metric_rollup_5m",
                "metric_rollup_1h",
                "entity_health",
                "business_health",
                "service_levels",
                *tables.DESCRIPTIONS,
            )
        ),
        *(k for a in metric_catalog.defs.assets for k in a.keys),
    ],
    description=(
        "warehouse.duckdb: a copy of every gold table (all partitions; the streaming *_live "
        "tables stay views over their Parquet files), built beside the live file and swapped "
        "in with one rename, so Superset, the API and notebooks (opened read-only) see one "
        "consistent snapshot and never a lock or a half-built file."
    ),
)
def warehouse(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """Rebuild and swap in the serving warehouse."""
    settings = lake.settings()
    objects = build_warehouse(lake.lake(), settings.warehouse_path)
    context.log.info(f"warehouse at {settings.warehouse_path} serves {len(objects)} objects")
    return dg.MaterializeResult(
        metadata={
            "path": str(settings.warehouse_path),
            **{f"rows/{o.name}": o.rows for o in objects},
        }
    )


defs = dg.Definitions(assets=[warehouse])
