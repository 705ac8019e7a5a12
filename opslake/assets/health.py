"""Health domain: hourly health score per entity and per business (S5.2e)."""


from datetime import date

import dagster as dg

from opslake.assets.conform import cmdb_as_of
from opslake.assets.keys import OWNER, key
from opslake.assets.partitions import DAILY
from opslake.kpi.health import (
    BUSINESS_HEALTH_SCHEMA,
    ENTITY_HEALTH_SCHEMA,
    business_health,
    entity_health,
)
from opslake.kpi.rollups import ROLLUP_SCHEMA
from opslake.lake.schemas import EVENTS
from opslake.orchestration.resources import LakeResource


@dg.asset(
    key=key("gold", "entity_health"),
    deps=[key("silver", "events"), key("gold", "metric_rollup_1h"), key("silver", "assets")],
    group_name="gold",
    kinds={"parquet", "polars"},
    owners=[OWNER],
    partitions_def=DAILY,
    description=(
        "Hourly health score (0–100) of every in-service entity with its components: penalty "
        "for firing alerts by severity, for saturated ratio metrics, for a missing heartbeat; "
        "status healthy / degraded / critical. Definitions in opslake.kpi.health."
    ),
)
def gold_entity_health(context: dg.AssetExecutionContext,
                       lake: LakeResource) -> dg.MaterializeResult:
    """Entity health of one day."""
    lk, dt = lake.lake(), context.partition_key
    table = entity_health(
        lk.read_table("silver", "events", schema=EVENTS, dts=[dt]),
        lk.read_table("gold", "metric_rollup_1h", schema=ROLLUP_SCHEMA, dts=[dt]),
        cmdb_as_of(lk, dt),
        date.fromisoformat(dt),
    )
    lk.write_table(table.cast(ENTITY_HEALTH_SCHEMA), "gold", "entity_health", {"dt": dt})
    return dg.MaterializeResult(metadata={"rows": table.num_rows})


@dg.asset(
    key=key("gold", "business_health"),
    deps=[key("gold", "entity_health")],
    group_name="gold",
    kinds={"parquet", "polars"},
    owners=[OWNER],
    partitions_def=DAILY,
    description=(
        "Hourly health per business: mean and minimum entity score, entities, and how many "
        "are critical; what the leadership screen shows first."
    ),
)
def gold_business_health(context: dg.AssetExecutionContext,
                         lake: LakeResource) -> dg.MaterializeResult:
    """Business health of one day."""
    lk, dt = lake.lake(), context.partition_key
    entity = lk.read_table("gold", "entity_health", schema=ENTITY_HEALTH_SCHEMA, dts=[dt])
    table = business_health(entity)
    lk.write_table(table.cast(BUSINESS_HEALTH_SCHEMA), "gold", "business_health", {"dt": dt})
    return dg.MaterializeResult(metadata={"rows": table.num_rows})


defs = dg.Definitions(assets=[gold_entity_health, gold_business_health])
