"""Alert rules over the platform's own metrics (source ``opslake-self``, S6.10a).

``config/alerting/self.yaml`` (or ``$OPSLAKE_ALERTING_DIR/self.yaml``) holds threshold rules::

    rules:
      - name: CollectionLag               # the alert name
        metric: opslake_collection_lag_seconds  # a series the opslake-self task collects
        match: {task: node-exporter-local}  # optional: labels the sample must carry
        above: 600                        # or below: N (fires when value > above / < below)
        severity: major
        summary: 采集延迟超过10分钟 / collection lag over 10 minutes

The ``opslake-self`` collection task evaluates them on every sample it collects, once per run.
A sample that breaks its rule fires the alert (one per rule and series: fingerprint from the
rule and the sample's labels); the first run after that finds it within bounds resolves it.
Alerts land as Alertmanager notifications under ``landing/platform`` (source
``opslake-platform``), like a failed pipeline run's, so the live path turns them into incidents,
converges and notifies them within a minute. A failed pipeline run is not a rule here: the run
itself lands ``PipelineRunFailed`` (:mod:`opslake.alerting.platform`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from opslake.alerting import platform
from opslake.alerting.rules import SEVERITIES, Matcher, read_yaml
from opslake.errors import ConfigError
from opslake.ingest.parsers.alertmanager import ZERO_TIME, rfc3339
from opslake.lake.landing import LandedBatch, LandingZone

SELF_FILE = "self.yaml"
CONNECTOR = "opslake-self/1"
_FIELDS = {"name", "metric", "match", "above", "below", "severity", "summary", "description"}


@dataclass(frozen=True)
class Sample:
    """One collected figure: metric name, labels (``entity_id`` among them) and value."""

    metric: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class SelfRule:
    """Fires while a sample of ``metric`` matching ``match`` is above ``above`` / below ``below``."""

    name: str
    metric: str
    match: Matcher
    above: float | None
    below: float | None
    severity: str
    summary: str
    description: str = ""

    def broken_by(self, sample: Sample) -> bool:
        """Whether ``sample`` is outside this rule's bounds."""
        if self.above is not None and sample.value > self.above:
            return True
        return self.below is not None and sample.value < self.below

    def watches(self, sample: Sample) -> bool:
        """Whether ``sample`` is one this rule judges."""
        return sample.metric == self.metric and self.match.matches(sample.labels)

    def fingerprint(self, sample: Sample) -> str:
        """One alert per rule and series (16 hex digits)."""
        key = "|".join([self.name, *(f"{k}={v}" for k, v in sorted(sample.labels.items()))])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def load(directory: Path) -> list[SelfRule]:
    """The rules of ``directory/self.yaml`` (none when absent); every problem at once."""
    path = directory / SELF_FILE
    raw = read_yaml(path)
    where = str(path)
    items = raw.get("rules") or []
    problems: list[str] = []
    if set(raw) - {"rules"}:
        problems.append(f"{where}: unknown section(s) {sorted(set(raw) - {'rules'})}; use rules")
    if not isinstance(items, list):
        raise ConfigError(f"{where}: rules must be a list of rules")
    rules: list[SelfRule] = []
    for i, item in enumerate(items):
        ctx = f"{where}: rules[{i}]"
        if not isinstance(item, Mapping) or not item.get("name") or not item.get("metric"):
            problems.append(f"{ctx} needs a name and a metric")
            continue
        ctx = f"{where}: rule {item['name']!r}"
        try:
            rules.append(_rule(item, ctx))
        except (ConfigError, TypeError, ValueError) as exc:
            problems.append(str(exc) if isinstance(exc, ConfigError) else f"{ctx}: {exc}")
    names = [r.name for r in rules]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{where}: rule names {dupes} are used twice; give each a new name")
    if problems:
        raise ConfigError("\n".join(problems))
    return rules


def _rule(item: Mapping[str, object], ctx: str) -> SelfRule:
    if unknown := set(item) - _FIELDS:
        raise ConfigError(f"{ctx}: unknown field(s) {sorted(unknown)}; use {sorted(_FIELDS)}")
    above, below = item.get("above"), item.get("below")
    if above is None and below is None:
        raise ConfigError(f"{ctx}: give a bound, above: N or below: N")
    severity = str(item.get("severity", "critical"))
    if severity not in SEVERITIES:
        raise ConfigError(f"{ctx}: severity {severity!r} is not one of {list(SEVERITIES)}")
    return SelfRule(
        name=str(item["name"]),
        metric=str(item["metric"]),
        match=Matcher.parse(item.get("match"), ctx),
        above=None if above is None else float(above),  # type: ignore[arg-type]
        below=None if below is None else float(below),  # type: ignore[arg-type]
        severity=severity,
        summary=str(item.get("summary") or item["name"]),
        description=str(item.get("description", "")),
    )


def evaluate(
    zone: LandingZone, rules: Iterable[SelfRule], samples: Iterable[Sample], at: datetime
) -> list[LandedBatch]:
    """Land a firing alert for each sample newly out of bounds and a resolution for each back
    within them; an alert already in that state lands nothing."""
    samples = list(samples)
    landed: list[LandedBatch] = []
    for rule in rules:
        for sample in (s for s in samples if rule.watches(s)):
            fp = rule.fingerprint(sample)
            starts = platform.open_since(zone, fp, at)
            broken = rule.broken_by(sample)
            if broken == (starts is not None):
                continue
            bound = f"> {rule.above:g}" if rule.above is not None else f"< {rule.below:g}"
            alert = {
                "status": "firing" if broken else "resolved",
                "labels": {
                    "alertname": rule.name,
                    "severity": rule.severity,
                    **{k: v for k, v in sample.labels.items() if k != "job"},
                    "job": "opslake-self",
                },
                "annotations": {
                    "summary": rule.summary,
                    "description": (
                        f"{sample.metric} = {sample.value:g} ({bound})"
                        + (f"; {rule.description}" if rule.description else "")
                    ),
                },
                "startsAt": starts or rfc3339(at),
                "endsAt": ZERO_TIME if broken else rfc3339(at),
                "generatorURL": "",
                "fingerprint": fp,
            }
            batch = platform.land(
                zone,
                alert,
                alertname=rule.name,
                batch_id=f"self-{fp}-{int(at.timestamp() * 1000)}",
                at=at,
                connector=CONNECTOR,
            )
            if batch is not None:
                landed.append(batch)
    return landed
