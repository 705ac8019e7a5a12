"""OpsLake's own failures as alerts: a pipeline run that failed for good (S6.10a, S6.10e).

A run that still fails after its steps' retries lands one Alertmanager notification (payload
version 4) under ``landing/source=platform/dt=<today>``, so it takes the path of every
other alert: the live path conforms it into today's events and incidents within a minute
(and notifies), the daily run into silver ``events`` with source ``opslake-platform``.

- labels ``alertname=PipelineRunFailed``, ``severity=critical``, ``job``, ``partition`` (the
  day, or ``-``), ``step`` (the first step that failed) and ``run_id``;
- ``fingerprint`` is the first 16 hex digits of sha256("job|partition"): every failure of
  one job for one day is the same alert, so a day that fails again is one incident;
- while it is firing, further failures land nothing; a later successful run of the same job
  and day lands it ``resolved``.

The batch id is the run id, so the CLI that ran the job and the sensor watching the
instance land one alert between them. The threshold alerts of the ``opslake-self`` collection
task (:mod:`opslake.alerting.selfwatch`) land here too, through :func:`land` and
:func:`open_since`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from opslake.ingest.parsers.alertmanager import ZERO_TIME, rfc3339, webhook_body
from opslake.lake.landing import LandedBatch, LandingZone

#: Landing source name (Dagster asset keys allow no '-').
SOURCE = "platform"
#: The silver ``events.source`` of these alerts.
EVENT_SOURCE = "opslake-platform"
ALERTNAME = "PipelineRunFailed"
RECEIVER = "opslake-platform"
CONNECTOR = "opslake-platform/1"
#: At most this much of the error goes into the alert's description.
_ERROR_CHARS = 800


def fingerprint(job: str, partition: str | None) -> str:
    """The alert fingerprint of one job for one partition (16 hex digits)."""
    return hashlib.sha256(f"{job}|{partition or '-'}".encode()).hexdigest()[:16]


def land_run_failure(
    zone: LandingZone,
    *,
    job: str,
    partition: str | None,
    run_id: str,
    step: str,
    error: str,
    at: datetime,
) -> LandedBatch | None:
    """Land the firing alert of a run that failed for good; None while it is already open.

    A job that keeps failing (a live job runs every few seconds) stays one firing alert
    until a run succeeds, instead of a notification per run.
    """
    if open_since(zone, fingerprint(job, partition), at) is not None:
        return None
    labels = {
        "alertname": ALERTNAME,
        "severity": "critical",
        "job": job,
        "partition": partition or "-",
        "step": step or "-",
        "run_id": run_id,
    }
    text = error.strip()
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {
            "summary": f"数据管道运行失败 / pipeline run failed: {job} {partition or ''} at "
            f"{step or '?'}".replace("  ", " "),
            "description": text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + "…",
        },
        "startsAt": rfc3339(at),
        "endsAt": ZERO_TIME,
        "generatorURL": "",
        "fingerprint": fingerprint(job, partition),
    }
    return land(
        zone, alert, alertname=ALERTNAME, batch_id=f"run-{run_id}", at=at, connector=CONNECTOR
    )


def land_run_recovered(
    zone: LandingZone, *, job: str, partition: str | None, run_id: str, at: datetime
) -> LandedBatch | None:
    """Land ``resolved`` for a failure of ``job``/``partition`` still open; None if none is."""
    starts = open_since(zone, fingerprint(job, partition), at)
    if starts is None:
        return None
    alert = {
        "status": "resolved",
        "labels": {
            "alertname": ALERTNAME,
            "severity": "critical",
            "job": job,
            "partition": partition or "-",
            "run_id": run_id,
        },
        "annotations": {
            "summary": f"数据管道已恢复 / pipeline run succeeded again: {job} "
            f"{partition or ''}".rstrip(),
            "description": f"run {run_id} succeeded",
        },
        "startsAt": starts,
        "endsAt": rfc3339(at),
        "generatorURL": "",
        "fingerprint": fingerprint(job, partition),
    }
    return land(
        zone, alert, alertname=ALERTNAME, batch_id=f"run-{run_id}", at=at, connector=CONNECTOR
    )


def open_since(zone: LandingZone, wanted: str, at: datetime) -> str | None:
    """``startsAt`` of the platform alert ``wanted`` (a fingerprint) if its last state landed
    is firing.

    Looks back as far as landing de-duplicates (``dedupe_days``): a failure older than that
    stays open in the incidents, where an operator closes it.
    """
    today = at.astimezone(UTC).date()
    batches = [
        b
        for back in range(zone.dedupe_days, -1, -1)
        for b in zone.batches(SOURCE, (today - timedelta(days=back)).isoformat())
    ]
    state: str | None = None
    for batch in sorted(batches, key=lambda b: (b.received, b.batch_id)):
        try:
            alerts = json.loads(zone.read(batch)).get("alerts") or []
        except (ValueError, AttributeError):
            continue  # not a body this module wrote; the bronze parser quarantines it
        for alert in alerts:
            if isinstance(alert, dict) and alert.get("fingerprint") == wanted:
                state = alert.get("startsAt") if alert.get("status") == "firing" else None
    return state


def land(
    zone: LandingZone, alert: dict, *, alertname: str, batch_id: str, at: datetime, connector: str
) -> LandedBatch | None:
    """Land one platform alert (an Alertmanager alert object) as its own notification."""
    body = webhook_body([alert], alertname=alertname, receiver=RECEIVER)
    return zone.write(
        SOURCE, body, fmt="json", batch_id=batch_id, received_at=at, connector=connector
    )
