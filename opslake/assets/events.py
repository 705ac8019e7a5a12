"""Events domain: alerts from Alertmanager webhooks into silver events (S5.5a)."""

import dagster as dg

from opslake.assets.conform import SilverTable, silver_asset
from opslake.assets.ingest import BronzeTable, SourceSpec, source_assets
from opslake.ingest.parsers import alertmanager as parser
from opslake.lake.schemas import EVENTS
from opslake.transforms import events as conform

ALERTMANAGER = SourceSpec(
    source="alertmanager",
    title="Alertmanager webhook notifications (payload version 4)",
    fmt="json",
    bronze=[BronzeTable("alertmanager_alerts", parser.parse, parser.BRONZE_SCHEMA,
                        "One row per alert per notification, with the payload's group fields.")],
)

EVENTS_SPEC = SilverTable(
    name="events",
    bronze="alertmanager_alerts",
    bronze_schema=parser.BRONZE_SCHEMA,
    schema=EVENTS,
    conform=conform.to_silver,
    description=(
        "Alert states: one row per (fingerprint, starts_at, status) per day, with severity, "
        "title, entity_id (from the entity_id label or the CMDB), labels, starts/ends. "
        "Repeated notifications of the same state collapse into one row."
    ),
)

defs = dg.Definitions(assets=[*source_assets(ALERTMANAGER), silver_asset(EVENTS_SPEC)])
