"""Service-management domain: ITSM tickets into silver and per-business service levels."""

from datetime import date

import dagster as dg
import pyarrow as pa

from opslake.alerting import handling
from opslake.assets.conform import SilverTable, silver_asset
from opslake.assets.ingest import BronzeTable, SourceSpec, source_assets
from opslake.assets.keys import daily_table_asset, key
from opslake.ingest.parsers import itsm as parser
from opslake.kpi.service_levels import SERVICE_LEVELS_SCHEMA, service_levels
from opslake.lake.schemas import TICKETS
from opslake.lake.storage import Lake
from opslake.transforms import tickets as conform

ITSM = SourceSpec(
    source="itsm",
    title="ITSM ticket exports (incidents, requests, problems, changes; CSV)",
    fmt="csv",
    bronze=[
        BronzeTable(
            "itsm_tickets",
            parser.parse,
            parser.BRONZE_SCHEMA,
            "One row per exported ticket row, columns as in the export.",
        )
    ],
)

TICKETS_SPEC = SilverTable(
    name="tickets",
    bronze="itsm_tickets",
    bronze_schema=parser.BRONZE_SCHEMA,
    schema=TICKETS,
    conform=conform.to_silver,
    description=(
        "Incidents, service requests, problems and changes (DATA scope of S5.3): lifecycle "
        "times, priority, SLA target, linked alert fingerprint, change window and result; "
        "partitioned by the day the ticket was opened."
    ),
)


def _service_levels(lake: Lake, dt: str, metadata: dict) -> pa.Table:
    tickets = lake.read_table("silver", "tickets", schema=TICKETS, dts=[dt])
    # Every handling event carried into silver (the same input gives the same day).
    events = lake.read_table(
        "silver",
        handling.SOURCE,
        schema=handling.ACTIONS_SCHEMA,
        dts=lake.partitions("silver", handling.SOURCE),
    )
    handled = handling.handled_incidents(lake, handling.fold(handling.events_of(events)))
    metadata["handled_incidents"] = handled.num_rows
    return service_levels(tickets, date.fromisoformat(dt), handled)


gold_service_levels = daily_table_asset(
    "gold",
    "service_levels",
    deps=[
        key("silver", "tickets"),
        key("silver", handling.SOURCE),
        key("gold", "incidents"),
        key("gold", "incident_alerts"),
    ],
    schema=SERVICE_LEVELS_SCHEMA,
    build=_service_levels,
    description=(
        "Per business and day (plus the province as '(all)'): incidents, MTTA and MTTR in "
        "minutes (from OpsLake's own acknowledge and resolve actions for incidents handled "
        "in it, else the ITSM tickets), SLA attainment, breaches, backlog, requests, changes "
        "and change failure rate (S5.3). Definitions in opslake.kpi.service_levels."
    ),
)


defs = dg.Definitions(
    assets=[*source_assets(ITSM), silver_asset(TICKETS_SPEC), gold_service_levels]
)
