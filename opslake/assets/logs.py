"""Logs domain: syslog (RFC 5424 / 3164) into silver logs."""

import dagster as dg

from opslake.assets.conform import SilverTable, silver_asset
from opslake.assets.ingest import BronzeTable, SourceSpec, source_assets
from opslake.assets.keys import daily_table_asset, key
from opslake.ingest.parsers import syslog as parser
from opslake.kpi.topology import LOG_TEMPLATES_SCHEMA, log_templates
from opslake.lake.cmdb import cmdb_as_of
from opslake.lake.schemas import LOGS
from opslake.transforms import logs as conform

SYSLOG = SourceSpec(
    source="syslog",
    title="Syslog lines (RFC 5424 and RFC 3164)",
    fmt="log",
    bronze=[
        BronzeTable(
            "syslog_lines",
            parser.parse,
            parser.BRONZE_SCHEMA,
            "One row per syslog line: priority, timestamp, host, app, message.",
        )
    ],
)

LOGS_SPEC = SilverTable(
    name="logs",
    bronze="syslog_lines",
    bronze_schema=parser.BRONZE_SCHEMA,
    schema=LOGS,
    conform=conform.to_silver,
    description=(
        "Log lines with severity (0–7) and facility, the sending host as written and its "
        "entity_id resolved through the CMDB (null for hosts the CMDB does not know)."
    ),
)

gold_logs = daily_table_asset(
    "gold",
    "logs",
    deps=[key("silver", "logs"), key("silver", "assets")],
    schema=LOG_TEMPLATES_SCHEMA,
    build=lambda lk, dt, _metadata: log_templates(
        lk.read_table("silver", "logs", schema=LOGS, dts=[dt]), cmdb_as_of(lk, dt)
    ),
    description=(
        "Log lines counted per hour, entity, app, level and message template (ids, "
        "addresses and numbers masked), with an example line and the CI's kind, type, "
        "department and business; hosts the CMDB does not know keep a null entity_id."
    ),
)

defs = dg.Definitions(assets=[*source_assets(SYSLOG), silver_asset(LOGS_SPEC), gold_logs])
