"""Failed quality checks as alerts: landed like any Alertmanager notification (S6.2e).

A run's failed checks become one Alertmanager webhook body (payload version 4) landed under
``landing/source=quality/dt=<checked day>``; the ordinary alertmanager parser reads it into
``bronze/quality_alerts`` and silver ``events`` shows it with source ``opslake-quality``,
so a data-quality failure is converged, listed and paired firing → resolved like every
other alert.

- one alert per failed check; labels ``alertname=DataQualityCheckFailed``, ``severity``
  (``critical`` when a failing result is an error, else ``warning``), ``check``, ``table``
  (``layer.table``), ``kind``, ``day`` and ``source`` where the check has one: the failing
  sources of a per-sender check (``<landing source>/<API key id or connector>``), which the
  description repeats with what each showed;
- ``fingerprint`` is the first 16 hex digits of sha256("layer.table|check|day"), so every
  notification about one check of one partition is the same alert;
- ``startsAt`` is when the failure began: the ``startsAt`` of the firing alert landed
  earlier for that fingerprint and not resolved since, else the run's time. A check that
  keeps failing is thus one alert state that silver keeps once;
- a check that failed in the previous run and passes now is sent ``resolved`` (``endsAt`` =
  the run's time, same fingerprint and ``startsAt`` as its firing alert).

The batch id is derived from the table, the day and the body, so landing the same outcome
twice lands it once.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime

from opslake.ingest.parsers.alertmanager import ZERO_TIME, rfc3339, webhook_body
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.storage import Lake
from opslake.quality.results import CheckResult

#: Landing source name (Dagster asset keys allow no '-', hence not "opslake-quality").
SOURCE = "quality"
#: The silver ``events.source`` of these alerts.
EVENT_SOURCE = "opslake-quality"
ALERTNAME = "DataQualityCheckFailed"
RECEIVER = "opslake-quality"
CONNECTOR = "opslake-quality/1"
SEVERITY = {"error": "critical", "warning": "warning"}
#: At most this much of the offending rows goes into an alert's description.
_SAMPLE_CHARS = 500
#: At most this many sources (senders) are listed in an alert's text.
_LISTED = 5


def table_name(result: CheckResult) -> str:
    """``layer.table`` of a result."""
    return f"{result.layer}.{result.table}"


def fingerprint(table: str, check: str, day: date) -> str:
    """The alert fingerprint of one check of one table partition (16 hex digits)."""
    return hashlib.sha256(f"{table}|{check}|{day.isoformat()}".encode()).hexdigest()[:16]


def land_quality_alerts(
    lake: Lake,
    results: list[CheckResult],
    day: date,
    at: datetime,
    previous_failed: set[str] | None = None,
) -> LandedBatch | None:
    """Land the run's failed checks (firing) and recovered checks (resolved) as one batch.

    ``previous_failed`` names the checks that failed in the previous run of the same table
    partition; those passing now are sent resolved, as are checks whose firing alert was
    landed for ``day`` and not resolved since (so ``None`` relies on that alone). Returns
    ``None`` when there is nothing to land; a batch landed before with the same content
    comes back with ``duplicate=True``.
    """
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    zone = LandingZone(lake)
    open_alerts = _open_alerts(zone, day)
    tables = {table_name(r) for r in results}
    previous = {(t, c) for t, c in open_alerts if t in tables}
    previous |= {(t, c) for t in tables for c in previous_failed or ()}
    # One alert per check: a per-sender check has several results but one fingerprint, and
    # one alert state per fingerprint is what silver keeps.
    by_check: dict[tuple[str, str], list[CheckResult]] = {}
    for result in results:
        by_check.setdefault((table_name(result), result.check), []).append(result)
    alerts = []
    for ident, group in sorted(by_check.items()):
        starts = open_alerts.get(ident, rfc3339(at))
        if failed := [r for r in group if not r.passed]:
            alerts.append(_alert(failed, day, "firing", starts, ZERO_TIME))
        elif ident in previous:
            alerts.append(_alert(group, day, "resolved", starts, rfc3339(at)))
    if not alerts:
        return None
    body = webhook_body(alerts, alertname=ALERTNAME, receiver=RECEIVER)
    digest = hashlib.sha256(body).hexdigest()
    scope = next(iter(tables)) if len(tables) == 1 else "tables"
    batch_id = re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{scope}-{day.isoformat()}")[:100]
    return zone.write(
        SOURCE,
        body,
        fmt="json",
        batch_id=f"{batch_id}-{digest[:16]}",
        received_at=at,
        dt=day.isoformat(),
        connector=CONNECTOR,
    )


def _alert(shown: list[CheckResult], day: date, status: str, starts_at: str, ends_at: str) -> dict:
    """The alert of one check, from its failing results (firing) or all of them (resolved)."""
    result = shown[0]
    name = table_name(result)
    severity = "error" if any(r.severity == "error" for r in shown) else "warning"
    labels = {
        "alertname": ALERTNAME,
        "severity": SEVERITY[severity],
        "check": result.check,
        "table": name,
        "kind": result.kind,
        "day": day.isoformat(),
    }
    sources = [r.source for r in shown if r.source]
    if sources:
        labels["source"] = ", ".join(sources)
    observed = (
        result.observed
        if len(shown) == 1
        else _listed([f"{r.source}: {r.observed}" if r.source else r.observed for r in shown])
    )
    measured = f"observed {observed}, threshold {result.threshold}"
    if status == "firing":
        summary = f"数据质量检查失败 / quality check failed: {name} {result.check} ({measured})"
    else:
        summary = (
            f"数据质量检查已恢复 / quality check passed again: {name} {result.check} ({measured})"
        )
    description = (
        f"{result.kind} check ({severity}) on {name} for {day.isoformat()}: "
        f"{result.rows} rows, {sum(r.unexpected_rows for r in shown)} unexpected"
    )
    if sources:
        description += (
            "; "
            + ("failing" if status == "firing" else "checked")
            + ": "
            + _listed([f"{r.source} ({r.observed})" for r in shown if r.source])
        )
    sample = next((r.sample for r in shown if r.sample), [])
    if sample and status == "firing":
        text = json.dumps(sample[:3], ensure_ascii=False, default=str, sort_keys=True)
        description += "; sample: " + (
            text if len(text) <= _SAMPLE_CHARS else text[:_SAMPLE_CHARS] + "…"
        )
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": summary, "description": description},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "",
        "fingerprint": fingerprint(name, result.check, day),
    }


def _listed(items: list[str]) -> str:
    """``items`` joined, the first ``_LISTED`` of them (a day may have many senders)."""
    more = f"; … {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return "; ".join(items[:_LISTED]) + more


def _open_alerts(zone: LandingZone, day: date) -> dict[tuple[str, str], str]:
    """(table, check) → ``startsAt`` of quality alerts of ``day`` firing as last landed."""
    state: dict[tuple[str, str], str] = {}
    batches = sorted(zone.batches(SOURCE, day.isoformat()), key=lambda b: (b.received, b.batch_id))
    for batch in batches:
        try:
            alerts = json.loads(zone.read(batch)).get("alerts") or []
        except (ValueError, AttributeError):
            continue  # not a body this module wrote; the bronze parser quarantines it
        for alert in alerts:
            if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
                continue
            labels = alert["labels"]
            if labels.get("alertname") != ALERTNAME or "table" not in labels:
                continue
            ident = (labels["table"], labels.get("check", ""))
            if alert.get("status") == "firing":
                state.setdefault(ident, alert.get("startsAt") or "")
            else:
                state.pop(ident, None)
    return {k: v for k, v in state.items() if v}
