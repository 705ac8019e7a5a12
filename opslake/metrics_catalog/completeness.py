"""Per-metric quality of a day: completeness and timeliness (S6.2f metric quality).

- ``expected``: the buckets that should have a value. For an entity metric with
  ``applies_to``, the in-service CIs of those types times the day's hourly buckets (up to
  ``now`` for the current day); for another entity metric, the entities that reported at
  all that day times the buckets; otherwise the buckets of the estate-wide (``all``) row.
- ``observed``: how many of those buckets have a value (entity rows at hourly grain, or
  ``all`` rows when the metric has no hourly grain, which then counts days).
- ``completeness``: observed / expected (null when nothing was expected). Only metrics
  over sampled models (metric points, probes, the CMDB snapshot) have one: an hour without
  alerts, tickets or error logs is quiet, not missing, so event counts get ``expected`` and
  ``completeness`` null and are judged by freshness.
- ``last_bucket_start`` and ``freshness_minutes``: the newest bucket with data and the
  minutes from its end to the end of the day (or to ``now`` for the current day).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa

from opslake.lake import duck
from opslake.lake.schemas import TS
from opslake.metrics_catalog.loader import MetricSet
from opslake.metrics_catalog.models import MODELS

METRIC_QUALITY_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("metric_id", pa.string()),
        ("metric_version", pa.string()),
        ("rows", pa.int64()),
        ("expected", pa.int64()),
        ("observed", pa.int64()),
        ("completeness", pa.float64()),
        ("last_bucket_start", TS),
        ("freshness_minutes", pa.float64()),
    ]
)


def metric_quality(
    values: pa.Table,
    metrics: MetricSet,
    ids: list[str],
    cmdb: pa.Table,
    versions: dict[str, str],
    start: datetime,
    end: datetime,
) -> pa.Table:
    """One row per metric ``ids`` of ``values`` (rows of ``METRIC_VALUES``) for the day
    ``[start, end)``."""
    con = duck.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.register("v", values)
        con.register("cmdb", cmdb.select(["entity_id", "type", "lifecycle_state"]))
        rows = []
        for m in (metrics.metrics[i] for i in ids):
            sampled = all(
                MODELS[metrics.metrics[u].model].sampled
                for u in [*metrics.upstream_closure(m.id), m.id]
                if metrics.metrics[u].model
            )
            hourly = "1h" in m.grains
            grain, width = ("1h", timedelta(hours=1)) if hourly else ("1d", timedelta(days=1))
            buckets = max(1, -(-(end - start) // width))
            if "entity" in m.dimensions:
                observed_sql = (
                    f"SELECT count(DISTINCT (entity_id, bucket_start)) FROM v WHERE "
                    f"metric_id = $m AND grain = '{grain}' AND scope = 'entity' "
                    "AND value IS NOT NULL AND entity_id IS NOT NULL"
                )
                if m.applies_to:
                    types = ", ".join(f"'{t}'" for t in m.applies_to)
                    population = con.execute(
                        "SELECT count(DISTINCT entity_id) FROM cmdb WHERE lifecycle_state = "
                        f"'in_service' AND type IN ({types})"
                    ).fetchone()[0]
                    observed_sql += (
                        " AND entity_id IN (SELECT entity_id FROM cmdb WHERE "
                        f"lifecycle_state = 'in_service' AND type IN ({types}))"
                    )
                else:
                    population = con.execute(
                        "SELECT count(DISTINCT entity_id) FROM v WHERE metric_id = $m AND "
                        "scope = 'entity'",
                        {"m": m.id},
                    ).fetchone()[0]
            else:
                population = 1
                observed_sql = (
                    f"SELECT count(DISTINCT bucket_start) FROM v WHERE metric_id = "
                    f"$m AND grain = '{grain}' AND scope = 'all' AND value IS NOT NULL"
                )
            observed = con.execute(observed_sql, {"m": m.id}).fetchone()[0]
            total, last = con.execute(
                "SELECT count(*), max(bucket_start) FILTER (WHERE grain = $g) FROM v "
                "WHERE metric_id = $m",
                {"m": m.id, "g": grain},
            ).fetchone()
            expected = population * buckets if sampled else None
            fresh = None if last is None else (end - (last + width)).total_seconds() / 60
            rows.append(
                {
                    "day": start.date(),
                    "metric_id": m.id,
                    "metric_version": versions[m.id],
                    "rows": total,
                    "expected": expected,
                    "observed": observed if sampled else None,
                    "completeness": observed / expected if expected else None,
                    "last_bucket_start": last,
                    "freshness_minutes": None if fresh is None else max(fresh, 0.0),
                }
            )
        return pa.Table.from_pylist(rows, schema=METRIC_QUALITY_SCHEMA)
    finally:
        con.close()
