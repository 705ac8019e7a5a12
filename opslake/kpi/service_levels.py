"""Service levels per business and day from ITSM tickets (S5.3, S7.3b).

The cohort is the tickets opened on the UTC ``day`` (``day 00:00 <= opened_at < day+1
00:00``); each appears once (where silver holds a ticket twice, the row furthest in its
lifecycle counts). Lifecycle timestamps are taken as the data knows them, so a resolution
after the day counts for the day the incident was opened, and recomputing a partition after
a newer ITSM export picks it up. Per ``business``, plus one row ``(all)`` for the province:

- ``incidents_opened``: tickets of type ``incident``.
- ``incidents_resolved``: those incidents with a ``resolved_at``.
- ``mtta_minutes``: mean of ``acknowledged_at - opened_at`` in minutes over incidents with an
  ``acknowledged_at``; null when none.
- ``mttr_minutes``: mean of ``resolved_at - opened_at`` in minutes over resolved incidents;
  null when none.
- ``sla_met`` / ``sla_attainment``: resolved incidents with a ``sla_target_minutes`` whose
  ``resolved_at - opened_at`` is at most the target, and their share of the resolved
  incidents with a target; the share is null when there are none.
- ``sla_breached``: incidents with a target that are resolved after it, or unresolved while
  ``opened_at + target`` lies before the end of the day (so ``sla_breached`` is not simply
  resolved minus met). Unresolved incidents whose target
  is still ahead at midnight are neither met nor breached.
- ``open_incidents_end_of_day``: incidents not resolved by the end of the day (no
  ``resolved_at``, or one at or after midnight). Only the day's cohort: incidents still
  open from earlier days live in their own partitions.
- ``requests_opened``, ``problems_opened``, ``changes``: tickets of those types.
- ``failed_changes``: changes whose ``change_result`` is ``failed``.
- ``change_failure_rate``: ``failed_changes`` over changes with a result (``successful``
  or ``failed``); null when none has one.

Incidents handled in OpsLake (``handled``: acknowledged or resolved there, see
``opslake.alerting.handling``) count by their own events: each such incident replaces the
incident tickets linked to it (their alert fingerprint is one of its alerts' and they were
opened while it was open, from its start to its alerts' end) with one row opened at the
incident's start, acknowledged at its first acknowledgement and resolved at its standing
resolution, each taken from the linked tickets (the proxy) only when OpsLake has no such
event; its business and SLA target are the linked tickets' (else its first business). An
incident handled in OpsLake without a ticket counts too.

Durations below zero (a timestamp before ``opened_at``) are data errors that the quality
checks report; they are left out of the means. Tickets without a business are counted
under ``(unassigned)``. Rows are sorted with ``(all)`` first, then by business.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl
import pyarrow as pa

ALL_BUSINESSES = "(all)"
NO_BUSINESS = "(unassigned)"

SERVICE_LEVELS_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("business", pa.string()),
        ("incidents_opened", pa.int64()),
        ("incidents_resolved", pa.int64()),
        ("mtta_minutes", pa.float64()),
        ("mttr_minutes", pa.float64()),
        ("sla_met", pa.int64()),
        ("sla_attainment", pa.float64()),
        ("sla_breached", pa.int64()),
        ("open_incidents_end_of_day", pa.int64()),
        ("requests_opened", pa.int64()),
        ("problems_opened", pa.int64()),
        ("changes", pa.int64()),
        ("failed_changes", pa.int64()),
        ("change_failure_rate", pa.float64()),
    ]
)

#: OpsLake incidents with handling events, as :func:`service_levels` reads them.
HANDLED_SCHEMA = pa.schema(
    [
        ("incident_id", pa.string()),
        ("fingerprints", pa.list_(pa.string())),
        ("business", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("ended_at", pa.timestamp("us", tz="UTC")),
        ("acknowledged_at", pa.timestamp("us", tz="UTC")),
        ("resolved_at", pa.timestamp("us", tz="UTC")),
    ]
)

_COLUMNS = [
    "ticket_id",
    "type",
    "status",
    "business",
    "opened_at",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "sla_target_minutes",
    "change_result",
    "alert_fingerprint",
]


def _minutes(later: str) -> pl.Expr:
    """Minutes from ``opened_at`` to ``later``; null when unknown or negative (bad data)."""
    minutes = (pl.col(later) - pl.col("opened_at")).dt.total_microseconds() / 60e6
    return pl.when(minutes >= 0).then(minutes)


def _measures(end: datetime) -> dict[str, pl.Expr]:
    """The aggregations of one row, for any grouping of the cohort."""
    incident = pl.col("type") == "incident"
    resolved = incident & pl.col("resolved_at").is_not_null()
    target = pl.col("sla_target_minutes")
    ttr = _minutes("resolved_at")
    judged = resolved & target.is_not_null() & ttr.is_not_null()
    met = judged & (ttr <= target)
    late = judged & (ttr > target)
    overdue = (
        incident
        & target.is_not_null()
        & pl.col("resolved_at").is_null()
        & (pl.col("opened_at") + pl.duration(minutes=target) < end)
    )
    change = pl.col("type") == "change"
    result = pl.col("change_result").str.to_lowercase()
    failed = change & (result == "failed")
    executed = change & result.is_in(["successful", "failed"])

    def count(condition: pl.Expr) -> pl.Expr:
        return condition.fill_null(False).sum().cast(pl.Int64)

    return {
        "incidents_opened": count(incident),
        "incidents_resolved": count(resolved),
        "mtta_minutes": _minutes("acknowledged_at").filter(incident).mean(),
        "mttr_minutes": ttr.filter(resolved).mean(),
        "sla_met": count(met),
        "sla_attainment": pl.when(count(judged) > 0).then(count(met) / count(judged)),
        "sla_breached": count(late | overdue),
        "open_incidents_end_of_day": count(
            incident & (pl.col("resolved_at").is_null() | (pl.col("resolved_at") >= end))
        ),
        "requests_opened": count(pl.col("type") == "request"),
        "problems_opened": count(pl.col("type") == "problem"),
        "changes": count(change),
        "failed_changes": count(failed),
        "change_failure_rate": pl.when(count(executed) > 0).then(count(failed) / count(executed)),
    }


def _with_handled(tickets: pl.DataFrame, handled: pa.Table) -> pl.DataFrame:
    """``tickets`` with each handled incident in place of the incident tickets linked to it."""
    incidents = pl.from_arrow(handled)
    links = incidents.select("incident_id", "fingerprints", "started_at", "ended_at").explode(
        "fingerprints"
    )
    # A fingerprint may fire again in a later incident: a ticket belongs to the one that
    # was open when the ticket was opened.
    linked = (
        tickets.filter(pl.col("type").str.to_lowercase() == "incident")
        .join(links, left_on="alert_fingerprint", right_on="fingerprints", how="inner")
        .filter(
            (pl.col("opened_at") >= pl.col("started_at"))
            & (pl.col("ended_at").is_null() | (pl.col("opened_at") <= pl.col("ended_at")))
        )
        .drop("started_at", "ended_at")
    )
    proxy = (
        linked.sort("ticket_id")
        .group_by("incident_id")
        .agg(
            pl.col("business").drop_nulls().first().alias("ticket_business"),
            pl.col("acknowledged_at").min().alias("ticket_acknowledged_at"),
            # Resolved once every linked ticket is.
            pl.when(pl.col("resolved_at").null_count() == 0)
            .then(pl.col("resolved_at").max())
            .alias("ticket_resolved_at"),
            pl.col("sla_target_minutes").min(),
        )
    )
    rows = incidents.join(proxy, on="incident_id", how="left").select(
        ticket_id=pl.col("incident_id"),
        type=pl.lit("incident"),
        status=pl.lit(""),
        business=pl.coalesce("ticket_business", "business"),
        opened_at=pl.col("started_at"),
        acknowledged_at=pl.coalesce("acknowledged_at", "ticket_acknowledged_at"),
        resolved_at=pl.coalesce("resolved_at", "ticket_resolved_at"),
        closed_at=pl.lit(None),
        sla_target_minutes=pl.col("sla_target_minutes"),
        change_result=pl.lit(None),
        alert_fingerprint=pl.lit(None),
    )
    rest = tickets.filter(~pl.col("ticket_id").is_in(linked["ticket_id"].implode()))
    return pl.concat([rest, rows.cast(dict(tickets.schema))])


def service_levels(tickets: pa.Table, day: date, handled: pa.Table | None = None) -> pa.Table:
    """Incident, request and change KPIs per business for tickets opened on ``day``, and for
    incidents handled in OpsLake (``handled``, rows of ``HANDLED_SCHEMA``) started on it."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    end = start + timedelta(days=1)
    frame = pl.from_arrow(tickets.select(_COLUMNS))
    if handled is not None and handled.num_rows:
        frame = _with_handled(frame, handled)
    cohort = (
        frame.filter((pl.col("opened_at") >= start) & (pl.col("opened_at") < end))
        .with_columns(
            pl.col("type").str.to_lowercase(),
            pl.col("business").fill_null(NO_BUSINESS),
        )
        # One row per ticket: the one furthest in its lifecycle, ties broken by content.
        .sort(
            [
                "ticket_id",
                "closed_at",
                "resolved_at",
                "acknowledged_at",
                "status",
                "business",
                "type",
                "change_result",
            ],
            nulls_last=False,
        )
        .unique("ticket_id", keep="last", maintain_order=True)
    )
    if cohort.height == 0:
        return SERVICE_LEVELS_SCHEMA.empty_table()

    measures = _measures(end)
    per_business = cohort.group_by("business").agg(**measures)
    province = cohort.select(business=pl.lit(ALL_BUSINESSES), **measures)
    return (
        pl.concat([province, per_business.sort("business")])
        .with_columns(day=pl.lit(day, dtype=pl.Date))
        .select(SERVICE_LEVELS_SCHEMA.names)
        .to_arrow()
        .cast(SERVICE_LEVELS_SCHEMA)
    )
