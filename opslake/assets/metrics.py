"""Metrics domain: Prometheus and MQTT samples from landing to silver points and gold rollups."""

from collections.abc import Iterator

import dagster as dg
import pyarrow as pa

from opslake.assets.conform import SilverTable, silver_asset
from opslake.assets.ingest import BronzeTable, SourceSpec, source_assets
from opslake.assets.keys import key
from opslake.assets.sharded import sharded_table_asset
from opslake.ingest.parsers import alertmanager, mqtt, prometheus, prometheus_text
from opslake.kpi.rollups import ROLLUP_SCHEMA, rollup
from opslake.lake.schemas import METRIC_POINTS
from opslake.lake.series import series_slices
from opslake.lake.shards import part_name, require_parts
from opslake.lake.storage import Lake
from opslake.settings import Settings
from opslake.transforms import metrics as conform

PROMETHEUS = SourceSpec(
    source="prometheus",
    title="Prometheus metrics (text exposition, federate / scrape / remote write)",
    fmt="prom",
    bronze=[
        BronzeTable(
            "prometheus_samples",
            prometheus.parse,
            prometheus_text.BRONZE_SCHEMA,
            "One row per sample: metric, canonical label set, value, timestamp.",
            sharded=True,
        )
    ],
)

#: MQTT carries metrics and events; its landing asset is defined here, once, and
#: ``mqtt_events`` feeds silver events (opslake.assets.events).
MQTT = SourceSpec(
    source="mqtt",
    title="MQTT messages (metric and event JSON, one received message per line)",
    fmt="json",
    bronze=[
        BronzeTable(
            "mqtt_samples",
            mqtt.parse_metrics,
            prometheus_text.BRONZE_SCHEMA,
            "Metric messages as samples (same schema as prometheus_samples): metric, "
            "canonical label set (labels + entity_id), value, timestamp.",
        ),
        BronzeTable(
            "mqtt_events",
            mqtt.parse_events,
            alertmanager.BRONZE_SCHEMA,
            "Event messages as alerts (same schema as alertmanager_alerts): status, "
            "labels (alertname, severity, entity_id), summary, starts/ends.",
        ),
    ],
)

METRIC_POINTS_SPEC = SilverTable(
    name="metric_points",
    bronze=("prometheus_samples", "mqtt_samples"),
    bronze_schema=prometheus_text.BRONZE_SCHEMA,
    schema=METRIC_POINTS,
    # A day of samples is the largest table: cut into day shards by entity (one step each),
    # each sorted in pieces within the memory budget.
    stream=lambda read, resolver, settings, shard: conform.to_silver(
        read,
        lambda instances: resolver.resolve(instances).to_arrow(),
        rows_per_shard=conform.shard_rows(settings.sort_memory_mb),
        spill_dir=str(settings.state_dir),
        day_shard=(shard, settings.day_shards),
    ),
    dictionary=("metric", "label_set", "batch_id"),
    description=(
        "Every metric sample of every managed object (facilities, cloud, applications, "
        "platforms, security: S5.2a) in one model: ts (UTC), metric, entity_id, value, labels. "
        "Deduplicated on (metric, labels, ts), sorted by metric, entity_id, labels, ts. Series "
        "whose entity cannot be resolved through the CMDB are kept with a null entity_id."
    ),
)


def _rollup_asset(every: str) -> dg.AssetsDefinition:
    def build(
        lake: Lake, dt: str, shard: int, _metadata: dict, settings: Settings
    ) -> Iterator[pa.Table]:
        # A rollup groups by entity, and a day shard holds whole entities: shard S of the
        # rollup is the rollup of shard S of the points. A (metric, entity) pair is whole in
        # one slice, so the slices' rollups are the day's, in its order, in a slice's memory
        # (the whole day at once took 7 GiB at 8,000 objects).
        require_parts(lake, "silver", "metric_points", dt, settings.day_shards)
        for points in series_slices(
            lake, dt, ["ts", "metric", "entity_id", "value"], part=part_name(shard)
        ):
            yield rollup(points, every)

    return sharded_table_asset(
        "gold",
        f"metric_rollup_{every}",
        deps=[key("silver", "metric_points")],
        schema=ROLLUP_SCHEMA,
        build=build,
        description=(
            f"Metric points rolled up to {every} buckets per metric and entity: samples, min, "
            "max, avg, last, p95. The table screens and the API read instead of raw points."
        ),
    )


defs = dg.Definitions(
    assets=[
        *source_assets(PROMETHEUS),
        *source_assets(MQTT),
        silver_asset(METRIC_POINTS_SPEC),
        *(_rollup_asset(e) for e in ("5m", "1h")),
    ],
)
