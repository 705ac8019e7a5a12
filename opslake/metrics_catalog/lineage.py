"""Lineage of a metric: metric → input metrics → silver columns → bronze → landing (S6.2f).

Column-level hops come from DuckDB's parse of the measure and filter (and the CMDB columns
behind each dimension); table-level hops below silver come from the Dagster asset graph,
which the caller passes in as ``upstream`` (asset key → the keys it depends on), so the
lineage shown is the one the pipeline actually runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from opslake.metrics_catalog.compute import SCOPE_COLUMNS
from opslake.metrics_catalog.expressions import parse
from opslake.metrics_catalog.loader import MetricSet
from opslake.metrics_catalog.models import BUCKET_COLUMNS, MODELS

LINEAGE_SCHEMA = pa.schema(
    [
        ("metric_id", pa.string()),
        ("depth", pa.int32()),
        ("node", pa.string()),
        ("column", pa.string()),
        ("upstream", pa.string()),
        ("upstream_column", pa.string()),
        ("relation", pa.string()),
    ]
)


@dataclass(frozen=True)
class Edge:
    """``node`` (column) is computed from / reads ``upstream`` (column)."""

    depth: int
    node: str
    column: str | None
    upstream: str
    upstream_column: str | None
    relation: str


def metric_node(metric_id: str) -> str:
    """The lineage node name of a metric."""
    return f"metric:{metric_id}"


def _model_columns(metrics: MetricSet, metric_id: str) -> list[tuple[str, str, str]]:
    """(model column, silver table, silver column) a simple metric reads."""
    m = metrics.metrics[metric_id]
    model = MODELS[m.model]
    used: set[str] = {model.time_column}
    for text in (m.measure.expr if m.measure else None, m.filter):
        if text and text.strip() != "*":
            used |= parse(text).columns - set(BUCKET_COLUMNS)
    for dim in m.dimensions:
        used |= set(SCOPE_COLUMNS[dim])
    return sorted(
        {(column, table, source) for column in used for table, source in model.lineage(column)}
    )


def lineage(metrics: MetricSet, metric_id: str, upstream: Mapping[str, list[str]]) -> list[Edge]:
    """Every hop from a metric down to the landing sources, breadth first."""
    edges: list[Edge] = []
    seen_tables: set[str] = set()
    frontier: list[tuple[int, str]] = [(0, metric_id)]
    tables: list[tuple[int, str]] = []
    while frontier:
        depth, mid = frontier.pop(0)
        m = metrics.metrics[mid]
        if m.type != "simple":
            for up in m.upstream_metrics():
                edges.append(
                    Edge(depth, metric_node(mid), None, metric_node(up), None, f"{m.type}_input")
                )
                frontier.append((depth + 1, up))
            continue
        for column, table, source in _model_columns(metrics, mid):
            key = f"silver/{table}"
            edges.append(
                Edge(
                    depth,
                    metric_node(mid),
                    None if column == source else column,
                    key,
                    source,
                    "reads",
                )
            )
            if key not in seen_tables:
                seen_tables.add(key)
                tables.append((depth + 1, key))
    while tables:
        depth, key = tables.pop(0)
        for up in upstream.get(key, []):
            edges.append(Edge(depth, key, None, up, None, "built_from"))
            if up not in seen_tables:
                seen_tables.add(up)
                tables.append((depth + 1, up))
    unique: dict[tuple, Edge] = {}
    for e in edges:
        unique.setdefault((e.node, e.column, e.upstream, e.upstream_column, e.relation), e)
    return list(unique.values())


def sources(edges: list[Edge]) -> list[str]:
    """The landing sources a lineage reaches."""
    return sorted({e.upstream for e in edges if e.upstream.startswith("landing/")})


def lineage_table(metrics: MetricSet, upstream: Mapping[str, list[str]]) -> pa.Table:
    """The lineage of every metric as rows of ``LINEAGE_SCHEMA``."""
    rows = [
        {
            "metric_id": mid,
            "depth": e.depth,
            "node": e.node,
            "column": e.column,
            "upstream": e.upstream,
            "upstream_column": e.upstream_column,
            "relation": e.relation,
        }
        for mid in sorted(metrics.metrics)
        for e in lineage(metrics, mid, upstream)
    ]
    return pa.Table.from_pylist(rows, schema=LINEAGE_SCHEMA)
