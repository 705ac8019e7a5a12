"""Metric versions: every change to a definition is recorded, and never rewritten (S6.2f).

A version is ``MAJOR.MINOR``. A change to a field that alters the numbers (expression,
filter, inputs, unit, grains, dimensions: ``BREAKING_FIELDS``) is a breaking change and
starts a new major version; any other change (names, description, owner, thresholds,
status) is a minor one. Each version is one immutable JSON object in the lake under
``catalog/versions/<metric id>/``, written atomically with a name derived from the version,
so two writers recording the same change write the same object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from opslake.lake.schemas import TS
from opslake.lake.storage import Lake
from opslake.metrics_catalog.definition import BREAKING_FIELDS, MetricDefinition

VERSIONS_SCHEMA = pa.schema(
    [
        ("metric_id", pa.string()),
        ("version", pa.string()),
        ("major", pa.int32()),
        ("minor", pa.int32()),
        ("change", pa.string()),
        ("changed_fields", pa.list_(pa.string())),
        ("status", pa.string()),
        ("fingerprint", pa.string()),
        ("definition", pa.string()),
        ("recorded_at", TS),
        ("recorded_by", pa.string()),
    ]
)


@dataclass(frozen=True)
class Version:
    """One recorded version of a metric definition."""

    metric_id: str
    major: int
    minor: int
    change: str  # new | breaking | minor
    changed_fields: tuple[str, ...]
    status: str
    fingerprint: str
    definition: dict
    recorded_at: datetime
    recorded_by: str

    @property
    def version(self) -> str:
        """``MAJOR.MINOR``."""
        return f"{self.major}.{self.minor}"

    def to_json(self) -> bytes:
        """The stored form."""
        data = {"metric_id": self.metric_id, "major": self.major, "minor": self.minor,
                "change": self.change, "changed_fields": list(self.changed_fields),
                "status": self.status, "fingerprint": self.fingerprint,
                "definition": self.definition, "recorded_at": self.recorded_at.isoformat(),
                "recorded_by": self.recorded_by}
        return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Version:
        """Read the stored form."""
        d = json.loads(raw)
        return cls(d["metric_id"], d["major"], d["minor"], d["change"],
                   tuple(d["changed_fields"]), d["status"], d["fingerprint"], d["definition"],
                   datetime.fromisoformat(d["recorded_at"]), d["recorded_by"])


def changed_fields(old: dict, new: dict) -> list[str]:
    """Top-level fields whose value differs between two definitions."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


class VersionStore:
    """The version history of every metric, kept in the lake."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._cache: dict[str, list[Version]] | None = None

    def _dir(self, metric_id: str = "") -> str:
        return self.lake.path("catalog", "versions", *([metric_id] if metric_id else []))

    def history(self) -> dict[str, list[Version]]:
        """Every recorded version, by metric, oldest first."""
        if self._cache is None:
            out: dict[str, list[Version]] = {}
            root = self._dir()
            if self.lake.exists(root):
                for path in sorted(self.lake.list_files(root, recursive=True)):
                    if path.endswith(".json"):
                        v = Version.from_json(self.lake.read_bytes(path))
                        out.setdefault(v.metric_id, []).append(v)
            for versions in out.values():
                versions.sort(key=lambda v: (v.major, v.minor))
            self._cache = out
        return self._cache

    def latest(self, metric_id: str) -> Version | None:
        """The newest recorded version of a metric, if any."""
        versions = self.history().get(metric_id)
        return versions[-1] if versions else None

    def next_version(self, metric: MetricDefinition) -> tuple[int, int, str, list[str]]:
        """(major, minor, change, changed fields) the definition would be recorded as."""
        latest = self.latest(metric.id)
        if latest is None:
            return 1, 0, "new", []
        fields = changed_fields(latest.definition, metric.to_dict())
        if not fields:
            return latest.major, latest.minor, "unchanged", []
        if any(f in BREAKING_FIELDS for f in fields):
            return latest.major + 1, 0, "breaking", fields
        return latest.major, latest.minor + 1, "minor", fields

    def record(self, metric: MetricDefinition, *, by: str) -> Version:
        """The version of ``metric`` as defined now, recording a new one if it changed."""
        major, minor, change, fields = self.next_version(metric)
        if change == "unchanged":
            return self.latest(metric.id)
        version = Version(metric.id, major, minor, change, tuple(fields), metric.status,
                          metric.fingerprint(), metric.to_dict(), datetime.now(UTC), by)
        self.lake.put_atomic(f"{self._dir(metric.id)}/v{major:05d}.{minor:05d}.json",
                             [version.to_json()])
        self.history().setdefault(metric.id, []).append(version)
        return version

    def record_all(self, metrics: list[MetricDefinition], *, by: str) -> dict[str, str]:
        """Record each metric's current definition; returns metric id → version."""
        return {m.id: self.record(m, by=by).version for m in metrics}

    def table(self) -> pa.Table:
        """The whole history as rows of ``VERSIONS_SCHEMA``."""
        rows = [v for versions in self.history().values() for v in versions]
        return pa.Table.from_pylist(
            [{"metric_id": v.metric_id, "version": v.version, "major": v.major,
              "minor": v.minor, "change": v.change, "changed_fields": list(v.changed_fields),
              "status": v.status, "fingerprint": v.fingerprint,
              "definition": json.dumps(v.definition, ensure_ascii=False, sort_keys=True),
              "recorded_at": v.recorded_at, "recorded_by": v.recorded_by}
             for v in sorted(rows, key=lambda v: (v.metric_id, v.major, v.minor))],
            schema=VERSIONS_SCHEMA)
