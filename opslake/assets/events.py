"""Events domain: alerts from Alertmanager, MQTT and JSON webhooks into silver events (S5.5a).

The ``mqtt_events`` bronze table comes from the MQTT source defined in opslake.assets.metrics.
Failed data-quality checks arrive the same way (S6.2e): opslake.quality.alerts lands them as
Alertmanager notifications under ``landing/quality``; their events have source
``opslake-quality``. Anomaly episodes (opslake.ml.anomalies) land under ``landing/ml`` and
have source ``opslake-ml``; that landing asset runs after ``gold/anomalies``, so a day's run
carries its anomaly alerts into silver events at once. Pipeline runs that failed for good
(opslake.alerting.platform) land under ``landing/platform`` with source ``opslake-platform``.
"""

import dagster as dg

from opslake.alerting import platform
from opslake.assets.conform import SilverTable, silver_asset
from opslake.assets.ingest import BronzeTable, SourceSpec, source_assets
from opslake.assets.keys import key
from opslake.ingest.parsers import alert_webhook
from opslake.ingest.parsers import alertmanager as parser
from opslake.lake.schemas import EVENTS
from opslake.ml import anomalies
from opslake.quality import alerts as quality_alerts
from opslake.transforms import events as conform

ALERTMANAGER = SourceSpec(
    source="alertmanager",
    title="Alertmanager webhook notifications (payload version 4)",
    fmt="json",
    bronze=[
        BronzeTable(
            "alertmanager_alerts",
            parser.parse,
            parser.BRONZE_SCHEMA,
            "One row per alert per notification, with the payload's group fields.",
        )
    ],
)

WEBHOOK = SourceSpec(
    source=alert_webhook.SOURCE,
    title="Generic JSON alert webhooks (Zabbix and the like), mapped by config/alert_webhooks",
    fmt="json",
    bronze=[
        BronzeTable(
            "webhook_alerts",
            alert_webhook.parse,
            parser.BRONZE_SCHEMA,
            "One row per alert of a pushed body, mapped by the mapping named in the "
            "batch's connector (alert-webhook/<name>).",
        )
    ],
)


def _findings(
    source: str,
    title: str,
    table: str,
    description: str,
    produced_by: list[dg.AssetKey] | None = None,
) -> SourceSpec:
    """A source of OpsLake's own findings, landed as Alertmanager notifications."""
    return SourceSpec(
        source=source,
        title=title,
        fmt="json",
        bronze=[BronzeTable(table, parser.parse, parser.BRONZE_SCHEMA, description)],
        produced_by=produced_by or [],
        findings=True,
    )


QUALITY = _findings(
    quality_alerts.SOURCE,
    "Failed data-quality checks as Alertmanager notifications (opslake.quality.alerts)",
    "quality_alerts",
    "One row per failed (firing) or recovered (resolved) quality check per "
    "notification; labels name the table, check, kind and day.",
)

ANOMALY = _findings(
    anomalies.SOURCE,
    "Anomaly episodes found by the detectors, as Alertmanager notifications (opslake.ml.anomalies)",
    "ml_alerts",
    "One row per anomaly episode per notification; labels name the entity, "
    "metric, series and detector.",
    produced_by=[key("gold", "anomalies")],
)

PLATFORM = _findings(
    platform.SOURCE,
    "OpsLake's own failures (a pipeline run that failed for good) as Alertmanager "
    "notifications (opslake.alerting.platform)",
    "platform_alerts",
    "One row per failed (firing) or recovered (resolved) pipeline run per "
    "notification; labels name the job, partition, step and run.",
)

EVENTS_SPEC = SilverTable(
    name="events",
    bronze=(
        "alertmanager_alerts",
        "mqtt_events",
        "webhook_alerts",
        "quality_alerts",
        "ml_alerts",
        "platform_alerts",
    ),
    sources={
        "alertmanager_alerts": "alertmanager",
        "mqtt_events": "mqtt",
        "webhook_alerts": "webhook",
        "quality_alerts": quality_alerts.EVENT_SOURCE,
        "ml_alerts": anomalies.EVENT_SOURCE,
        "platform_alerts": platform.EVENT_SOURCE,
    },
    bronze_schema=parser.BRONZE_SCHEMA,
    schema=EVENTS,
    conform=conform.to_silver,
    description=(
        "Alert states: one row per (fingerprint, starts_at, status) per day, with severity, "
        "title, entity_id (from the entity_id label or the CMDB), labels, starts/ends. "
        "Repeated notifications of the same state collapse into one row."
    ),
)

defs = dg.Definitions(
    assets=[
        *source_assets(ALERTMANAGER),
        *source_assets(WEBHOOK),
        *source_assets(QUALITY),
        *source_assets(ANOMALY),
        *source_assets(PLATFORM),
        silver_asset(EVENTS_SPEC),
    ]
)
