"""Quality incidents: a check of a table that failed, with a status people change (S6.2e).

An incident is one (``layer.table``, check) that has failed on some partition; its id is
the first 12 hex digits of sha256("layer.table/check"), so it is the same id on every run
and on every machine. What it is (first and last failing day, when it was last seen
failing, severity, observed value) is derived from the quality results: by default every
run's results as kept in ``gold/quality_log``, so a partition that failed and passed on a
re-run still shows that it failed (``gold/quality_results`` keeps only the latest run of a
partition; pass ``read_results(lake)`` to judge by that instead). Only its status is kept
separately, as an append-only log: one JSON object per change at
``quality/incidents/<id>/<timestamp>-<uuid>.json`` with ``status`` (open, acknowledged,
resolved), ``by``, ``note`` and ``at``. Nothing is ever rewritten, so the history of who
changed what stays.

The status shown is the latest change, with two automatic transitions on top:

- the latest result passed after the latest change (or there is no change at all) and the
  incident is not resolved: ``resolved`` by ``auto``;
- the check failed again after someone resolved it: ``open`` by ``auto`` (re-opened).

An incident without any change and whose latest result failed is ``open``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pyarrow as pa

from opslake.errors import ConfigError, NotFoundError
from opslake.lake.storage import Lake
from opslake.quality.results import QUALITY_RESULTS

STATUSES = ("open", "acknowledged", "resolved")
AUTO = "auto"


@dataclass(frozen=True)
class StatusChange:
    """One entry of an incident's status log."""

    incident_id: str
    status: str
    by: str
    note: str
    at: datetime


@dataclass(frozen=True)
class Incident:
    """A (table, check) that failed, as known from the current results, and its status."""

    id: str
    table: str  # layer.table
    check: str
    kind: str
    severity: str  # of its latest failure: error | warning
    first_failed: date  # first partition day with a failing result
    last_failed: date  # last partition day with a failing result
    last_seen_failing: datetime  # run time of the latest failing result
    failures: int  # failing results seen (runs × partitions)
    observed: str  # of the latest failing result
    threshold: str
    latest_passed: bool  # whether the most recent result of the check passed
    latest_at: datetime  # run time of the most recent result
    status: str
    status_by: str
    status_at: datetime | None
    note: str

    @property
    def is_open(self) -> bool:
        """Not resolved: open or acknowledged."""
        return self.status != "resolved"


def incident_id(table: str, check: str) -> str:
    """The stable id of check ``check`` of ``table`` (``layer.table``)."""
    return hashlib.sha256(f"{table}/{check}".encode()).hexdigest()[:12]


def incidents(lake: Lake, results: pa.Table | None = None) -> list[Incident]:
    """Every incident with its status, most recently failing first.

    ``results`` are rows of ``QUALITY_RESULTS`` (default: every run's, from the log).
    """
    derived = _derive(all_results(lake) if results is None else results)
    out = [_with_status(facts, _log(lake, facts["id"])) for facts in derived.values()]
    return sorted(out, key=lambda i: (i.last_seen_failing, i.id), reverse=True)


def open_incidents(lake: Lake, results: pa.Table | None = None) -> list[Incident]:
    """Incidents that are not resolved (open or acknowledged), most recently failing first."""
    return [i for i in incidents(lake, results) if i.is_open]


def get(lake: Lake, incident_id: str, results: pa.Table | None = None) -> Incident:
    """One incident by id; ``NotFoundError`` names the known ones."""
    derived = _derive(all_results(lake) if results is None else results)
    facts = derived.get(incident_id.strip().lower())
    if facts is None:
        raise _not_found(incident_id, derived)
    return _with_status(facts, _log(lake, facts["id"]))


def set_status(
    lake: Lake,
    incident_id: str,
    status: str,
    *,
    by: str,
    note: str = "",
    at: datetime | None = None,
) -> Incident:
    """Record a status change (appended to the incident's log); returns the incident after it."""
    status = status.strip().lower()
    if status not in STATUSES:
        raise ConfigError(f"status {status!r} is not known; use one of {', '.join(STATUSES)}")
    if not by or not by.strip():
        raise ConfigError("say who changes the status (by=, e.g. a user name)")
    incident = get(lake, incident_id)
    when = _utc(at or datetime.now(UTC))
    entry = {
        "incident_id": incident.id,
        "table": incident.table,
        "check": incident.check,
        "status": status,
        "by": by.strip(),
        "note": note,
        "at": when.isoformat(),
    }
    name = f"{when.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex}.json"
    lake.put_atomic(
        lake.path(_LOG_DIR, incident.id, name),
        [json.dumps(entry, ensure_ascii=False, sort_keys=True).encode()],
    )
    return get(lake, incident.id)


def history(lake: Lake, incident_id: str) -> list[StatusChange]:
    """The incident's recorded status changes, oldest first (automatic ones are not stored)."""
    ident = incident_id.strip().lower()
    log = _log(lake, ident)
    if not log:
        derived = _derive(all_results(lake))
        if ident not in derived:
            raise _not_found(incident_id, derived)
    return log


def all_results(lake: Lake) -> pa.Table:
    """Every run's results (``gold/quality_log``), rows of ``QUALITY_RESULTS``."""
    return lake.read_table("gold", "quality_log", schema=QUALITY_RESULTS)


# -- internals ---------------------------------------------------------------------------

_LOG_DIR = "quality/incidents"


def _log(lake: Lake, ident: str) -> list[StatusChange]:
    entries = []
    for path in lake.list_files(lake.path(_LOG_DIR, ident)):
        if not path.endswith(".json"):
            continue
        row = json.loads(lake.read_bytes(path))
        entries.append(
            StatusChange(
                incident_id=ident,
                status=row["status"],
                by=row["by"],
                note=row.get("note", ""),
                at=_utc(datetime.fromisoformat(row["at"])),
            )
        )
    # File names start with the time; sorting on `at` too keeps the order if names collide.
    return sorted(entries, key=lambda e: e.at)


def _derive(results: pa.Table) -> dict[str, dict]:
    """Facts of every (table, check) with at least one failing result."""
    rows = sorted(
        results.select(
            [
                "at",
                "day",
                "layer",
                "table",
                "check",
                "kind",
                "severity",
                "passed",
                "observed",
                "threshold",
            ]
        ).to_pylist(),
        key=lambda r: (r["at"], r["day"]),
    )
    by_check: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_check.setdefault((f"{row['layer']}.{row['table']}", row["check"]), []).append(row)
    derived = {}
    for (table, check), seen in by_check.items():
        failed = [r for r in seen if not r["passed"]]
        if not failed:
            continue
        last, latest = failed[-1], seen[-1]
        ident = incident_id(table, check)
        derived[ident] = {
            "id": ident,
            "table": table,
            "check": check,
            "kind": last["kind"],
            "severity": last["severity"],
            "first_failed": min(r["day"] for r in failed),
            "last_failed": max(r["day"] for r in failed),
            "last_seen_failing": _utc(last["at"]),
            "failures": len(failed),
            "observed": last["observed"],
            "threshold": last["threshold"],
            "latest_passed": bool(latest["passed"]),
            "latest_at": _utc(latest["at"]),
        }
    return derived


def _with_status(facts: dict, log: list[StatusChange]) -> Incident:
    status, by, at, note = "open", AUTO, None, ""
    if log:
        last = log[-1]
        status, by, at, note = last.status, last.by, last.at, last.note
    if status == "resolved" and at is not None and facts["last_seen_failing"] > at:
        status, by, at, note = (
            "open",
            AUTO,
            facts["last_seen_failing"],
            "failed again after it was resolved",
        )
    elif (
        status != "resolved" and facts["latest_passed"] and (at is None or facts["latest_at"] > at)
    ):
        status, by, at, note = (
            "resolved",
            AUTO,
            facts["latest_at"],
            "the latest result of the check passed",
        )
    return Incident(**facts, status=status, status_by=by, status_at=at, note=note)


def _not_found(incident_id: str, derived: dict[str, dict]) -> NotFoundError:
    known = sorted(derived.values(), key=lambda f: f["last_seen_failing"], reverse=True)
    if not known:
        return NotFoundError(
            f"no quality incident {incident_id!r}: no quality check has "
            "failed yet (incidents come from gold/quality_log)"
        )
    sample = ", ".join(f"{f['id']} ({f['table']} {f['check']})" for f in known[:5])
    return NotFoundError(
        f"no quality incident {incident_id!r}; known incidents, latest first: {sample}"
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
