"""The ground truth: what the simulator produced, for tests and model evaluation to check."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

#: Counts the silver layer must reproduce exactly from the landed files.
COUNT_NAMES = (
    "metric_points",
    "events",
    "tickets",
    "logs",
    "probes",
    "asset_versions",
    "relations",
)
SOURCES = ("prometheus", "alertmanager", "itsm", "cmdb", "syslog", "probes")


class Tally:
    """A count per day with its total; days with nothing still appear as 0."""

    def __init__(self, days: list[str]) -> None:
        self.per_day = dict.fromkeys(days, 0)

    def add(self, day: str, n: int = 1) -> None:
        """Add ``n`` to ``day``."""
        self.per_day[day] += n

    @property
    def total(self) -> int:
        """Sum over all days."""
        return sum(self.per_day.values())

    def as_dict(self) -> dict[str, object]:
        """``{"total": n, "per_day": {day: n}}``."""
        return {"total": self.total, "per_day": dict(self.per_day)}


@dataclass
class GroundTruth:
    """Everything a test or an evaluation needs to know about one simulation run.

    ``counts`` and ``malformed`` map a name to ``{"total": n, "per_day": {day: n}}``;
    ``faults`` are dicts with fault_id, fault_type, cause_entity, cause_kind, cause_type,
    start, end, affected, affected_from, change_ticket_id, description and off_topology
    (the affected CIs no relation leads to).
    """

    seed: int
    config: dict[str, object]
    window: dict[str, str]
    counts: dict[str, dict[str, object]]
    malformed: dict[str, dict[str, object]]
    batches: dict[str, int]
    unmapped_logs: dict[str, object]
    notifications: dict[str, object]
    faults: list[dict[str, object]]
    entities: dict[str, list[str]]
    metric_families: list[str]
    notes: dict[str, str] = field(default_factory=dict)
    #: With the realism knobs on: ``missing_relations``, ``stale_relations``,
    #: ``unknown_cis`` and ``noise`` (see ``notes["realism"]``); empty otherwise.
    realism: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Deterministic JSON (sorted keys, UTF-8) so equal runs give equal bytes."""
        return (
            json.dumps(asdict(self), ensure_ascii=False, sort_keys=True, indent=1).encode() + b"\n"
        )

    @classmethod
    def from_json(cls, data: bytes) -> GroundTruth:
        """Read back what ``to_json`` wrote."""
        return cls(**json.loads(data))

    def count(self, name: str, day: str | None = None) -> int:
        """Total of count ``name``, or its value on ``day``."""
        entry = self.counts[name]
        return int(entry["total"] if day is None else entry["per_day"][day])  # type: ignore[index]
