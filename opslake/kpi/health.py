"""Hourly health score per entity and per business (S5.2e).

``entity_health`` gives one row per in-service entity and UTC hour of ``day`` (24 rows per
entity, also for entities without any data). The score starts at 100 and loses:

- ``alert_penalty``: for every distinct alert (``fingerprint``) firing at any time in the
  hour, the weight of its severity (``SEVERITY_WEIGHTS``), summed and capped at 100. An
  alert is firing from ``starts_at`` until the ``ends_at`` of the ``resolved`` event with
  the same fingerprint and ``starts_at`` (its ``received_at`` where ``ends_at`` is empty);
  without a resolved event that day it is firing to the end of the day. An alert that
  started the day before counts from midnight if the day holds its resolved event or a
  re-sent firing event (Alertmanager re-sends firing alerts). Severities are matched
  case-insensitively; an unknown one weighs as ``warning`` so that it is not lost.
- ``saturation_penalty``: for every ``*_ratio`` metric of the entity whose hourly ``p95``
  (from ``rollup_1h``) is above 0.9, 25; above 0.8, 10 (``SATURATION_LEVELS``); capped at 50.
- ``staleness_penalty``: 40 in an hour without metric samples, for an entity that normally
  reports, meaning one with samples in at least one hour of ``day``. An entity that never
  reports metrics (a rack, a licence) is never stale.

``health_score = clamp(100 - alert - saturation - staleness, 0, 100)``; ``status`` is
``healthy`` at 80 or more, ``degraded`` at 50 or more, else ``critical``; ``reason`` names
what cost points, or ``ok``.

Entities come from the silver ``assets`` history: the version valid at the end of ``day``
(``valid_from`` before midnight, ``valid_to`` empty or not before midnight), kept only when
its ``lifecycle_state`` is ``in_service``. Alerts and metrics of other entities are left out.
Rows are sorted by ``hour``, ``entity_id``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl
import pyarrow as pa

from opslake.lake.schemas import TS

#: Points an alert of each severity costs in every hour it fires.
SEVERITY_WEIGHTS: dict[str, float] = {"info": 2.0, "warning": 10.0, "major": 30.0, "critical": 60.0}
#: (p95 above, penalty) for each ``*_ratio`` metric, the first match applies.
SATURATION_LEVELS: tuple[tuple[float, float], ...] = ((0.9, 25.0), (0.8, 10.0))
ALERT_PENALTY_CAP = 100.0
SATURATION_PENALTY_CAP = 50.0
STALENESS_PENALTY = 40.0
HEALTHY_AT = 80.0
DEGRADED_AT = 50.0
IN_SERVICE = "in_service"
#: ``business_health`` groups entities without a business under this name.
NO_BUSINESS = "(unassigned)"

ENTITY_HEALTH_SCHEMA = pa.schema(
    [
        ("hour", TS),
        ("entity_id", pa.string()),
        ("kind", pa.string()),
        ("business", pa.string()),
        ("department", pa.string()),
        ("health_score", pa.float64()),
        ("status", pa.string()),
        ("alert_penalty", pa.float64()),
        ("saturation_penalty", pa.float64()),
        ("staleness_penalty", pa.float64()),
        ("firing_alerts", pa.int64()),
        ("worst_severity", pa.string()),
        ("metric_samples", pa.int64()),
        ("reason", pa.string()),
    ]
)

BUSINESS_HEALTH_SCHEMA = pa.schema(
    [
        ("hour", TS),
        ("business", pa.string()),
        ("entities", pa.int64()),
        ("avg_health_score", pa.float64()),
        ("min_health_score", pa.float64()),
        ("healthy_entities", pa.int64()),
        ("degraded_entities", pa.int64()),
        ("critical_entities", pa.int64()),
    ]
)

_HOUR = timedelta(hours=1)
_HOUR_US = 3_600_000_000
# Severity order, least severe first: the rank is the position, so max() is the worst.
_SEVERITIES = tuple(SEVERITY_WEIGHTS)
_UNKNOWN_SEVERITY_RANK = _SEVERITIES.index("warning")


def _in_service(assets: pa.Table, at: datetime) -> pl.DataFrame:
    """Entities whose version valid at ``at`` is in service, with their grouping columns."""
    columns = ["entity_id", "kind", "business", "department", "lifecycle_state"]
    versions = pl.from_arrow(assets.select([*columns, "valid_from", "valid_to"]))
    return (
        versions.filter(
            pl.col("entity_id").is_not_null()
            & (pl.col("valid_from").is_null() | (pl.col("valid_from") < at))
            & (pl.col("valid_to").is_null() | (pl.col("valid_to") >= at))
        )
        # Overlapping versions would be a silver bug; take the newest, ties broken by content,
        # so the pick does not depend on row order.
        .sort(
            ["entity_id", "valid_from", *columns[1:]],
            descending=[False, True, False, False, False, False],
            nulls_last=True,
        )
        .unique("entity_id", keep="first", maintain_order=True)
        .filter(pl.col("lifecycle_state") == IN_SERVICE)
        .select(columns[:-1])
    )


def _alerts_by_hour(events: pa.Table, start: datetime, end: datetime) -> pl.DataFrame:
    """Per entity and hour: distinct alerts firing, their summed weight and the worst rank."""
    ev = pl.from_arrow(
        events.select(
            [
                "event_id",
                "fingerprint",
                "status",
                "severity",
                "entity_id",
                "starts_at",
                "ends_at",
                "received_at",
            ]
        )
    )
    status = pl.col("status").str.to_lowercase()
    rank = (
        pl.col("severity")
        .str.strip_chars()
        .str.to_lowercase()
        .replace_strict(
            {s: i for i, s in enumerate(_SEVERITIES)}, default=None, return_dtype=pl.Int64
        )
        .fill_null(_UNKNOWN_SEVERITY_RANK)
    )
    resolved = status == "resolved"
    alerts = (
        ev.filter(
            pl.col("entity_id").is_not_null()
            & pl.col("starts_at").is_not_null()
            & status.is_in(["firing", "resolved"])
        )
        .with_columns(alert=pl.coalesce("fingerprint", "event_id"), rank=rank)
        .group_by(["alert", "starts_at"])
        .agg(
            entity_id=pl.col("entity_id").min(),
            rank=pl.col("rank").max(),
            resolved_at=pl.coalesce("ends_at", "received_at").filter(resolved).min(),
            resolved=resolved.any(),
        )
    )
    # [first, last] hour index of the day in which the alert fires; a resolution that is
    # reported before its start is taken as an instant alert at the start.
    stop = (
        pl.when(pl.col("resolved"))
        .then(pl.max_horizontal("starts_at", pl.col("resolved_at").fill_null(end)))
        .otherwise(pl.lit(end))
    )
    clipped_start = pl.max_horizontal("starts_at", pl.lit(start))
    clipped_stop = pl.min_horizontal(stop, pl.lit(end))
    alerts = alerts.with_columns(
        from_us=(clipped_start - pl.lit(start)).dt.total_microseconds(),
        to_us=(clipped_stop - pl.lit(start)).dt.total_microseconds(),
        in_day=(clipped_start < end)
        & ((clipped_stop > clipped_start) | (pl.col("starts_at") >= start)),
    ).filter("in_day")
    first = pl.col("from_us") // _HOUR_US
    last = pl.max_horizontal(first, (pl.col("to_us") - 1) // _HOUR_US)
    weight = pl.col("rank").replace_strict(
        dict(enumerate(SEVERITY_WEIGHTS.values())), return_dtype=pl.Float64
    )
    return (
        alerts.select("alert", "entity_id", "rank", idx=pl.int_ranges(first, last + 1))
        .explode("idx")
        .with_columns(hour=pl.lit(start) + pl.duration(hours=pl.col("idx")))
        # A flapping alert (one fingerprint, several starts in an hour) counts once.
        .group_by(["entity_id", "hour", "alert"])
        .agg(pl.col("rank").max())
        .group_by(["entity_id", "hour"])
        .agg(
            firing_alerts=pl.len().cast(pl.Int64),
            alert_penalty=weight.sum().clip(upper_bound=ALERT_PENALTY_CAP),
            worst_rank=pl.col("rank").max(),
        )
    )


def _metrics_by_hour(rollup_1h: pa.Table, start: datetime, end: datetime) -> pl.DataFrame:
    """Per entity and hour: metric samples, saturation penalty and the saturated metrics."""
    r = pl.from_arrow(rollup_1h.select(["bucket_start", "metric", "entity_id", "samples", "p95"]))
    level = pl.lit(0.0)
    for threshold, penalty in reversed(SATURATION_LEVELS):
        level = pl.when(pl.col("p95") > threshold).then(penalty).otherwise(level)
    level = pl.when(pl.col("metric").str.ends_with("_ratio")).then(level).otherwise(0.0)
    return (
        r.filter(
            pl.col("entity_id").is_not_null()
            & (pl.col("bucket_start") >= start)
            & (pl.col("bucket_start") < end)
        )
        # Truncating keeps finer rollups usable: their buckets fall into their hour.
        .with_columns(hour=pl.col("bucket_start").dt.truncate("1h"), level=level)
        .group_by(["entity_id", "hour"])
        .agg(
            metric_samples=pl.col("samples").sum().cast(pl.Int64),
            saturation_penalty=pl.col("level").sum().clip(upper_bound=SATURATION_PENALTY_CAP),
            saturated=pl.format("{} p95={}", "metric", pl.col("p95").round(3))
            .filter(pl.col("level") > 0)
            .unique()
            .sort()
            .str.join(", "),
        )
    )


def entity_health(events: pa.Table, rollup_1h: pa.Table, assets: pa.Table, day: date) -> pa.Table:
    """Hourly health of every in-service entity for the UTC ``day`` (see the module doc)."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    end = start + timedelta(days=1)
    entities = _in_service(assets, end)
    if entities.height == 0:
        return ENTITY_HEALTH_SCHEMA.empty_table()

    hours = pl.DataFrame(
        {"hour": [start + i * _HOUR for i in range(24)]},
        schema={"hour": pl.Datetime("us", "UTC")},
    )
    metrics = _metrics_by_hour(rollup_1h, start, end)
    reporting = metrics.filter(pl.col("metric_samples") > 0)["entity_id"].unique().implode()
    keys = ["entity_id", "hour"]
    df = (
        entities.join(hours, how="cross")
        .join(_alerts_by_hour(events, start, end), on=keys, how="left")
        .join(metrics, on=keys, how="left")
        .with_columns(
            pl.col("firing_alerts", "metric_samples").fill_null(0),
            pl.col("alert_penalty", "saturation_penalty").fill_null(0.0),
            worst_severity=pl.col("worst_rank").replace_strict(
                dict(enumerate(_SEVERITIES)), default=None, return_dtype=pl.String
            ),
        )
        .with_columns(
            staleness_penalty=pl.when(
                pl.col("entity_id").is_in(reporting) & (pl.col("metric_samples") == 0)
            )
            .then(STALENESS_PENALTY)
            .otherwise(0.0)
        )
        .with_columns(
            health_score=(
                100.0
                - pl.col("alert_penalty")
                - pl.col("saturation_penalty")
                - pl.col("staleness_penalty")
            ).clip(0.0, 100.0)
        )
    )
    parts = pl.concat_list(
        pl.when(pl.col("firing_alerts") > 0).then(
            pl.format("{} alert(s) firing, worst {}", "firing_alerts", "worst_severity")
        ),
        pl.when(pl.col("saturation_penalty") > 0).then(pl.format("saturated: {}", "saturated")),
        pl.when(pl.col("staleness_penalty") > 0).then(pl.lit("no metric samples in the hour")),
    ).list.drop_nulls()
    df = df.with_columns(
        status=pl.when(pl.col("health_score") >= HEALTHY_AT)
        .then(pl.lit("healthy"))
        .when(pl.col("health_score") >= DEGRADED_AT)
        .then(pl.lit("degraded"))
        .otherwise(pl.lit("critical")),
        reason=pl.when(parts.list.len() > 0).then(parts.list.join("; ")).otherwise(pl.lit("ok")),
    )
    return (
        df.select(ENTITY_HEALTH_SCHEMA.names)
        .sort(["hour", "entity_id"])
        .to_arrow()
        .cast(ENTITY_HEALTH_SCHEMA)
    )


def business_health(entity_health_table: pa.Table) -> pa.Table:
    """Per hour and business: entity count, mean and minimum score, entities per status."""
    df = pl.from_arrow(entity_health_table.select(["hour", "business", "health_score", "status"]))
    if df.height == 0:
        return BUSINESS_HEALTH_SCHEMA.empty_table()
    return (
        df.with_columns(pl.col("business").fill_null(NO_BUSINESS))
        .group_by(["hour", "business"])
        .agg(
            entities=pl.len().cast(pl.Int64),
            avg_health_score=pl.col("health_score").mean(),
            min_health_score=pl.col("health_score").min(),
            **{
                f"{status}_entities": (pl.col("status") == status).sum().cast(pl.Int64)
                for status in ("healthy", "degraded", "critical")
            },
        )
        .sort(["hour", "business"])
        .to_arrow()
        .cast(BUSINESS_HEALTH_SCHEMA)
    )
