"""The metrics catalog's operations, shared by the CLI and the data-service API (S6.2c, S6.2f).

Definitions live as YAML in ``settings.metrics_dir``; versions and usage live in the lake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opslake.errors import ConfigError, NotFoundError
from opslake.lake.storage import Lake
from opslake.metrics_catalog import exchange
from opslake.metrics_catalog.definition import STATUSES, MetricDefinition
from opslake.metrics_catalog.loader import MetricSet, load, load_texts
from opslake.metrics_catalog.versions import Version, VersionStore, upstream_fingerprints
from opslake.settings import Settings


@dataclass(frozen=True)
class Entry:
    """A metric with its recorded version (``None`` before the first record)."""

    metric: MetricDefinition
    version: Version | None
    pending: str  # the change a record would make: new | breaking | minor | unchanged


class Catalog:
    """Definitions in a directory plus their version history in the lake."""

    def __init__(self, directory: Path, lake: Lake) -> None:
        self.directory = directory
        self.lake = lake
        self.versions = VersionStore(lake)
        self._metrics: MetricSet | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Catalog:
        """The catalog of ``settings`` (``OPSLAKE_METRICS_DIR`` and ``OPSLAKE_HOME``)."""
        return cls(settings.metrics_dir, Lake.from_settings(settings))

    @property
    def metrics(self) -> MetricSet:
        """The validated definitions (raises ``DefinitionError`` naming file and line)."""
        if self._metrics is None:
            self._metrics = load(self.directory) if self.directory.is_dir() else MetricSet()
        return self._metrics

    def reload(self) -> MetricSet:
        """Read the definitions again."""
        self._metrics = None
        return self.metrics

    def get(self, metric_id: str) -> MetricDefinition:
        """One metric by id."""
        try:
            return self.metrics.metrics[metric_id]
        except KeyError:
            close = [m for m in self.metrics.metrics if metric_id.split(".")[-1] in m][:5]
            hint = (
                f"; did you mean {', '.join(close)}?"
                if close
                else "; `opslake catalog list` shows them"
            )
            raise NotFoundError(f"no metric {metric_id!r}{hint}") from None

    def entry(self, metric_id: str) -> Entry:
        """A metric with its version state."""
        metric = self.get(metric_id)
        _, _, change, _ = self.versions.next_version(
            metric, upstream_fingerprints(self.metrics, metric_id)
        )
        return Entry(metric, self.versions.latest(metric_id), change)

    def search(
        self,
        text: str = "",
        *,
        category: str | None = None,
        status: str | None = None,
        tag: str | None = None,
        family: str | None = None,
    ) -> list[MetricDefinition]:
        """Metrics whose id, names, description or tags contain ``text`` (case-insensitive)."""
        needle = text.lower()
        out = []
        for m in self.metrics.metrics.values():
            haystack = " ".join([m.id, m.description, *m.names.values(), *m.tags]).lower()
            if needle and needle not in haystack:
                continue
            if (
                (category and m.category != category)
                or (status and m.status != status)
                or (tag and tag not in m.tags)
                or (family and m.family != family)
            ):
                continue
            out.append(m)
        return sorted(out, key=lambda m: m.id)

    def record_versions(self, *, by: str, ids: list[str] | None = None) -> dict[str, str]:
        """Record the current definition of each metric (new version where it changed)."""
        return self.versions.record_all(self.metrics, ids or list(self.metrics.metrics), by=by)

    # -- editing -------------------------------------------------------------------------

    def set_status(self, metric_id: str, status: str, *, by: str) -> Version:
        """Publish, deprecate or return a metric to draft: edits its file, records a version."""
        if status not in STATUSES:
            raise ConfigError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        metric = self.get(metric_id)
        path = Path(metric.source_file)
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        if "status" in metric.field_lines:
            n = metric.field_lines["status"] - 1
            lines[n] = re.sub(r"(status:\s*)\S+", rf"\g<1>{status}", lines[n], count=1)
        else:  # inherited from the file: write it on the metric itself, under its id
            n = metric.field_lines["id"] - 1
            indent = re.match(r"\s*(-\s*)?", lines[n]).end()
            lines.insert(n + 1, " " * indent + f"status: {status}\n")
        text = "".join(lines)
        load_texts(
            {str(p): (text if p == path else p.read_text(encoding="utf-8")) for p in self._files()}
        )
        path.write_text(text, encoding="utf-8")
        return self._record(metric_id, by)

    def upsert(self, data: dict[str, Any], *, family: str, by: str) -> Version:
        """Add a metric to ``family`` (or replace the one with the same id): manual entry."""
        description = self.metrics.family_descriptions.get(family, "")
        exchange.import_into(
            self.directory,
            [{"family": family, "description": description, "metrics": [data]}],
            self.metrics,
        )
        return self._record(data["id"], by)

    def import_text(self, text: str, fmt: str, *, by: str) -> list[Path]:
        """Bulk import (merge) exported text; records the versions it creates."""
        incoming = exchange.parse(text, fmt)
        written = exchange.import_into(
            self.directory, incoming, self.metrics if self.directory.is_dir() else None
        )
        self.reload()
        self.record_versions(by=by, ids=[m["id"] for f in incoming for m in f["metrics"]])
        return written

    def export_text(self, fmt: str) -> str:
        """The whole catalog in ``fmt``."""
        return exchange.export(self.metrics, fmt)

    def _record(self, metric_id: str, by: str) -> Version:
        self.reload()
        return self.versions.record(
            self.get(metric_id), by=by, upstream=upstream_fingerprints(self.metrics, metric_id)
        )

    def _files(self) -> list[Path]:
        return sorted(p for p in self.directory.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
