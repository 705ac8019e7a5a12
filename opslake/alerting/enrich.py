"""Incident enrichment from the CMDB, ITSM and the runbook index (S5.5i).

For the incident's probable cause and for every CI it touches: owner, business, department,
location, vendor, contract and warranty state (``in_force``, ``expiring`` within
``EXPIRY_SOON_DAYS``, ``expired``, ``unknown``), the change tickets on it in the
``RECENT_CHANGES_S`` before the incident, and a runbook (knowledge) link per alert name from
``config/alerting/runbooks.yaml`` (its ``default`` template covers alert names it lists not).
Owner contacts are personal data: they are not copied into incidents (the API shows them to
roles allowed to see them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from opslake.alerting.convergence import Incident
from opslake.alerting.rules import read_yaml
from opslake.errors import ConfigError

RUNBOOKS_FILE = "runbooks.yaml"
EXPIRY_SOON_DAYS = 90
RECENT_CHANGES_S = 24 * 3600
CI_FIELDS = (
    "name",
    "kind",
    "type",
    "owner",
    "business",
    "department",
    "region",
    "location",
    "vendor",
    "model",
    "lifecycle_state",
)


@dataclass(frozen=True)
class Runbook:
    """A knowledge-base entry for an alert name, and the self-healing job it may launch."""

    url: str
    title: str = ""
    job: str | None = None


@dataclass(frozen=True)
class RunbookIndex:
    """Alert name → runbook, with a URL template for the rest."""

    default: str = ""
    entries: Mapping[str, Runbook] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> RunbookIndex:
        """Read ``runbooks.yaml`` from ``directory`` (empty index when absent)."""
        path = directory / RUNBOOKS_FILE
        raw = read_yaml(path)
        entries = {}
        for name, item in (raw.get("runbooks") or {}).items():
            if not isinstance(item, Mapping) or not item.get("url"):
                raise ConfigError(f"{path}: runbook {name!r} needs a url")
            entries[str(name)] = Runbook(
                str(item["url"]), str(item.get("title", "")), item.get("job")
            )
        return cls(str(raw.get("default", "")), entries)

    def for_alert(self, alertname: str) -> Runbook | None:
        """The runbook of ``alertname``: listed, else from the default template."""
        if alertname in self.entries:
            return self.entries[alertname]
        return Runbook(self.default.format(alertname=alertname)) if self.default else None


def contract_state(end: date | None, on: date) -> str:
    """``in_force``, ``expiring`` (within EXPIRY_SOON_DAYS), ``expired`` or ``unknown``."""
    if end is None:
        return "unknown"
    if end < on:
        return "expired"
    return "expiring" if (end - on).days <= EXPIRY_SOON_DAYS else "in_force"


class Enricher:
    """Looks CIs and changes up for incidents of one day."""

    def __init__(self, cmdb: pa.Table, tickets: pa.Table, runbooks: RunbookIndex) -> None:
        self.cis = {r["entity_id"]: r for r in cmdb.to_pylist()}
        self.changes: dict[str, list[dict]] = {}
        for r in tickets.to_pylist():
            if r["type"] == "change" and r["entity_id"]:
                self.changes.setdefault(r["entity_id"], []).append(r)
        self.runbooks = runbooks

    def ci(self, entity_id: str | None, on: date) -> dict[str, object]:
        """What the CMDB says about one CI, with contract and warranty state."""
        row = self.cis.get(entity_id or "")
        if row is None:
            return {"entity_id": entity_id, "in_cmdb": False}
        out: dict[str, object] = {
            "entity_id": entity_id,
            "in_cmdb": True,
            **{k: row[k] for k in CI_FIELDS},
        }
        for what in ("warranty", "contract"):
            end = row[f"{what}_end"]
            out[f"{what}_end"] = end.isoformat() if end else None
            out[f"{what}_state"] = contract_state(end, on)
        return out

    def recent_changes(
        self, entity_ids: Sequence[str], before: datetime
    ) -> list[dict[str, object]]:
        """Change tickets on these CIs opened or windowed in the day before ``before``."""
        lo = before - timedelta(seconds=RECENT_CHANGES_S)
        out = {}
        for e in entity_ids:
            for r in self.changes.get(e, ()):
                when = r["change_window_start"] or r["opened_at"]
                if when is not None and lo <= when <= before:
                    out[r["ticket_id"]] = {
                        "ticket_id": r["ticket_id"],
                        "entity_id": e,
                        "title": r["title"],
                        "window_start": _iso(r["change_window_start"]),
                        "window_end": _iso(r["change_window_end"]),
                        "result": r["change_result"],
                        "status": r["status"],
                    }
        return [out[k] for k in sorted(out)]

    def incident(self, incident: Incident, cause: str | None) -> dict[str, object]:
        """The enrichment stored on an incident: cause CI, impact, changes, runbooks."""
        on = incident.started_at.date()
        cis = [self.ci(e, on) for e in incident.entities]
        names = sorted({a.alertname for a in incident.alerts})
        runbooks = {n: rb.url for n in names if (rb := self.runbooks.for_alert(n))}
        subjects = sorted({*incident.entities, *([cause] if cause else [])})
        return {
            "cause_ci": self.ci(cause, on) if cause else None,
            "businesses": sorted({str(c["business"]) for c in cis if c.get("business")}),
            "departments": sorted({str(c["department"]) for c in cis if c.get("department")}),
            "locations": sorted({str(c["location"]) for c in cis if c.get("location")}),
            "owners": sorted({str(c["owner"]) for c in cis if c.get("owner")}),
            "expired_support": sorted(
                str(c["entity_id"])
                for c in cis
                if "expired" in (c.get("warranty_state"), c.get("contract_state"))
            ),
            "recent_changes": self.recent_changes(subjects, incident.started_at),
            "runbooks": runbooks,
        }


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None
