"""The metric definition model: what one YAML entry in ``metrics/`` means (S6.2c).

A definition is plain data; :mod:`opslake.metrics_catalog.loader` reads and validates it, and
:mod:`opslake.metrics_catalog.compute` turns it into gold rows. The vocabularies below are the
closed lists the validator checks against.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any

#: The five kinds of managed object of the standard (S4) plus service management and the
#: data platform itself.
CATEGORIES = ("facility", "cloud", "application", "platform", "security", "service", "data")
METRIC_TYPES = ("simple", "ratio", "derived", "cumulative")
AGGREGATIONS = ("sum", "count", "count_distinct", "avg", "min", "max", "p95", "last")
UNITS = (
    "ratio",
    "percent",
    "count",
    "seconds",
    "milliseconds",
    "minutes",
    "hours",
    "days",
    "bytes",
    "bytes_per_second",
    "per_second",
    "per_minute",
    "celsius",
    "watts",
    "score",
)
#: Dimensions a metric may be broken down by; each is a column of every gold metric row.
DIMENSIONS = ("entity", "business", "department", "region", "object_kind", "object_type")
GRAINS = ("1h", "1d")
STATUSES = ("draft", "published", "deprecated")
LANGUAGES = ("zh-CN", "en", "zh-TW")
DIRECTIONS = ("above", "below")

#: Fields whose change alters the numbers a metric produces: a new major version.
BREAKING_FIELDS = (
    "type",
    "model",
    "measure",
    "filter",
    "numerator",
    "denominator",
    "inputs",
    "expr",
    "base",
    "window_days",
    "unit",
    "grains",
    "dimensions",
)


@dataclass(frozen=True)
class Thresholds:
    """Warning and critical levels, crossed when the value is ``direction`` them."""

    warning: float | None = None
    critical: float | None = None
    direction: str = "above"


@dataclass(frozen=True)
class Measure:
    """An aggregation over a SQL expression of the model's columns."""

    agg: str
    expr: str = "*"


@dataclass(frozen=True)
class MetricDefinition:
    """One metric of the catalog, as written in its YAML file."""

    id: str
    names: dict[str, str]
    description: str
    unit: str
    category: str
    type: str
    owner: str
    family: str
    status: str = "draft"
    dimensions: tuple[str, ...] = ("entity",)
    grains: tuple[str, ...] = ("1h", "1d")
    tags: tuple[str, ...] = ()
    thresholds: Thresholds | None = None
    slo: float | None = None
    runbook: str | None = None
    #: Object types expected to report it (the population behind completeness).
    applies_to: tuple[str, ...] = ()
    # simple
    model: str | None = None
    measure: Measure | None = None
    filter: str | None = None
    # ratio
    numerator: str | None = None
    denominator: str | None = None
    # derived: aliases of input metrics and an expression over the aliases
    inputs: dict[str, str] = field(default_factory=dict)
    expr: str | None = None
    # cumulative: a sum or count metric accumulated over a trailing window of days
    base: str | None = None
    window_days: int | None = None
    #: Where it was read from: file path, line of the entry, line of each field.
    source_file: str = field(default="", compare=False)
    source_line: int = field(default=0, compare=False)
    field_lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def name(self, language: str = "zh-CN") -> str:
        """The display name in ``language`` (English when that one is missing)."""
        return self.names.get(language) or self.names.get("en") or self.id

    def upstream_metrics(self) -> list[str]:
        """Ids of the catalog metrics this one is computed from."""
        if self.type == "ratio":
            return [m for m in (self.numerator, self.denominator) if m]
        if self.type == "derived":
            return list(self.inputs.values())
        if self.type == "cumulative":
            return [self.base] if self.base else []
        return []

    def line_of(self, name: str) -> int:
        """The line a field was written on (the entry's line when unknown)."""
        return self.field_lines.get(name, self.source_line)

    def to_dict(self) -> dict[str, Any]:
        """The definition as YAML/JSON-ready data: defaults and provenance left out."""
        out: dict[str, Any] = {}
        defaults = MetricDefinition(
            id="", names={}, description="", unit="", category="", type="", owner="", family=""
        )
        for f in fields(self):
            if f.name in ("source_file", "source_line", "field_lines", "family"):
                continue
            value = getattr(self, f.name)
            if f.name not in (
                "id",
                "names",
                "description",
                "unit",
                "category",
                "type",
                "owner",
                "status",
            ) and value == getattr(defaults, f.name):
                continue
            if isinstance(value, Measure):
                value = {"agg": value.agg, "expr": value.expr}
            elif isinstance(value, Thresholds):
                value = {
                    k: v
                    for k, v in (
                        ("warning", value.warning),
                        ("critical", value.critical),
                        ("direction", value.direction),
                    )
                    if v is not None
                }
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    def fingerprint(self, *, breaking_only: bool = False) -> str:
        """A hash of the definition (or of the fields that change its numbers)."""
        data = self.to_dict()
        if breaking_only:
            data = {k: v for k, v in data.items() if k in BREAKING_FIELDS}
        text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]
