"""Expectation suites as files: ``opslake/quality/suites/<layer>.<table>.yaml`` (S6.2e).

Each check has a name (the Dagster asset check's name), a kind, a severity and the kind's
parameters::

    table: silver.probes
    time_column: ts
    checks:
      - {name: ts_present, kind: not_null, column: ts}
      - {name: latency_sane, kind: range, column: latency_ms, min: 0, max: 600000}
      - {name: kind_known, kind: allowed_values, column: kind, values: [http, tcp]}
      - {name: one_result_per_probe_and_time, kind: unique, columns: [probe_id, ts]}
      - {name: entity_in_cmdb, kind: referential, column: entity_id}
      - {name: contract_columns, kind: schema}
      - {name: fresh, kind: freshness, max_lag_minutes: 90}
      - {name: volume_vs_history, kind: volume, min_ratio: 0.5, max_ratio: 3.0}
      - {name: lines_parse, kind: parse_rate, max_rejected_ratio: 0.01}

Row checks (``not_null``, ``range``, ``allowed_values``, ``unique``, ``referential``) may
take ``where`` (a pandas condition, e.g. ``metric.str.endswith("_ratio")``) and ``mostly``.
Severity ``error`` (the default) is the contract: offending rows are quarantined, and a
failed table-level contract check blocks the partition from gold; ``warning`` is recorded.
Parse rate and volume are judged per sender too: a sender failing them while the table
stands is recorded as a warning, so one sender never blocks a day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from opslake.errors import ConfigError
from opslake.quality.results import KINDS, SEVERITIES

SUITES_DIR = Path(__file__).parent / "suites"
_KEYS = {
    "name",
    "kind",
    "severity",
    "column",
    "columns",
    "min",
    "max",
    "values",
    "where",
    "mostly",
    "max_lag_minutes",
    "min_ratio",
    "max_ratio",
    "history_days",
    "max_rejected_ratio",
    "allowed_lines",
    "description",
}
_NEEDS = {
    "not_null": ("column",),
    "range": ("column",),
    "allowed_values": ("column", "values"),
    "unique": ("columns",),
    "referential": ("column",),
    "schema": (),
    "freshness": ("max_lag_minutes",),
    "volume": ("min_ratio",),
    "parse_rate": ("max_rejected_ratio",),
}


@dataclass(frozen=True)
class Check:
    """One expectation of a suite."""

    name: str
    kind: str
    severity: str = "error"
    column: str | None = None
    columns: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()
    where: str | None = None
    mostly: float = 1.0
    max_lag_minutes: float | None = None
    min_ratio: float | None = None
    max_ratio: float | None = None
    history_days: int = 7
    max_rejected_ratio: float | None = None
    allowed_lines: int = 5
    description: str = ""

    def summary(self) -> str:
        """What the check expects, in one line (the Dagster check's description)."""
        scope = f" where {self.where}" if self.where else ""
        text = {
            "not_null": f"{self.column} is never null{scope}",
            "range": f"{self.min} ≤ {self.column} ≤ {self.max}{scope}",
            "allowed_values": f"{self.column} ∈ {{{', '.join(self.values)}}}{scope}",
            "unique": f"({', '.join(self.columns)}) is unique{scope}",
            "referential": f"every non-null {self.column} is a CI in the CMDB{scope}",
            "schema": "columns and types are the contract's",
            "freshness": f"the newest row is at most {self.max_lag_minutes:g} min before the "
            "end of the day"
            if self.max_lag_minutes is not None
            else "",
            "volume": f"rows within {self.min_ratio}×–{self.max_ratio or '∞'}× the mean of the "
            f"previous {self.history_days} days (≥ 1 row without history); each "
            "sender that delivered on every one of those days is held to its own "
            "mean, which only warns while the table's volume holds",
            "parse_rate": f"at most {self.max_rejected_ratio:.1%} of each sender's lines "
            f"(per landing source and API key or connector) quarantined, beyond "
            f"{self.allowed_lines} lines; a failing sender only warns while "
            "another sender's lines parse"
            if self.max_rejected_ratio is not None
            else "",
        }[self.kind]
        return f"[{self.severity}] {text}" + (f". {self.description}" if self.description else "")


@dataclass(frozen=True)
class Suite:
    """The checks of one table."""

    layer: str
    table: str
    time_column: str | None
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        """``layer.table``."""
        return f"{self.layer}.{self.table}"


def _check(raw: dict, path: Path) -> Check:
    where = f"{path.name}: check {raw.get('name', '?')!r}"
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: "
            f"{', '.join(sorted(_KEYS))}"
        )
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if raw.get("severity", "error") not in SEVERITIES:
        raise ConfigError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
    for need in _NEEDS[kind]:
        if raw.get(need) in (None, [], ""):
            raise ConfigError(f"{where}: a {kind} check needs {need!r}")
    values = dict(raw)
    for key in ("columns", "values"):
        if key in values:
            values[key] = tuple(str(v) for v in values[key])
    return Check(**values)


def load_suites(directory: Path = SUITES_DIR) -> dict[str, Suite]:
    """Every suite, by ``layer.table``; a malformed file is a ConfigError naming it."""
    suites = {}
    for path in sorted(directory.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        layer, _, table = str(raw.get("table", "")).partition(".")
        if not table or path.stem != raw.get("table"):
            raise ConfigError(f"{path.name}: 'table' must be layer.table and match the file name")
        checks = tuple(_check(c, path) for c in raw.get("checks", []))
        names = [c.name for c in checks]
        duplicated = {n for n in names if names.count(n) > 1}
        if duplicated:
            raise ConfigError(f"{path.name}: check names repeat: {', '.join(sorted(duplicated))}")
        suites[f"{layer}.{table}"] = Suite(layer, table, raw.get("time_column"), checks)
    return suites
