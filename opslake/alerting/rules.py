"""The convergence rules as files: grouping, flapping, maintenance, inhibition, correlation.

``config/alerting/convergence.yaml`` (or ``$OPSLAKE_ALERTING_DIR/convergence.yaml``) holds
them; every problem is reported with the file, the rule and the fix, all at once.

A matcher maps a label name to a value or a list of values; ``source``, ``severity``,
``alertname`` and ``entity_id`` match the alert's own fields, ``kind`` the CMDB object kind
of its entity, and any other name the alert's labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from opslake.errors import ConfigError

CONVERGENCE_FILE = "convergence.yaml"
SEVERITIES = ("info", "warning", "minor", "major", "critical")
_DURATION = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
SCOPES = ("downstream", "same_entity")


def read_yaml(path: Path) -> dict:
    """A configuration file's mapping; empty when the file does not exist."""
    if not path.exists():
        return {}
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the syntax") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the file must hold a mapping of sections")
    return dict(raw)


def duration_s(text: object, where: str) -> int:
    """Seconds of ``30s`` / ``15m`` / ``2h`` / ``1d``."""
    m = _DURATION.match(str(text).strip())
    if not m:
        raise ConfigError(f"{where}: {text!r} is not a duration; write e.g. 30s, 15m, 2h or 1d")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


@dataclass(frozen=True)
class Matcher:
    """Label name → accepted values; empty matches every alert."""

    terms: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def parse(cls, raw: object, where: str) -> Matcher:
        """From ``{name: value | [values]}``."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: a matcher is a mapping of label name to value(s)")
        terms = []
        for name, value in raw.items():
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str | int) for v in values):
                raise ConfigError(f"{where}: label {name!r} needs a value or a list of values")
            terms.append((str(name), frozenset(str(v) for v in values)))
        return cls(tuple(sorted(terms, key=lambda t: t[0])))

    def matches(self, fields: Mapping[str, str | None]) -> bool:
        """Whether every term accepts the alert's value of its label."""
        return all(fields.get(name) in values for name, values in self.terms)


@dataclass(frozen=True)
class InhibitRule:
    """While a ``source`` alert fires, ``target`` alerts downstream of its entity are muted."""

    name: str
    source: Matcher
    target: Matcher
    scope: str = "downstream"
    description: str = ""


@dataclass(frozen=True)
class CorrelationRule:
    """Alerts matching ``match`` with equal ``group_by`` labels within ``window_s`` are one incident."""

    name: str
    match: Matcher
    group_by: tuple[str, ...]
    window_s: int
    title: str = ""
    description: str = ""


@dataclass(frozen=True)
class ConvergenceRules:
    """Everything convergence is parameterised by."""

    window_s: int = 900
    max_hops: int = 6
    #: Below a CI that more than this share of the estate needs, alerts are not related.
    max_shared_fraction: float = 0.2
    dedup_window_s: int = 7200
    flap_count: int = 4
    flap_window_s: int = 3600
    #: A change window on a CI also covers the CIs that run on it.
    maintenance_hosted: bool = True
    inhibit: tuple[InhibitRule, ...] = ()
    correlation: tuple[CorrelationRule, ...] = field(default=())

    @classmethod
    def load(cls, directory: Path) -> ConvergenceRules:
        """Read ``convergence.yaml`` from ``directory``; defaults when the file is absent."""
        path = directory / CONVERGENCE_FILE
        return cls.parse(read_yaml(path), str(path)) if path.exists() else cls()

    @classmethod
    def parse(cls, raw: Mapping[str, object], where: str) -> ConvergenceRules:
        """From the file's mapping; every problem is listed in one error."""
        problems: list[str] = []

        def section(name: str) -> Mapping[str, object]:
            value = raw.get(name) or {}
            if not isinstance(value, Mapping):
                problems.append(f"{where}: {name} must be a mapping")
                return {}
            return value

        def dur(sec: Mapping[str, object], name: str, default: int, ctx: str) -> int:
            if name not in sec:
                return default
            try:
                return duration_s(sec[name], f"{where}: {ctx}.{name}")
            except ConfigError as exc:
                problems.append(str(exc))
                return default

        unknown = set(raw) - {"grouping", "flapping", "maintenance", "inhibit", "correlation"}
        if unknown:
            problems.append(
                f"{where}: unknown section(s) {sorted(unknown)}; use grouping, "
                "flapping, maintenance, inhibit, correlation"
            )
        grouping, flapping, maint = section("grouping"), section("flapping"), section("maintenance")
        rules = cls(
            window_s=dur(grouping, "window", cls.window_s, "grouping"),
            max_hops=int(grouping.get("max_hops", cls.max_hops)),
            max_shared_fraction=float(grouping.get("max_shared_fraction", cls.max_shared_fraction)),
            dedup_window_s=dur(grouping, "dedup_window", cls.dedup_window_s, "grouping"),
            flap_count=int(flapping.get("count", cls.flap_count)),
            flap_window_s=dur(flapping, "window", cls.flap_window_s, "flapping"),
            maintenance_hosted=bool(maint.get("include_hosted", True)),
            inhibit=tuple(cls._inhibit(raw.get("inhibit") or [], where, problems)),
            correlation=tuple(cls._correlation(raw.get("correlation") or [], where, problems, dur)),
        )
        names = [r.name for r in (*rules.inhibit, *rules.correlation)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"{where}: rule names {dupes} are used twice; give each a new name")
        if rules.flap_count < 2:
            problems.append(f"{where}: flapping.count must be at least 2")
        if problems:
            raise ConfigError("\n".join(problems))
        return rules

    @staticmethod
    def _entries(
        items: object, where: str, kind: str, problems: list[str]
    ) -> list[tuple[str, Mapping[str, object]]]:
        if not isinstance(items, list):
            problems.append(f"{where}: {kind} must be a list of rules")
            return []
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not item.get("name"):
                problems.append(f"{where}: {kind}[{i}] needs a name")
                continue
            out.append((f"{where}: {kind} rule {item['name']!r}", item))
        return out

    @classmethod
    def _inhibit(cls, items: object, where: str, problems: list[str]) -> list[InhibitRule]:
        out = []
        for ctx, item in cls._entries(items, where, "inhibit", problems):
            try:
                scope = str(item.get("scope", "downstream"))
                if scope not in SCOPES:
                    raise ConfigError(f"{ctx}: scope {scope!r} is not one of {list(SCOPES)}")
                if not item.get("source"):
                    raise ConfigError(f"{ctx}: needs a source matcher (which alerts inhibit)")
                out.append(
                    InhibitRule(
                        str(item["name"]),
                        Matcher.parse(item["source"], ctx),
                        Matcher.parse(item.get("target"), ctx),
                        scope,
                        str(item.get("description", "")),
                    )
                )
            except ConfigError as exc:
                problems.append(str(exc))
        return out

    @classmethod
    def _correlation(
        cls, items: object, where: str, problems: list[str], dur
    ) -> list[CorrelationRule]:
        out = []
        for ctx, item in cls._entries(items, where, "correlation", problems):
            try:
                if not item.get("match"):
                    raise ConfigError(f"{ctx}: needs a match (which alerts it groups)")
                group_by = item.get("group_by", [])
                if not isinstance(group_by, list):
                    raise ConfigError(f"{ctx}: group_by is a list of label names")
                out.append(
                    CorrelationRule(
                        str(item["name"]),
                        Matcher.parse(item["match"], ctx),
                        tuple(str(g) for g in group_by),
                        dur(item, "window", 3600, ctx),
                        str(item.get("title", "")),
                        str(item.get("description", "")),
                    )
                )
            except ConfigError as exc:
                problems.append(str(exc))
        return out
