"""Read one metric's gold values (S6.2c query): the one read path for the CLI, API and client.

Filters are pyarrow dataset expressions built from validated names and bound values; no
text from the caller becomes SQL. Every read is recorded as usage (S6.2f usage tracing).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from opslake.errors import ConfigError
from opslake.lake.storage import Lake
from opslake.metrics_catalog.compute import DIM_COLUMNS, METRIC_VALUES, SCOPE_COLUMNS
from opslake.metrics_catalog.definition import MetricDefinition
from opslake.metrics_catalog.live import LIVE_VALUES
from opslake.metrics_catalog.usage import record_usage

VALUES = "metric_values"


def _days(start: datetime, end: datetime) -> list[str]:
    first, last = (
        start.astimezone(UTC).date(),
        (end - timedelta(microseconds=1)).astimezone(UTC).date(),
    )
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def query(
    lake: Lake,
    metric: MetricDefinition,
    *,
    start: datetime,
    end: datetime,
    grain: str = "1h",
    scope: str = "all",
    where: Mapping[str, str] | None = None,
    live: bool = False,
    principal: tuple[str, str],
    detail: Mapping | None = None,
) -> pa.Table:
    """Rows of ``metric`` with ``start <= bucket_start < end`` at ``grain`` and ``scope``.

    ``where`` filters on dimension columns (``business``, ``region``, …); ``live`` reads the
    near-real-time hours instead of the daily partitions. ``principal`` is (kind, name) for
    the usage log.
    """
    if grain not in metric.grains:
        raise ConfigError(f"{metric.id} has grains {', '.join(metric.grains)}, not {grain!r}")
    scopes = [*metric.dimensions, "all"]
    if scope not in scopes:
        raise ConfigError(f"{metric.id} can be broken down by {', '.join(scopes)}, not {scope!r}")
    allowed = set(SCOPE_COLUMNS.get(scope, ()))
    for column in where or {}:
        if column not in allowed:
            raise ConfigError(
                f"filter on {column!r} is not possible at scope {scope!r}; "
                f"use one of {', '.join(sorted(allowed)) or '(none)'}"
            )
    if end <= start:
        raise ConfigError("the time range is empty; the end must be after the start")
    table = LIVE_VALUES if live else VALUES
    days = _days(start, end)
    known = set(lake.partitions("gold", table))
    dataset = lake.dataset("gold", table, schema=METRIC_VALUES, dts=[d for d in days if d in known])
    columns = [
        "bucket_start",
        *(c for c in DIM_COLUMNS if c in allowed),
        "value",
        "numerator",
        "denominator",
        "metric_version",
    ]
    if dataset is None:
        rows = METRIC_VALUES.empty_table().select(columns)
    else:
        ts = METRIC_VALUES.field("bucket_start").type
        condition = (
            (ds.field("metric_id") == metric.id)
            & (ds.field("grain") == grain)
            & (ds.field("scope") == scope)
            & (ds.field("bucket_start") >= pa.scalar(start, ts))
            & (ds.field("bucket_start") < pa.scalar(end, ts))
        )
        for column, value in (where or {}).items():
            condition &= ds.field(column) == value
        rows = dataset.to_table(columns=columns, filter=condition)
        rows = rows.take(
            pc.sort_indices(
                rows, [("bucket_start", "ascending"), *((c, "ascending") for c in columns[1:-4])]
            )
        )
    versions = sorted(set(rows.column("metric_version").to_pylist())) or ["-"]
    record_usage(
        lake,
        principal_kind=principal[0],
        principal=principal[1],
        action="read",
        metrics={metric.id: (",".join(versions), rows.num_rows)},
        detail={
            "start": start.isoformat(),
            "end": end.isoformat(),
            "grain": grain,
            "scope": scope,
            "where": dict(where or {}),
            "live": live,
            **dict(detail or {}),
        },
    )
    return rows


def day_range(first: date, last: date) -> tuple[datetime, datetime]:
    """[first 00:00, last+1 00:00) in UTC."""
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return start, datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
