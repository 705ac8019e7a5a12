"""Compute catalog metrics into gold rows with DuckDB, from silver tables of one day.

Every metric produces rows per time ``grain`` and ``scope``: one scope per allowed dimension
(``entity`` rows also carry the entity's business, department, region and object kind/type)
plus ``all`` for the whole estate. Each scope is aggregated from the model's rows directly
(DuckDB ``GROUPING SETS``), so percentiles and distinct counts are exact at every level, not
averages of averages. ``numerator``/``denominator`` hold the sum and count behind an average
and the two sides of a ratio, so a consumer can re-aggregate exactly.

Ratio, derived and cumulative metrics are computed from their inputs' rows at the same grain,
bucket and scope; inputs from other families are computed again here (cheap, and a family
then never waits on another's partition), except the earlier days a cumulative metric adds
up, which come from gold.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import pyarrow as pa

from opslake.lake import duck
from opslake.lake.schemas import TS
from opslake.metrics_catalog.definition import DIMENSIONS, MetricDefinition
from opslake.metrics_catalog.expressions import aggregate_sql, parse
from opslake.metrics_catalog.loader import MetricSet
from opslake.metrics_catalog.models import MODELS, register_models

#: Dimension → the columns its scope's rows carry.
SCOPE_COLUMNS = {
    "entity": ("entity_id", "business", "department", "region", "object_kind", "object_type"),
    "business": ("business",),
    "department": ("department",),
    "region": ("region",),
    "object_kind": ("object_kind",),
    "object_type": ("object_type",),
}
DIM_COLUMNS = SCOPE_COLUMNS["entity"]
GRAIN_INTERVAL = {"1h": "1 hour", "1d": "1 day"}
#: Aggregations that combine exactly from per-entity partials: (partials, value from them).
_PARTIAL = {
    "sum": ("sum({e}) AS p", "sum(p)"),
    "count": ("count({e}) AS p", "sum(p)"),
    "min": ("min({e}) AS p", "min(p)"),
    "max": ("max({e}) AS p", "max(p)"),
    "avg": ("sum({e}) AS s, count({e}) AS c", "sum(s) / sum(c)"),
}

METRIC_VALUES = pa.schema(
    [
        ("metric_id", pa.string()),
        ("metric_version", pa.string()),
        ("grain", pa.string()),
        ("bucket_start", TS),
        ("scope", pa.string()),
        *((c, pa.string()) for c in DIM_COLUMNS),
        ("value", pa.float64()),
        ("numerator", pa.float64()),
        ("denominator", pa.float64()),
    ]
)
_ROW = ", ".join(["grain", "bucket_start", "scope", *DIM_COLUMNS])
_JOIN_KEYS = ["grain", "bucket_start", "scope", *DIM_COLUMNS]

#: Reads earlier days of gold rows: (metric ids, days) → rows of ``METRIC_VALUES``.
History = Callable[[list[str], list[str]], pa.Table]


def required_models(metrics: MetricSet, ids: list[str]) -> list[str]:
    """Models that computing ``ids`` (and what they are computed from) reads."""
    needed = {metrics.metrics[m].model for i in ids for m in [*metrics.upstream_closure(i), i]}
    return sorted(n for n in needed if n)


def _scopes(metric: MetricDefinition) -> list[str]:
    return [d for d in DIMENSIONS if d in metric.dimensions] + ["all"]


def _scope_filter(metric: MetricDefinition, alias: str = "") -> str:
    scopes = ", ".join(f"'{s}'" for s in _scopes(metric))
    grains = ", ".join(f"'{g}'" for g in metric.grains)
    prefix = f"{alias}." if alias else ""
    return f"{prefix}scope IN ({scopes}) AND {prefix}grain IN ({grains})"


def _join(left: str, right: str) -> str:
    return " AND ".join(f"{left}.{k} IS NOT DISTINCT FROM {right}.{k}" for k in _JOIN_KEYS)


class _Computation:
    """One DuckDB connection holding each computed metric as a temp table ``m<i>``."""

    def __init__(
        self,
        metrics: MetricSet,
        start: datetime,
        end: datetime,
        history: History | None,
        day: str,
        grains: tuple[str, ...] | None,
    ) -> None:
        self.metrics, self.start, self.end, self.history, self.day = (
            metrics,
            start,
            end,
            history,
            day,
        )
        self.grains = grains
        self.rows: dict[str, str] = {}  # model → temp table of the rows its metrics read
        self.con = duck.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        # Parallel float sums add in a different order each run (last-bit differences);
        # one thread makes a re-run byte-identical, like every other gold table.
        self.con.execute("SET threads = 1")
        self.tables: dict[str, str] = {}

    def table(self, metric_id: str) -> str:
        if metric_id not in self.tables:
            metric = self.metrics.metrics[metric_id]
            name = f"m{len(self.tables)}"
            sql = getattr(self, f"_{metric.type}")(metric)
            self.con.execute(f"CREATE TEMP TABLE {name} AS {sql}")
            self.tables[metric_id] = name
        return self.tables[metric_id]

    def _simple(self, m: MetricDefinition) -> str:
        model = MODELS[m.model]
        t = f'"{model.time_column}"'
        dims = [d for d in DIMENSIONS if d in m.dimensions]
        sets = ", ".join(
            ["(bucket_start, " + ", ".join(SCOPE_COLUMNS[d]) + ")" for d in dims]
            + ["(bucket_start)"]
        )
        scope = (
            "CASE "
            + " ".join(f"WHEN GROUPING({SCOPE_COLUMNS[d][0]}) = 0 THEN '{d}'" for d in dims)
            + " ELSE 'all' END"
            if dims
            else "'all'"
        )
        grouped = {c for d in dims for c in SCOPE_COLUMNS[d]}
        columns = ", ".join(
            c if c in grouped else f"CAST(NULL AS VARCHAR) AS {c}" for c in DIM_COLUMNS
        )
        where = f" WHERE ({m.filter})" if m.filter else ""
        agg, expr = m.measure.agg, m.measure.expr
        e = "*" if agg == "count" and expr.strip() == "*" else f"({expr})"
        no_parts = "CAST(NULL AS DOUBLE) AS numerator, CAST(NULL AS DOUBLE) AS denominator"
        if agg in _PARTIAL:
            # Aggregate per entity first, then the scopes from those few rows: the same
            # numbers (these aggregations combine exactly) at a fraction of the work.
            partial, value = _PARTIAL[agg]
            measures = f"CAST({value} AS DOUBLE) AS value, " + (
                "CAST(sum(s) AS DOUBLE) AS numerator, CAST(sum(c) AS DOUBLE) AS denominator"
                if agg == "avg"
                else no_parts
            )
            if model.attributes_by_entity:
                # Grouping by one key and joining the entity's attributes after is much
                # cheaper than grouping by all six strings.
                attributes = ", ".join(f"d.{c}" for c in DIM_COLUMNS[1:])
                inner = (
                    f"SELECT a.*, {attributes} FROM (SELECT bucket_start, entity_id, "
                    f"{partial.format(e=e)} FROM ({{rows}}) GROUP BY ALL) a "
                    "LEFT JOIN entity_attributes d USING (entity_id)"
                )
            else:
                inner = (
                    f"SELECT bucket_start, {', '.join(DIM_COLUMNS)}, "
                    f"{partial.format(e=e)} FROM ({{rows}}) GROUP BY ALL"
                )
        else:
            measures = (
                f"CAST({aggregate_sql(m.measure, model.time_column)} AS DOUBLE) AS value, "
                + no_parts
            )
            inner = "{rows}"
        selects = []
        for grain in [g for g in m.grains if not self.grains or g in self.grains]:
            width = GRAIN_INTERVAL[grain]
            rows = (
                f"SELECT *, bucket_start + INTERVAL '{width}' AS bucket_end FROM ("
                f"SELECT *, time_bucket(INTERVAL '{width}', {t}) AS bucket_start "
                f'FROM "{self.rows[m.model]}"{where})'
            )
            selects.append(
                f"SELECT '{grain}' AS grain, bucket_start, {scope} AS scope, {columns}, "
                f"{measures} FROM ({inner.replace('{rows}', rows)}) GROUP BY GROUPING SETS "
                f"({sets})"
            )
        return " UNION ALL ".join(selects)

    def prepare(self, ids: list[str]) -> None:
        """Read each model once: the window's rows any of the metrics wants, needed columns.

        Every simple metric then scans this small table instead of silver again, which
        keeps a family at one Parquet scan per model however many metrics it has.
        """
        simple: dict[str, list[MetricDefinition]] = {}
        for mid in ids:
            for up in [*self.metrics.upstream_closure(mid), mid]:
                m = self.metrics.metrics[up]
                if m.type == "simple" and m not in simple.setdefault(m.model, []):
                    simple[m.model].append(m)
        for name, members in simple.items():
            model = MODELS[name]
            available = [r[0] for r in self.con.execute(f'DESCRIBE "{name}"').fetchall()]
            used = {model.time_column, *DIM_COLUMNS}
            for m in members:
                for text in (m.measure.expr, m.filter):
                    if text and text.strip() != "*":
                        used |= parse(text).columns
            t = f'"{model.time_column}"'
            # Bucketing a plain (UTC) timestamp is several times faster than a zoned one;
            # rows go back to UTC-zoned timestamps on the way out.
            columns = ", ".join(
                f"CAST({t} AS TIMESTAMP) AS {t}" if c == model.time_column else f'"{c}"'
                for c in available
                if c in used
            )
            wanted = (
                " OR ".join(f"({m.filter})" for m in members)
                if all(m.filter for m in members)
                else "TRUE"
            )
            table = f"rows_{name}"
            self.con.execute(
                f'CREATE TEMP TABLE "{table}" AS SELECT {columns} FROM "{name}" '
                f"WHERE {t} >= TIMESTAMPTZ '{self.start.isoformat()}' "
                f"AND {t} < TIMESTAMPTZ '{self.end.isoformat()}' AND ({wanted})"
            )
            self.rows[name] = table

    def _ratio(self, m: MetricDefinition) -> str:
        num, den = self.table(m.numerator), self.table(m.denominator)
        additive = self.metrics.metrics[m.numerator].measure is not None and self.metrics.metrics[
            m.numerator
        ].measure.agg in ("sum", "count")
        n_value = "coalesce(n.value, 0)" if additive else "n.value"
        keys = ", ".join(f"d.{k}" for k in _JOIN_KEYS)
        return (
            f"SELECT {keys}, {n_value} / NULLIF(d.value, 0) AS value, "
            f"{n_value} AS numerator, d.value AS denominator "
            f"FROM {den} d LEFT JOIN {num} n ON {_join('n', 'd')} "
            f"WHERE {_scope_filter(m, 'd')}"
        )

    def _derived(self, m: MetricDefinition) -> str:
        inputs = {alias: self.table(mid) for alias, mid in m.inputs.items()}
        union = " UNION ".join(
            f"SELECT {_ROW} FROM {t} WHERE {_scope_filter(m)}" for t in inputs.values()
        )
        joins = " ".join(
            f"LEFT JOIN {t} i{n} ON {_join(f'i{n}', 'k')}" for n, t in enumerate(inputs.values())
        )
        values = ", ".join(f'i{n}.value AS "{alias}"' for n, alias in enumerate(inputs))
        keys = ", ".join(f"k.{k}" for k in _JOIN_KEYS)
        return (
            f"SELECT {_ROW}, CAST(({m.expr}) AS DOUBLE) AS value, "
            "CAST(NULL AS DOUBLE) AS numerator, CAST(NULL AS DOUBLE) AS denominator "
            f"FROM (SELECT {keys}, {values} FROM ({union}) k {joins})"
        )

    def _cumulative(self, m: MetricDefinition) -> str:
        today = self.table(m.base)
        earlier = self._earlier_days(m)
        dims = ", ".join(DIM_COLUMNS)
        return (
            f"SELECT grain, TIMESTAMP '{self.day} 00:00:00' AS bucket_start, scope, "
            f"{dims}, sum(value) AS value, CAST(NULL AS DOUBLE) AS numerator, "
            "CAST(NULL AS DOUBLE) AS denominator FROM ("
            f"SELECT {_ROW}, value FROM {today} WHERE {_scope_filter(m)} UNION ALL "
            f"SELECT {_ROW}, value FROM {earlier} WHERE {_scope_filter(m)}) "
            f"GROUP BY grain, scope, {dims}"
        )

    def _earlier_days(self, m: MetricDefinition) -> str:
        first = date.fromisoformat(self.day)
        days = [(first - timedelta(days=n)).isoformat() for n in range(1, m.window_days)]
        rows = (
            self.history([m.base], days) if self.history and days else METRIC_VALUES.empty_table()
        )
        name = f"h{len(self.tables)}"
        self.con.register(name, rows.select([*_JOIN_KEYS, "value"]))
        return name


def compute(
    metrics: MetricSet,
    ids: list[str],
    *,
    day: str,
    silver: dict[str, pa.Table],
    cmdb: pa.Table,
    versions: dict[str, str],
    start: datetime,
    end: datetime,
    history: History | None = None,
    grains: tuple[str, ...] | None = None,
) -> pa.Table:
    """Rows of ``METRIC_VALUES`` for metrics ``ids`` over ``[start, end)`` of ``day``.

    ``silver`` holds the silver tables of the day (see :func:`required_models`), ``cmdb``
    the current CMDB rows, ``versions`` the version each metric is computed at; ``grains``
    limits the grains computed (the live path computes hours only).
    """
    run = _Computation(metrics, start, end, history, day, grains)
    try:
        register_models(run.con, silver, cmdb, day, required_models(metrics, ids))
        run.con.execute(
            "CREATE TEMP TABLE entity_attributes AS SELECT DISTINCT entity_id, "
            "business, department, region, kind AS object_kind, type AS object_type "
            "FROM cmdb"
        )
        run.prepare(ids)
        parts = []
        for mid in metrics.order(ids):
            table = run.table(mid)
            if mid in ids:
                parts.append(
                    f"SELECT '{mid}' AS metric_id, '{versions[mid]}' AS metric_version, "
                    f"{_ROW}, value, numerator, denominator FROM {table}"
                )
        if not parts:
            return METRIC_VALUES.empty_table()
        out = run.con.sql(
            " UNION ALL ".join(parts)
            + " ORDER BY metric_id, grain, scope, bucket_start, "
            + ", ".join(DIM_COLUMNS)
        ).to_arrow_table()
        return out.cast(METRIC_VALUES)
    finally:
        run.con.close()
