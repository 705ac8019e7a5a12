"""The catalog's capacity flag: the raw silver metrics behind the capacity-planning metrics."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opslake.errors import ConfigError

if TYPE_CHECKING:
    from opslake.metrics_catalog.definition import MetricDefinition
    from opslake.metrics_catalog.loader import MetricSet

#: Catalog tag of the metrics whose capacity is planned: Prophet and exhaustion dates for them.
CAPACITY_TAG = "capacity_planning"
_METRIC_EQUALS = re.compile(r"\bmetric\s*=\s*'([^']+)'", re.IGNORECASE)
_METRIC_IN = re.compile(r"\bmetric\s+IN\s*\(([^)]*)\)", re.IGNORECASE)
#: What "full" is in a catalog unit; other units have no ceiling to exhaust.
_UNIT_CAPACITY = {"ratio": 1.0, "percent": 100.0}


@dataclass(frozen=True)
class CapacityMetric:
    """A raw silver metric behind catalog metrics tagged for capacity planning."""

    metric: str
    catalog_ids: tuple[str, ...]
    capacity: float | None  # 1.0 for ratios, 100 for percent, None without a ceiling


def silver_metric_names(definition: MetricDefinition) -> list[str]:
    """Raw ``metric_points.metric`` names a simple metric_points definition selects."""
    if definition.type != "simple" or definition.model != "metric_points":
        return []
    text = " ".join(
        t for t in (definition.filter, definition.measure.expr if definition.measure else None) if t
    )
    names = _METRIC_EQUALS.findall(text)
    for listed in _METRIC_IN.findall(text):
        names += re.findall(r"'([^']+)'", listed)
    return list(dict.fromkeys(names))


def capacity_metrics(
    metrics: MetricSet, tag: str = CAPACITY_TAG, *, strict: bool = True
) -> dict[str, CapacityMetric]:
    """Raw silver metric names behind the catalog metrics tagged ``tag``, by name.

    The names come from the definitions' ``metric = '…'`` / ``metric IN (…)`` filters; a
    ratio, derived or cumulative metric contributes those of the metrics it is computed
    from. A tagged metric that names none raises :class:`ConfigError` (skipped when not
    ``strict``).
    """
    found: dict[str, tuple[list[str], float | None]] = {}
    for metric_id, definition in sorted(metrics.metrics.items()):
        if tag not in definition.tags:
            continue
        sources = [definition, *(metrics.metrics[u] for u in metrics.upstream_closure(metric_id))]
        named = [(name, d) for d in sources for name in silver_metric_names(d)]
        if not named and strict:
            raise ConfigError(
                f"{definition.source_file}:{definition.source_line}: {metric_id} is tagged "
                f"{tag} but neither it nor its inputs filter metric_points by metric = '...'; "
                "add such a filter or remove the tag"
            )
        for name, source in named:
            ids = found.setdefault(name, ([], _UNIT_CAPACITY.get(source.unit)))[0]
            if metric_id not in ids:
                ids.append(metric_id)
    return {
        name: CapacityMetric(name, tuple(ids), capacity)
        for name, (ids, capacity) in sorted(found.items())
    }
