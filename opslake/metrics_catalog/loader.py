"""Read and validate the catalog's YAML files; every problem names its file, line and fix.

A file holds one metric family (an asset ``gold/metric_values/<family>``)::

    family: cloud_compute          # default: the file name
    category: cloud                # defaults for the metrics below
    owner: team:cloud-ops
    metrics:
      - id: cloud.host.cpu_utilisation
        names: {zh-CN: 主机CPU使用率, en: Host CPU utilisation, zh-TW: 主機CPU使用率}
        ...

See docs/metrics-catalog.md for every field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml

from opslake.errors import ConfigError, DefinitionError
from opslake.lake import schemas
from opslake.metrics_catalog import expressions
from opslake.metrics_catalog.definition import (
    AGGREGATIONS,
    CATEGORIES,
    DIMENSIONS,
    DIRECTIONS,
    GRAINS,
    LANGUAGES,
    METRIC_TYPES,
    STATUSES,
    UNITS,
    Measure,
    MetricDefinition,
    Thresholds,
)
from opslake.metrics_catalog.models import BUCKET_COLUMNS, MODELS, model_columns, register_models

ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
FAMILY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
ALIAS_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")
#: File-level keys; those that are also metric fields are defaults for the file's metrics.
FILE_KEYS = {
    "family",
    "description",
    "metrics",
    "category",
    "owner",
    "model",
    "dimensions",
    "grains",
    "status",
    "tags",
    "applies_to",
}
METRIC_KEYS = {
    "id",
    "names",
    "description",
    "unit",
    "category",
    "type",
    "owner",
    "status",
    "dimensions",
    "grains",
    "tags",
    "thresholds",
    "slo",
    "runbook",
    "applies_to",
    "model",
    "measure",
    "filter",
    "numerator",
    "denominator",
    "inputs",
    "expr",
    "base",
    "window_days",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition, where it is, and what to do."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class MetricSet:
    """Validated definitions: by id, and the ids of each family in file order."""

    metrics: dict[str, MetricDefinition] = field(default_factory=dict)
    families: dict[str, list[str]] = field(default_factory=dict)
    family_files: dict[str, str] = field(default_factory=dict)
    family_descriptions: dict[str, str] = field(default_factory=dict)

    def family(self, name: str) -> list[MetricDefinition]:
        """The metrics of one family, in file order."""
        return [self.metrics[i] for i in self.families[name]]

    def upstream_closure(self, metric_id: str) -> list[str]:
        """Every metric ``metric_id`` is computed from, transitively, inputs first."""
        seen: list[str] = []

        def visit(mid: str) -> None:
            for up in self.metrics[mid].upstream_metrics():
                if up not in seen:
                    visit(up)
                    seen.append(up)

        visit(metric_id)
        return seen

    def order(self, ids: Iterable[str]) -> list[str]:
        """``ids`` with every metric after the metrics it is computed from."""
        wanted, out = list(ids), []
        for mid in wanted:
            for up in [*self.upstream_closure(mid), mid]:
                if up in wanted and up not in out:
                    out.append(up)
        return out


# -- YAML with line numbers --------------------------------------------------------------

#: libyaml when the wheel has it (five times faster); both keep line marks on every node.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _plain(node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return {_plain(k): _plain(v) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v) for v in node.value]
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


# -- one metric --------------------------------------------------------------------------


class _Reader:
    """Builds definitions from one file's nodes, collecting problems instead of stopping."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))

    def read(self, text: str) -> tuple[str, str, list[MetricDefinition]]:
        try:
            root = yaml.compose(text, Loader=_LOADER)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            self.problem(
                mark.line + 1 if mark else 1,
                f"not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax",
            )
            return "", "", []
        stem = Path(self.path).stem
        if not isinstance(root, yaml.MappingNode):
            self.problem(
                1, "a metrics file is a mapping with a 'metrics:' list; see docs/metrics-catalog.md"
            )
            return stem, "", []
        top = {_plain(k): (k, v) for k, v in root.value}
        for name, (k, _) in top.items():
            if name not in FILE_KEYS:
                self.problem(
                    _line(k), f"unknown file key {name!r}; allowed: {', '.join(sorted(FILE_KEYS))}"
                )
        family = str(_plain(top["family"][1])) if "family" in top else stem
        if not FAMILY_PATTERN.match(family):
            self.problem(
                _line(top["family"][1]) if "family" in top else 1,
                f"family {family!r} must be lower_snake_case (it names an asset)",
            )
        description = str(_plain(top["description"][1])) if "description" in top else ""
        defaults = {
            n: _plain(v) for n, (_, v) in top.items() if n in METRIC_KEYS and n != "description"
        }
        if "metrics" not in top or not isinstance(top["metrics"][1], yaml.SequenceNode):
            self.problem(
                _line(top["metrics"][1]) if "metrics" in top else 1,
                "'metrics:' must be a list of metric entries",
            )
            return family, description, []
        out = []
        for entry in top["metrics"][1].value:
            metric = self.metric(entry, defaults, family)
            if metric is not None:
                out.append(metric)
        return family, description, out

    def metric(self, node: yaml.Node, defaults: dict, family: str) -> MetricDefinition | None:
        if not isinstance(node, yaml.MappingNode):
            self.problem(_line(node), "each metric is a mapping with at least id, names, unit")
            return None
        lines = {_plain(k): _line(k) for k, _ in node.value}
        own = {_plain(k): _plain(v) for k, v in node.value}
        raw = {**defaults, **own}
        if raw.get("type") != "simple" and "model" not in own:
            raw.pop("model", None)  # a file's default model is for its simple metrics
        start = _line(node)
        mid = raw.get("id")
        label = f"metric {mid!r}" if mid else "metric"

        def bad(key: str, message: str) -> None:
            self.problem(lines.get(key, start), f"{label}: {message}")

        for key in raw:
            if key not in METRIC_KEYS:
                bad(key, f"unknown field {key!r}; allowed: {', '.join(sorted(METRIC_KEYS))}")
        if not isinstance(mid, str) or not ID_PATTERN.match(mid):
            bad("id", "id must be dotted lower_snake_case such as 'cloud.host.cpu_utilisation'")
            return None
        names = raw.get("names")
        if not isinstance(names, dict) or any(not names.get(lang) for lang in LANGUAGES):
            bad(
                "names",
                f"names needs {', '.join(LANGUAGES)} (e.g. names: {{zh-CN: …, en: …, zh-TW: …}}}})",
            )
            names = names if isinstance(names, dict) else {}
        for key, allowed in (
            ("unit", UNITS),
            ("category", CATEGORIES),
            ("type", METRIC_TYPES),
            ("status", STATUSES),
        ):
            if key == "status" and key not in raw:
                continue
            if raw.get(key) not in allowed:
                bad(key, f"{key} {raw.get(key)!r} is not one of: {', '.join(allowed)}")
        for key in ("description", "owner"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                bad(key, f"{key} is required (a sentence; an owner such as 'team:cloud-ops')")
        dims = self.strings(raw, "dimensions", DIMENSIONS, bad, default=("entity",))
        grains = self.strings(raw, "grains", GRAINS, bad, default=("1h", "1d"))
        tags = self.strings(raw, "tags", None, bad, default=())
        applies = self.strings(raw, "applies_to", None, bad, default=())
        thresholds = self.thresholds(raw.get("thresholds"), bad)
        slo = raw.get("slo")
        if slo is not None and not isinstance(slo, int | float):
            bad("slo", "slo is a number (the objective, in the metric's unit)")
            slo = None
        measure = None
        if raw.get("type") == "simple":
            m = raw.get("measure")
            if not isinstance(m, dict) or m.get("agg") not in AGGREGATIONS:
                bad(
                    "measure",
                    f"a simple metric needs measure: {{agg: one of "
                    f"{', '.join(AGGREGATIONS)}, expr: <SQL over the model>}}",
                )
            else:
                measure = Measure(m["agg"], str(m.get("expr", "*")))
        inputs = raw.get("inputs") or {}
        if not isinstance(inputs, dict):
            bad("inputs", "inputs maps aliases to metric ids, e.g. {failed: service.x.failed}")
            inputs = {}
        window = raw.get("window_days")
        if window is not None and (not isinstance(window, int) or not 1 <= window <= 366):
            bad("window_days", "window_days is a whole number of days from 1 to 366")
            window = None
        try:
            return MetricDefinition(
                id=mid,
                names={k: str(v) for k, v in names.items()},
                description=str(raw.get("description", "")),
                unit=str(raw.get("unit")),
                category=str(raw.get("category")),
                type=str(raw.get("type")),
                owner=str(raw.get("owner", "")),
                family=family,
                status=str(raw.get("status", "draft")),
                dimensions=dims,
                grains=grains,
                tags=tags,
                thresholds=thresholds,
                slo=slo,
                runbook=raw.get("runbook"),
                applies_to=applies,
                model=raw.get("model"),
                measure=measure,
                filter=raw.get("filter"),
                numerator=raw.get("numerator"),
                denominator=raw.get("denominator"),
                inputs={str(k): str(v) for k, v in inputs.items()},
                expr=raw.get("expr"),
                base=raw.get("base"),
                window_days=window,
                source_file=self.path,
                source_line=start,
                field_lines=lines,
            )
        except (TypeError, ValueError) as exc:  # a field of the wrong shape
            bad("id", f"cannot be read ({exc})")
            return None

    @staticmethod
    def strings(
        raw: dict, key: str, allowed: tuple[str, ...] | None, bad, default: tuple
    ) -> tuple[str, ...]:
        value = raw.get(key, list(default))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            bad(key, f"{key} is a list of names")
            return default
        if allowed is not None:
            unknown = [v for v in value if v not in allowed]
            if unknown:
                bad(key, f"{key} {', '.join(unknown)} not known; use: {', '.join(allowed)}")
                return tuple(v for v in value if v in allowed) or default
        return tuple(value)

    @staticmethod
    def thresholds(value: Any, bad) -> Thresholds | None:
        if value is None:
            return None
        if (
            not isinstance(value, dict)
            or set(value) - {"warning", "critical", "direction"}
            or any(
                not isinstance(value.get(k), int | float | type(None))
                for k in ("warning", "critical")
            )
            or value.get("direction", "above") not in DIRECTIONS
        ):
            bad(
                "thresholds",
                "thresholds is {warning: number, critical: number, direction: above|below}",
            )
            return None
        return Thresholds(
            value.get("warning"), value.get("critical"), value.get("direction", "above")
        )


# -- the whole catalog -------------------------------------------------------------------


def load(directory: Path, *, check_expressions: bool = True) -> MetricSet:
    """Read every ``*.yaml`` under ``directory``; raise :class:`DefinitionError` if any is bad."""
    if not directory.is_dir():
        raise ConfigError(
            f"no metrics directory at {directory}; set OPSLAKE_METRICS_DIR or "
            "create it (opslake catalog import can fill it)"
        )
    files = sorted(p for p in directory.rglob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    return load_texts(
        {str(p): p.read_text(encoding="utf-8") for p in files}, check_expressions=check_expressions
    )


def load_texts(texts: dict[str, str], *, check_expressions: bool = True) -> MetricSet:
    """Validate definitions given as {path: YAML text} (the path is only for messages)."""
    problems: list[Problem] = []
    out = MetricSet()
    for path, text in texts.items():
        reader = _Reader(path)
        family, description, metrics = reader.read(text)
        problems += reader.problems
        if family in out.family_files and metrics:
            problems.append(
                Problem(
                    path,
                    1,
                    f"family {family!r} is already defined in "
                    f"{out.family_files[family]}; one file per family",
                )
            )
            continue
        if metrics:
            out.families[family] = []
            out.family_files[family] = path
            out.family_descriptions[family] = description
        for metric in metrics:
            if metric.id in out.metrics:
                first = out.metrics[metric.id]
                problems.append(
                    Problem(
                        path,
                        metric.source_line,
                        f"duplicate id {metric.id!r}: already defined at "
                        f"{first.source_file}:{first.source_line}; rename one",
                    )
                )
                continue
            out.metrics[metric.id] = metric
            out.families[family].append(metric.id)
    problems += _check_references(out)
    if check_expressions and not problems:
        problems += _check_expressions(out)
    if problems:
        raise DefinitionError(problems)
    return out


def _at(metric: MetricDefinition, key: str, message: str) -> Problem:
    return Problem(metric.source_file, metric.line_of(key), f"metric {metric.id!r}: {message}")


def _check_references(catalog: MetricSet) -> list[Problem]:
    problems: list[Problem] = []
    for m in catalog.metrics.values():
        need = {
            "simple": ("model", "measure"),
            "ratio": ("numerator", "denominator"),
            "derived": ("inputs", "expr"),
            "cumulative": ("base", "window_days"),
        }.get(m.type, ())
        for key in need:
            if not getattr(m, key):
                problems.append(_at(m, key, f"a {m.type} metric needs {key!r}"))
        if m.type != "simple" and m.model:
            problems.append(
                _at(
                    m,
                    "model",
                    f"only simple metrics have a model; a {m.type} "
                    "metric is computed from other metrics",
                )
            )
        if m.type == "simple" and m.model and m.model not in MODELS:
            problems.append(
                _at(m, "model", f"unknown model {m.model!r}; use one of {', '.join(MODELS)}")
            )
        elif m.type == "simple" and m.model and MODELS[m.model].snapshot and m.grains != ("1d",):
            problems.append(
                _at(m, "grains", f"model {m.model!r} is a daily snapshot; set grains: [1d]")
            )
        if m.type == "cumulative" and m.grains != ("1d",):
            problems.append(
                _at(m, "grains", "a cumulative metric accumulates days; set grains: [1d]")
            )
        for alias in m.inputs:
            if not ALIAS_PATTERN.match(alias):
                problems.append(
                    _at(
                        m,
                        "inputs",
                        f"input alias {alias!r} must be a lower_snake "
                        "identifier usable in the expression",
                    )
                )
        for key, up in [
            ("numerator", m.numerator),
            ("denominator", m.denominator),
            ("base", m.base),
            *(("inputs", v) for v in m.inputs.values()),
        ]:
            if up is None or m.type not in ("ratio", "derived", "cumulative"):
                continue
            other = catalog.metrics.get(up)
            if other is None:
                problems.append(
                    _at(m, key, f"refers to unknown metric {up!r}; define it or fix the id")
                )
                continue
            missing_dims = set(m.dimensions) - set(other.dimensions)
            if missing_dims:
                problems.append(
                    _at(
                        m,
                        "dimensions",
                        f"dimensions {', '.join(sorted(missing_dims))}"
                        f" are not dimensions of input {up!r}",
                    )
                )
            missing_grains = set(m.grains) - set(other.grains)
            if missing_grains:
                problems.append(
                    _at(
                        m,
                        "grains",
                        f"grains {', '.join(sorted(missing_grains))} "
                        f"are not grains of input {up!r}",
                    )
                )
            if m.type == "cumulative" and (
                other.type != "simple"
                or other.measure is None
                or other.measure.agg not in ("sum", "count")
            ):
                problems.append(
                    _at(
                        m,
                        "base",
                        f"base {up!r} must be a simple sum or count "
                        "metric (only those add up over days)",
                    )
                )
    problems += _cycles(catalog)
    return problems


def _cycles(catalog: MetricSet) -> list[Problem]:
    """A problem for each metric on a cycle of derived/ratio/cumulative references."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    on_cycle: dict[str, list[str]] = {}

    def visit(mid: str, path: list[str]) -> None:
        state[mid] = 1
        for up in catalog.metrics[mid].upstream_metrics():
            if up not in catalog.metrics:
                continue
            if state.get(up) == 1:
                cycle = path[path.index(up) :] + [up]
                for member in cycle[:-1]:
                    on_cycle.setdefault(member, cycle)
            elif up not in state:
                visit(up, [*path, up])
        state[mid] = 2

    for mid in catalog.metrics:
        if mid not in state:
            visit(mid, [mid])
    return [
        _at(
            catalog.metrics[mid],
            "id",
            "is on a cycle of metrics computed from each "
            f"other ({' → '.join(cycle)}); break the cycle",
        )
        for mid, cycle in on_cycle.items()
    ]


def _check_expressions(catalog: MetricSet) -> list[Problem]:
    problems: list[Problem] = []
    con = duckdb.connect()
    try:
        register_models(con, {}, schemas.ASSETS.empty_table(), "2000-01-01")
        columns = {name: model_columns(con, name) for name in MODELS}
        for name in MODELS:  # what a measure sees: the model plus its row's bucket
            con.execute(
                f'CREATE TEMP VIEW "measure_{name}" AS SELECT *, '
                + ", ".join(f"CAST(NULL AS TIMESTAMPTZ) AS {c}" for c in BUCKET_COLUMNS)
                + f' FROM "{name}"'
            )
        for m in catalog.metrics.values():
            if m.type == "simple" and m.model in MODELS and m.measure:
                problems += _check_simple(con, m, columns[m.model])
            elif m.type == "derived" and m.expr:
                problems += _check_derived(con, m)
    finally:
        con.close()
    return problems


def _check_simple(
    con: duckdb.DuckDBPyConnection, m: MetricDefinition, columns: dict[str, str]
) -> list[Problem]:
    problems: list[Problem] = []
    for key, text in (("measure", m.measure.expr), ("filter", m.filter)):
        if text is None or (key == "measure" and text.strip() == "*"):
            continue
        try:
            used = expressions.parse(text).columns
        except expressions.ExpressionError as exc:
            problems.append(_at(m, key, f"{key} {text!r}: {exc}"))
            continue
        unknown = sorted(used - set(columns) - (set(BUCKET_COLUMNS) if key == "measure" else set()))
        if unknown:
            problems.append(
                _at(
                    m,
                    key,
                    f"{key} uses unknown column(s) {', '.join(unknown)} of "
                    f"model {m.model!r}; its columns are "
                    f"{', '.join(columns)}",
                )
            )
    if problems:
        return problems
    model = MODELS[m.model]
    try:
        kind = expressions.bind(
            con,
            expressions.aggregate_sql(m.measure, model.time_column),
            f"measure_{m.model}",
            m.filter,
        )
        if not re.match(
            r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|U?\w*INT|FLOAT|DOUBLE|"
            r"DECIMAL)",
            kind,
        ):
            problems.append(_at(m, "measure", f"measure gives {kind}, not a number; cast it"))
        if m.filter:
            kind = expressions.bind(con, f"({m.filter})", m.model, None)
            if kind != "BOOLEAN":
                problems.append(_at(m, "filter", f"filter gives {kind}, not true/false"))
    except expressions.ExpressionError as exc:
        problems.append(_at(m, "measure", f"does not bind on model {m.model!r}: {exc}"))
    return problems


def _check_derived(con: duckdb.DuckDBPyConnection, m: MetricDefinition) -> list[Problem]:
    try:
        used = expressions.parse(m.expr).columns
    except expressions.ExpressionError as exc:
        return [_at(m, "expr", f"expr {m.expr!r}: {exc}")]
    unknown = sorted(used - set(m.inputs))
    if unknown:
        return [
            _at(
                m,
                "expr",
                f"expr uses {', '.join(unknown)}, which are not input aliases "
                f"({', '.join(m.inputs) or 'none'}); add them under inputs",
            )
        ]
    cols = ", ".join(f'CAST(NULL AS DOUBLE) AS "{a}"' for a in m.inputs)
    try:
        con.execute(f"DESCRIBE SELECT ({m.expr}) AS v FROM (SELECT {cols})")
    except duckdb.Error as exc:
        return [_at(m, "expr", f"expr does not bind: {str(exc).splitlines()[0]}")]
    return []
