"""Probes domain: synthetic HTTP/TCP checks (拨测, S6.1b) into silver probes."""

import dagster as dg

from opslake.assets.conform import SilverTable, silver_asset
from opslake.assets.ingest import BronzeTable, SourceSpec, source_assets
from opslake.ingest.parsers import probes as parser
from opslake.lake.schemas import PROBES
from opslake.transforms import probes as conform

PROBES_SOURCE = SourceSpec(
    source="probes",
    title="Synthetic probe results (HTTP and TCP checks)",
    fmt="json",
    bronze=[
        BronzeTable(
            "probe_results",
            parser.parse,
            parser.BRONZE_SCHEMA,
            "One row per probe check as reported.",
        )
    ],
)

PROBES_SPEC = SilverTable(
    name="probes",
    bronze="probe_results",
    bronze_schema=parser.BRONZE_SCHEMA,
    schema=PROBES,
    conform=lambda bronze, _resolver: conform.to_silver(bronze),
    resolves_entities=False,
    description="Synthetic checks: ok, latency_ms, status code and error per probe and time.",
)

defs = dg.Definitions(assets=[*source_assets(PROBES_SOURCE), silver_asset(PROBES_SPEC)])
