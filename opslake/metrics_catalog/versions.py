"""Metric versions: every change to a definition is recorded, and never rewritten (S6.2f).

A version is ``MAJOR.MINOR``. A change to a field that alters the numbers (expression,
filter, inputs, unit, grains, dimensions: ``BREAKING_FIELDS``) is a breaking change and
starts a new major version; so is a breaking change of any metric it is computed from
(recorded as ``input:<id>``), since its numbers change too. Any other change (names,
description, owner, thresholds, status) is a minor one. Each version is one immutable JSON object in the lake under
``catalog/versions/<metric id>/``, written atomically with a name derived from the version,
so two writers recording the same change write the same object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from opslake.lake.schemas import TS
from opslake.lake.storage import Lake
from opslake.metrics_catalog.definition import BREAKING_FIELDS, MetricDefinition
from opslake.metrics_catalog.loader import MetricSet

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
    #: Input metric id → fingerprint of its breaking fields when this version was recorded.
    upstream: dict[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """``MAJOR.MINOR``."""
        return f"{self.major}.{self.minor}"

    def to_json(self) -> bytes:
        """The stored form."""
        data = {
            "metric_id": self.metric_id,
            "major": self.major,
            "minor": self.minor,
            "change": self.change,
            "changed_fields": list(self.changed_fields),
            "status": self.status,
            "fingerprint": self.fingerprint,
            "definition": self.definition,
            "recorded_at": self.recorded_at.isoformat(),
            "recorded_by": self.recorded_by,
            "upstream": self.upstream,
        }
        return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Version:
        """Read the stored form."""
        d = json.loads(raw)
        return cls(
            d["metric_id"],
            d["major"],
            d["minor"],
            d["change"],
            tuple(d["changed_fields"]),
            d["status"],
            d["fingerprint"],
            d["definition"],
            datetime.fromisoformat(d["recorded_at"]),
            d["recorded_by"],
            d.get("upstream", {}),
        )


def upstream_fingerprints(metrics: MetricSet, metric_id: str) -> dict[str, str]:
    """Breaking fingerprint of every metric ``metric_id`` is computed from, transitively."""
    return {
        u: metrics.metrics[u].fingerprint(breaking_only=True)
        for u in metrics.upstream_closure(metric_id)
    }


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

    def next_version(
        self, metric: MetricDefinition, upstream: Mapping[str, str] | None = None
    ) -> tuple[int, int, str, list[str]]:
        """(major, minor, change, changed fields) the definition would be recorded as.

        ``upstream`` maps each input metric (transitively) to its breaking fingerprint.
        """
        latest = self.latest(metric.id)
        if latest is None:
            return 1, 0, "new", []
        fields = changed_fields(latest.definition, metric.to_dict())
        upstream = dict(upstream or {})
        inputs = [
            f"input:{u}"
            for u in sorted(set(upstream) | set(latest.upstream))
            if upstream.get(u) != latest.upstream.get(u)
        ]
        if not fields and not inputs:
            return latest.major, latest.minor, "unchanged", []
        if inputs or any(f in BREAKING_FIELDS for f in fields):
            return latest.major + 1, 0, "breaking", fields + inputs
        return latest.major, latest.minor + 1, "minor", fields

    def record(
        self, metric: MetricDefinition, *, by: str, upstream: Mapping[str, str] | None = None
    ) -> Version:
        """The version of ``metric`` as defined now, recording a new one if it changed."""
        major, minor, change, fields = self.next_version(metric, upstream)
        if change == "unchanged":
            return self.latest(metric.id)
        version = Version(
            metric.id,
            major,
            minor,
            change,
            tuple(fields),
            metric.status,
            metric.fingerprint(),
            metric.to_dict(),
            datetime.now(UTC),
            by,
            dict(upstream or {}),
        )
        self.lake.put_atomic(
            f"{self._dir(metric.id)}/v{major:05d}.{minor:05d}.json", [version.to_json()]
        )
        self.history().setdefault(metric.id, []).append(version)
        return version

    def record_all(self, metrics: MetricSet, ids: Iterable[str], *, by: str) -> dict[str, str]:
        """Record each metric's current definition, inputs first; returns id → version."""
        return {
            mid: self.record(
                metrics.metrics[mid], by=by, upstream=upstream_fingerprints(metrics, mid)
            ).version
            for mid in metrics.order(ids)
        }

    def table(self) -> pa.Table:
        """The whole history as rows of ``VERSIONS_SCHEMA``."""
        rows = [v for versions in self.history().values() for v in versions]
        return pa.Table.from_pylist(
            [
                {
                    "metric_id": v.metric_id,
                    "version": v.version,
                    "major": v.major,
                    "minor": v.minor,
                    "change": v.change,
                    "changed_fields": list(v.changed_fields),
                    "status": v.status,
                    "fingerprint": v.fingerprint,
                    "definition": json.dumps(v.definition, ensure_ascii=False, sort_keys=True),
                    "recorded_at": v.recorded_at,
                    "recorded_by": v.recorded_by,
                }
                for v in sorted(rows, key=lambda v: (v.metric_id, v.major, v.minor))
            ],
            schema=VERSIONS_SCHEMA,
        )
