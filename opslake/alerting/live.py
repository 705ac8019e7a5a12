"""Reading a day's convergence inputs from the lake, and the streaming path for alerts.

Daily: ``gold/incidents`` reads silver events of the day and the day before, the tickets up to
the day (change windows, assignee groups), the CMDB as known at the end of the day and the
day's anomaly scores.

Live: each alert batch landed today (Alertmanager, generic webhooks, anomaly episodes,
pipeline runs that failed for good) is conformed on its own into
``silver/events_live/dt=D/<batch id>.parquet`` (once per batch), and convergence runs over
yesterday's and today's events (daily and live, duplicates collapse by fingerprint and
start) into ``gold/incidents_live/dt=D``. Lines that do not parse are skipped here; the
daily bronze run quarantines them with their reason.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from opslake.alerting import platform
from opslake.alerting.incidents import Inputs
from opslake.alerting.rootcause import AnomalyPeak, anomaly_peaks
from opslake.ingest.parsers import ParseResult, alert_webhook, alertmanager
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.schemas import EVENTS, RELATIONS_SCHEMA, TICKETS
from opslake.lake.storage import Lake
from opslake.metrics_catalog.models import current_rows
from opslake.ml import anomalies
from opslake.transforms.entities import EntityResolver
from opslake.transforms.events import to_silver

LIVE_EVENTS = "events_live"
LIVE_INCIDENTS = "incidents_live"
LIVE_INCIDENT_ALERTS = "incident_alerts_live"
#: Landing sources of operational alerts and the parser of each.
SOURCES: dict[str, Callable[[bytes, LandedBatch], ParseResult]] = {
    "alertmanager": alertmanager.parse,
    alert_webhook.SOURCE: alert_webhook.parse,
    anomalies.SOURCE: alertmanager.parse,
    platform.SOURCE: alertmanager.parse,
}
#: The silver ``source`` of events from each landing source (as the daily conform sets it).
EVENT_SOURCE = {
    "alertmanager": "alertmanager",
    alert_webhook.SOURCE: "webhook",
    anomalies.SOURCE: anomalies.EVENT_SOURCE,
    platform.SOURCE: platform.EVENT_SOURCE,
}


def _previous(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def read_inputs(
    lake: Lake, day: str, cmdb_history: pa.Table, end: datetime, events: pa.Table | None = None
) -> Inputs:
    """Everything convergence reads for ``day`` (``events``: instead of silver events)."""
    if events is None:
        known = set(lake.partitions("silver", "events"))
        events = lake.read_table(
            "silver", "events", schema=EVENTS, dts=[d for d in (_previous(day), day) if d in known]
        )
    ticket_days = [d for d in lake.partitions("silver", "tickets") if d <= day]
    relation_days = [d for d in lake.partitions("silver", "relations") if d <= day][-1:]
    peaks: list[AnomalyPeak] = []
    if day in lake.partitions("gold", "anomalies"):
        rows = lake.read_table(
            "gold", "anomalies", dts=[day], columns=["entity_id", "ts", "score", "is_event"]
        )
        peaks = anomaly_peaks(rows.filter(pc.field("is_event")).to_pylist())
    return Inputs(
        events=events,
        tickets=lake.read_table("silver", "tickets", schema=TICKETS, dts=ticket_days),
        assets=cmdb_history,
        relations=lake.read_table(
            "silver", "relations", schema=RELATIONS_SCHEMA, dts=relation_days
        ),
        cmdb=current_rows(cmdb_history, end),
        anomalies=peaks,
    )


def pending_batches(lake: Lake, day: str) -> list[LandedBatch]:
    """Alert batches of ``day`` not yet conformed into the live events."""
    done = _done(lake, day)
    zone = LandingZone(lake)
    return [b for source in SOURCES for b in zone.batches(source, day) if b.batch_id not in done]


def _done(lake: Lake, day: str) -> set[str]:
    base = lake.table_path("silver", LIVE_EVENTS, {"dt": day})
    return {
        f.rsplit("/", 1)[-1].removesuffix(".parquet")
        for f in (lake.list_files(base) if lake.exists(base) else [])
    }


@dataclass
class Conformed:
    """What one live pass conformed."""

    batches: list[str]
    events: int


def conform_pending(lake: Lake, day: str, resolver: EntityResolver) -> Conformed:
    """Parse and conform every pending alert batch of ``day`` (one file per batch)."""
    zone = LandingZone(lake)
    out = Conformed([], 0)
    for batch in pending_batches(lake, day):
        parsed = SOURCES[batch.source](zone.read(batch), batch)
        rows = to_silver(parsed.table, resolver)
        rows = rows.set_column(
            rows.schema.get_field_index("source"),
            "source",
            pa.array([EVENT_SOURCE[batch.source]] * rows.num_rows, pa.string()),
        )
        buffer = io.BytesIO()
        pq.write_table(rows, buffer, compression="zstd", coerce_timestamps="us")
        lake.put_atomic(
            f"{lake.table_path('silver', LIVE_EVENTS, {'dt': day})}/{batch.batch_id}.parquet",
            [buffer.getvalue()],
        )
        out.batches.append(batch.batch_id)
        out.events += rows.num_rows
    return out


def live_events(lake: Lake, day: str) -> pa.Table:
    """Yesterday's and today's events: daily silver where it exists, live batches on top."""
    days = [_previous(day), day]
    known = set(lake.partitions("silver", "events"))
    parts = [
        lake.read_table("silver", "events", schema=EVENTS, dts=[d for d in days if d in known])
    ]
    live_days = set(lake.partitions("silver", LIVE_EVENTS))
    for d in days:
        if d in live_days:
            parts.append(lake.read_table("silver", LIVE_EVENTS, schema=EVENTS, dts=[d]))
    return pa.concat_tables(parts)


def prune(lake: Lake, today: str, keep_days: int = 2) -> list[str]:
    """Drop live partitions older than ``keep_days`` (the daily pipeline has them by then)."""
    first_kept = (date.fromisoformat(today) - timedelta(days=keep_days - 1)).isoformat()
    return lake.drop_partitions_before(
        (("silver", LIVE_EVENTS), ("gold", LIVE_INCIDENTS), ("gold", LIVE_INCIDENT_ALERTS)),
        first_kept,
    )
