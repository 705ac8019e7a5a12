"""Near-real-time metrics: the hours that new samples touch, recomputed as batches land (S6.2c).

The daily pipeline stays the authority (bronze, quarantine, full silver, every grain). Ahead
of it, each newly landed Prometheus or MQTT batch of the day is parsed and conformed on its
own into ``silver/metric_points_live/dt=D/<batch id>.parquet`` (one immutable file per batch,
so a batch is never processed twice), and every hour its samples fall in is recomputed at
the hourly grain into ``gold/metric_values_live/dt=D/hour=HH`` for the catalog metrics that
read only metric points. Lines that do not parse are skipped here; the landed batch keeps
them and the daily bronze run quarantines them with their reason. Live partitions older
than yesterday are dropped: by then the daily partitions are the answer.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from opslake.ingest.parsers import ParseResult, mqtt, prometheus
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.schemas import METRIC_POINTS
from opslake.lake.storage import Lake
from opslake.metrics_catalog.compute import compute
from opslake.metrics_catalog.loader import MetricSet
from opslake.transforms.metrics import to_silver

LIVE_POINTS = "metric_points_live"
LIVE_VALUES = "metric_values_live"
#: Landing sources of metric samples and the parser of each.
SOURCES: dict[str, Callable[[bytes, LandedBatch], ParseResult]] = {
    "prometheus": prometheus.parse,
    "mqtt": mqtt.parse_metrics,
}


@dataclass
class LiveRefresh:
    """What one refresh did."""

    batches: list[str] = field(default_factory=list)
    points: int = 0
    hours: list[str] = field(default_factory=list)
    rows: int = 0
    pruned: list[str] = field(default_factory=list)


def live_metric_ids(metrics: MetricSet) -> list[str]:
    """Metrics computable from metric points alone at the hourly grain."""
    out = []
    for mid, m in metrics.metrics.items():
        chain = [metrics.metrics[u] for u in [*metrics.upstream_closure(mid), mid]]
        if (
            "1h" in m.grains
            and all(c.type != "cumulative" for c in chain)
            and all(c.model == "metric_points" for c in chain if c.type == "simple")
        ):
            out.append(mid)
    return sorted(out)


def pending_batches(lake: Lake, day: str) -> list[LandedBatch]:
    """Batches of the day's metric sources not yet in the live points."""
    done_dir = lake.table_path("silver", LIVE_POINTS, {"dt": day})
    done = {
        f.rsplit("/", 1)[-1].removesuffix(".parquet")
        for f in (lake.list_files(done_dir) if lake.exists(done_dir) else [])
    }
    zone = LandingZone(lake)
    return [b for source in SOURCES for b in zone.batches(source, day) if b.batch_id not in done]


def _write(lake: Lake, path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", coerce_timestamps="us")
    lake.put_atomic(path, [buffer.getvalue()])


def refresh(
    lake: Lake,
    metrics: MetricSet,
    day: str,
    *,
    cmdb: pa.Table,
    resolve: Callable[[pa.Array], pa.Array],
    versions: dict[str, str],
) -> LiveRefresh:
    """Conform the day's new batches and recompute the hours they touch."""
    out = LiveRefresh()
    zone = LandingZone(lake)
    hours: set[datetime] = set()
    day_start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    for batch in pending_batches(lake, day):
        parsed = SOURCES[batch.source](zone.read(batch), batch)
        # One landed batch is small: it is sorted as one shard.
        chunks = list(
            to_silver(
                lambda columns, t=parsed.table, src=batch.source: [(src, t.select(columns))],
                resolve,
                rows_per_shard=max(1, parsed.table.num_rows),
            )
        )
        points = pa.concat_tables(chunks) if chunks else METRIC_POINTS.empty_table()
        points = points.cast(METRIC_POINTS)
        _write(
            lake,
            f"{lake.table_path('silver', LIVE_POINTS, {'dt': day})}/{batch.batch_id}.parquet",
            points,
        )
        out.batches.append(batch.batch_id)
        out.points += points.num_rows
        for ts in pc.unique(pc.floor_temporal(points.column("ts"), unit="hour")).to_pylist():
            if ts is not None and day_start <= ts < day_start + timedelta(days=1):
                hours.add(ts)
    ids = live_metric_ids(metrics)
    dataset = lake.dataset("silver", LIVE_POINTS, schema=METRIC_POINTS, dts=[day])
    for hour in sorted(hours):
        end = hour + timedelta(hours=1)
        window = dataset.to_table(
            filter=(ds.field("ts") >= pa.scalar(hour, METRIC_POINTS.field("ts").type))
            & (ds.field("ts") < pa.scalar(end, METRIC_POINTS.field("ts").type))
        )
        # A batch delivered twice (at-least-once sources) must not count twice.
        window = _distinct_samples(window)
        values = compute(
            metrics,
            ids,
            day=day,
            silver={"metric_points": window},
            cmdb=cmdb,
            versions=versions,
            start=hour,
            end=end,
            grains=("1h",),
        )
        lake.write_table(values, "gold", LIVE_VALUES, {"dt": day, "hour": f"{hour:%H}"})
        out.hours.append(f"{hour:%H}")
        out.rows += values.num_rows
    out.pruned = prune(lake, day)
    return out


def prune(lake: Lake, today: str, keep_days: int = 2) -> list[str]:
    """Drop live partitions older than ``keep_days`` (the daily pipeline has them by then)."""
    first_kept = (datetime.fromisoformat(today) - timedelta(days=keep_days - 1)).date()
    return lake.drop_partitions_before(
        (("silver", LIVE_POINTS), ("gold", LIVE_VALUES)), first_kept.isoformat()
    )


def _distinct_samples(points: pa.Table) -> pa.Table:
    """One row per (metric, entity, ts, value, label set), the first one kept."""
    if points.num_rows == 0:
        return points
    labels = [repr(sorted(m)) if m else "" for m in points.column("labels").to_pylist()]
    keys = pa.table(
        {
            "metric": points.column("metric"),
            "entity_id": points.column("entity_id"),
            "ts": points.column("ts"),
            "value": points.column("value"),
            "labels": pa.array(labels, pa.string()),
            "row": pa.array(range(points.num_rows), pa.int64()),
        }
    )
    first = keys.group_by(
        ["metric", "entity_id", "ts", "value", "labels"], use_threads=False
    ).aggregate([("row", "min")])
    return points.take(pa.array(sorted(first.column("row_min").to_pylist()), pa.int64()))
