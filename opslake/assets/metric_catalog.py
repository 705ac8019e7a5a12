"""Metrics catalog domain: one gold asset per metric family, generated from ``metrics/*.yaml``.

Each family asset writes ``gold/metric_values/dt=D/family=F`` (rows carry the metric version
that computed them) and ``gold/metric_quality/dt=D/family=F``, and records its use of each
metric. The catalog tables (metrics, versions, dimensions, lineage) are rebuilt with the
serving warehouse. Definitions are re-read when a run starts, so an edited expression takes
effect (as a new version) without reloading the code location; a new family or a metric that
moves to another model needs a reload so the asset graph shows it.
"""

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as ds

from opslake.assets.conform import resolver_for_day
from opslake.assets.keys import OWNER, key
from opslake.assets.partitions import DAILY
from opslake.assets.resources import LakeResource
from opslake.assets.retries import STEP_RETRY
from opslake.lake import schemas
from opslake.lake.cmdb import cmdb_as_of, end_of_day
from opslake.lake.storage import Lake
from opslake.metrics_catalog import live, tables
from opslake.metrics_catalog.catalog import Catalog
from opslake.metrics_catalog.completeness import metric_quality
from opslake.metrics_catalog.compute import METRIC_VALUES, compute, required_models
from opslake.metrics_catalog.loader import MetricSet, load
from opslake.metrics_catalog.models import MODELS, current_rows
from opslake.metrics_catalog.usage import record_usage
from opslake.settings import Settings

if TYPE_CHECKING:  # Dagster exports no public name for the graph type
    from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph

VALUES = "metric_values"
QUALITY = "metric_quality"


def family_key(family: str) -> dg.AssetKey:
    """The asset of one metric family: a slice of ``gold/metric_values``."""
    return dg.AssetKey(["gold", VALUES, family])


def upstream_map(graph: "BaseAssetGraph") -> dict[str, list[str]]:
    """Asset key → the keys it is built from, in a code location's asset ``graph``."""
    out = {}
    for k in graph.get_all_asset_keys():
        out[k.to_user_string()] = sorted(p.to_user_string() for p in graph.get(k).parent_keys)
    return out


def history_reader(lake: Lake):
    """Earlier days of gold metric rows, for cumulative metrics."""

    def read(ids: list[str], days: list[str]) -> pa.Table:
        known = set(lake.partitions("gold", VALUES))
        dataset = lake.dataset(
            "gold", VALUES, schema=METRIC_VALUES, dts=[d for d in days if d in known]
        )
        if dataset is None:
            return METRIC_VALUES.empty_table()
        return dataset.to_table(filter=ds.field("metric_id").isin(ids))

    return read


def compute_family(
    lake: Lake, catalog: Catalog, family: str, dt: str, *, by: str
) -> dict[str, int]:
    """Compute and write one family's metrics for day ``dt``; returns rows per metric."""
    metrics = catalog.metrics
    ids = metrics.families[family]
    versions = catalog.record_versions(
        by=by, ids=sorted({*ids, *(u for i in ids for u in metrics.upstream_closure(i))})
    )
    start = end_of_day(dt) - timedelta(days=1)
    cmdb = current_rows(cmdb_as_of(lake, dt), end_of_day(dt))
    silver = {}
    for name in required_models(metrics, ids):
        table = MODELS[name].table
        if table != "assets":
            silver[table] = (
                lake.dataset("silver", table, schema=schemas.SILVER[table], dts=[dt])
                or schemas.SILVER[table].empty_table()
            )
    values = compute(
        metrics,
        ids,
        day=dt,
        silver=silver,
        cmdb=cmdb,
        versions=versions,
        start=start,
        end=end_of_day(dt),
        history=history_reader(lake),
    )
    quality = metric_quality(values, metrics, ids, cmdb, versions, start, end_of_day(dt))
    partition = {"dt": dt, "family": family}
    lake.write_table(values, "gold", VALUES, partition)
    lake.write_table(quality, "gold", QUALITY, partition)
    counts = {mid: 0 for mid in ids}
    for mid in values.column("metric_id").to_pylist():
        counts[mid] += 1
    record_usage(
        lake,
        principal_kind="job",
        principal=by,
        action="compute",
        metrics={m: (versions[m], n) for m, n in counts.items()},
        detail={"day": dt},
    )
    return counts


def _family_asset(metrics: MetricSet, family: str) -> dg.AssetsDefinition:
    members = metrics.family(family)
    reads = sorted(
        {MODELS[n].table for n in required_models(metrics, [m.id for m in members])} | {"assets"}
    )
    owners = sorted({OWNER, *(m.owner for m in members if m.owner.startswith("team:"))})
    listing = "\n".join(
        f"- `{m.id}` {m.name('zh-CN')} / {m.name('en')} ({m.type}, {m.unit})" for m in members
    )
    description = (
        f"{metrics.family_descriptions.get(family) or family}\n\n"
        f"Catalog metrics of family `{family}` (from "
        f"{metrics.family_files[family]}), hourly/daily per scope, written to "
        f"gold/metric_values/dt=D/family={family} with their version:\n{listing}"
    )

    @dg.asset(
        key=family_key(family),
        deps=[key("silver", t) for t in reads],
        group_name="gold",
        kinds={"duckdb", "parquet"},
        owners=owners,
        partitions_def=DAILY,
        description=description,
        tags={"opslake/metric_family": family},
        metadata={"metrics": dg.MetadataValue.json([m.id for m in members])},
    )
    def family_asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        settings = lake.settings()
        live = Catalog(settings.metrics_dir, lake.lake())
        counts = compute_family(
            lake.lake(),
            live,
            family,
            context.partition_key,
            by=f"dagster:{context.run.job_name}/{context.run.run_id}",
        )
        return dg.MaterializeResult(
            metadata={
                "rows": sum(counts.values()),
                "metrics": len(counts),
                "metrics_without_rows": dg.MetadataValue.json(
                    sorted(m for m, n in counts.items() if n == 0)
                ),
            }
        )

    return family_asset


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key("gold", name),
            group_name="catalog",
            kinds={"parquet"},
            owners=[OWNER],
            description=text,
        )
        for name, text in tables.DESCRIPTIONS.items()
    ],
)
def catalog_tables(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> Iterator[dg.MaterializeResult]:
    """Rebuild the catalog tables the warehouse serves."""
    settings: Settings = lake.settings()
    catalog = Catalog(settings.metrics_dir, lake.lake())
    catalog.record_versions(by=f"dagster:{context.run.job_name}/{context.run.run_id}")
    # The whole graph of the job's code location (the job's own graph is the selection),
    # given by Dagster to the step: nothing below orchestration/ loads the location.
    graph = context.job_def.asset_layer.asset_graph.source_asset_graph
    written = tables.write_catalog_tables(catalog, upstream_map(graph))
    for name, rows in written.items():
        yield dg.MaterializeResult(asset_key=key("gold", name), metadata={"rows": rows})


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            key("silver", live.LIVE_POINTS),
            group_name="live",
            kinds={"parquet"},
            owners=[OWNER],
            deps=[key("landing", s) for s in live.SOURCES],
            description="Today's metric samples, conformed batch by batch as they "
            "land (one file per landed batch), ahead of the daily "
            "silver/metric_points.",
        ),
        dg.AssetSpec(
            key("gold", live.LIVE_VALUES),
            group_name="live",
            kinds={"duckdb", "parquet"},
            owners=[OWNER],
            deps=[key("silver", live.LIVE_POINTS), key("silver", "assets")],
            description="Catalog metrics over metric points, hourly, for the hours "
            "that newly landed samples touch (dt=D/hour=HH); refreshed "
            "by metrics_live_sensor within a minute of data landing. "
            "The daily gold/metric_values replaces them.",
        ),
    ],
)
def metrics_live(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> Iterator[dg.MaterializeResult]:
    """Conform newly landed metric batches of today and recompute the hours they touch."""
    settings, lk = lake.settings(), lake.lake()
    day = datetime.now(UTC).date().isoformat()
    catalog = Catalog(settings.metrics_dir, lk)
    ids = live.live_metric_ids(catalog.metrics)
    versions = catalog.record_versions(
        by=f"dagster:{context.run.job_name}/{context.run.run_id}",
        ids=sorted({*ids, *(u for i in ids for u in catalog.metrics.upstream_closure(i))}),
    )
    resolver = resolver_for_day(lk, day)
    done = live.refresh(
        lk,
        catalog.metrics,
        day,
        cmdb=current_rows(cmdb_as_of(lk, day), end_of_day(day)),
        resolve=lambda raw: resolver.resolve(raw).to_arrow(),
        versions=versions,
    )
    context.log.info(
        f"{len(done.batches)} new batch(es), {done.points} points, hours "
        f"{', '.join(done.hours) or 'none'} recomputed ({done.rows} rows)"
    )
    yield dg.MaterializeResult(
        asset_key=key("silver", live.LIVE_POINTS),
        metadata={"batches": len(done.batches), "points": done.points},
    )
    yield dg.MaterializeResult(
        asset_key=key("gold", live.LIVE_VALUES),
        metadata={
            "hours": ", ".join(done.hours),
            "rows": done.rows,
            "pruned_partitions": len(done.pruned),
        },
    )


metrics_live_job = dg.define_asset_job(
    "metrics_live_refresh",
    selection=dg.AssetSelection.assets(metrics_live)
    | dg.AssetSelection.assets(key("gold", "anomalies_live")),
    description="Conform newly landed metric batches, refresh the current hours' metrics and "
    "score today's points for anomalies.",
    # One small step: a step subprocess would cost more than the work (~20 s here).
    executor_def=dg.in_process_executor,
    op_retry_policy=STEP_RETRY,
)


@dg.sensor(
    job=metrics_live_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts metrics_live when new Prometheus or MQTT batches land today.",
)
def metrics_live_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    """A run per new set of landed metric batches (the cursor is their digest)."""
    lk = Lake.from_settings(Settings.from_env())
    day = datetime.now(UTC).date().isoformat()
    pending = sorted(b.batch_id for b in live.pending_batches(lk, day))
    if not pending:
        return dg.SensorResult(skip_reason=f"no new metric batches for {day}")
    digest = hashlib.sha256("\n".join([day, *pending]).encode()).hexdigest()[:16]
    if digest == context.cursor:
        return dg.SensorResult(skip_reason="a run for these batches was already requested")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=digest)], cursor=digest)


def build_defs(settings: Settings) -> dg.Definitions:
    """Assets for the catalog at ``settings.metrics_dir``."""
    metrics = load(settings.metrics_dir)
    families = [_family_asset(metrics, f) for f in sorted(metrics.families)]
    return dg.Definitions(
        assets=[*families, catalog_tables, metrics_live],
        jobs=[metrics_live_job],
        sensors=[metrics_live_sensor],
    )


defs = build_defs(Settings.from_env())
