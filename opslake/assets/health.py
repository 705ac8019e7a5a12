"""Health domain: hourly health score per entity and per business (S5.2e)."""

from datetime import date

import dagster as dg
import pyarrow as pa

from opslake.assets.keys import daily_table_asset, key
from opslake.kpi.health import (
    BUSINESS_HEALTH_SCHEMA,
    ENTITY_HEALTH_SCHEMA,
    business_health,
    entity_health,
)
from opslake.kpi.rollups import ROLLUP_SCHEMA
from opslake.lake.cmdb import cmdb_as_of
from opslake.lake.schemas import EVENTS
from opslake.lake.storage import Lake


def _entity_health(lake: Lake, dt: str, _metadata: dict) -> pa.Table:
    return entity_health(
        lake.read_table("silver", "events", schema=EVENTS, dts=[dt]),
        lake.read_table("gold", "metric_rollup_1h", schema=ROLLUP_SCHEMA, dts=[dt]),
        cmdb_as_of(lake, dt),
        date.fromisoformat(dt),
    )


def _business_health(lake: Lake, dt: str, _metadata: dict) -> pa.Table:
    return business_health(
        lake.read_table("gold", "entity_health", schema=ENTITY_HEALTH_SCHEMA, dts=[dt])
    )


gold_entity_health = daily_table_asset(
    "gold",
    "entity_health",
    deps=[key("silver", "events"), key("gold", "metric_rollup_1h"), key("silver", "assets")],
    schema=ENTITY_HEALTH_SCHEMA,
    build=_entity_health,
    description=(
        "Hourly health score (0–100) of every in-service entity with its components: penalty "
        "for firing alerts by severity, for saturated ratio metrics, for a missing heartbeat; "
        "status healthy / degraded / critical. Definitions in opslake.kpi.health."
    ),
)

gold_business_health = daily_table_asset(
    "gold",
    "business_health",
    deps=[key("gold", "entity_health")],
    schema=BUSINESS_HEALTH_SCHEMA,
    build=_business_health,
    description=(
        "Hourly health per business: mean and minimum entity score, entities, and how many "
        "are healthy, degraded or critical; what the leadership screen shows first."
    ),
)

defs = dg.Definitions(assets=[gold_entity_health, gold_business_health])
