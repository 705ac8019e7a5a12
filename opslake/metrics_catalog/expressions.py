"""Metric expressions: SQL scalar expressions checked with DuckDB's own parser and binder.

An expression may use the columns of its model (or, in a derived metric, its input aliases),
constants, operators, ``CASE``, casts and scalar functions; subqueries, table functions and
anything that reads outside the row are refused, so a definition can never smuggle a query.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb

from opslake.metrics_catalog.definition import Measure

#: Expression node classes DuckDB's parser may produce for an allowed expression.
_ALLOWED = {
    "COLUMN_REF",
    "CONSTANT",
    "FUNCTION",
    "COMPARISON",
    "CONJUNCTION",
    "OPERATOR",
    "CASE",
    "CAST",
    "BETWEEN",
    "STAR",
}
#: Scalar functions that reach outside the row (files, settings, the environment).
_FORBIDDEN_FUNCTIONS = {
    "getenv",
    "current_setting",
    "read_text",
    "read_blob",
    "query",
    "query_table",
    "nextval",
    "currval",
    "setseed",
    "random",
}

#: SQL of each aggregation over ``{e}`` (the expression) and ``{t}`` (the time column).
AGGREGATE_SQL = {
    "sum": "sum({e})",
    "count": "count({e})",
    "count_distinct": "count(DISTINCT {e})",
    "avg": "avg({e})",
    "min": "min({e})",
    "max": "max({e})",
    "p95": "quantile_cont({e}, 0.95)",
    "last": "arg_max({e}, {t})",
}


class ExpressionError(ValueError):
    """An expression that does not parse, or uses something not allowed."""


@dataclass(frozen=True)
class Parsed:
    """The columns an expression reads, from DuckDB's parse tree."""

    columns: frozenset[str]


def _nodes(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        if "class" in node:
            yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


_parsers = threading.local()


def _parser() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for parsing, one per thread and process: opening one costs ~35 ms,
    which made validating the catalog (one parse per expression) take seconds."""
    con = getattr(_parsers, "con", None)
    if con is None or _parsers.pid != os.getpid():
        con = _parsers.con = duckdb.connect()
        _parsers.pid = os.getpid()
    return con


def parse(expr: str) -> Parsed:
    """Parse a scalar expression; raises :class:`ExpressionError` saying what is wrong."""
    if ";" in expr:
        raise ExpressionError("an expression is one SQL scalar expression, without ';'")
    tree = json.loads(
        _parser().execute("SELECT json_serialize_sql($q)", {"q": f"SELECT {expr}"}).fetchone()[0]
    )
    if tree.get("error"):
        raise ExpressionError(tree.get("error_message", "does not parse"))
    statement = tree["statements"][0]["node"]
    if (
        statement.get("from_table", {}).get("type") not in (None, "EMPTY")
        or len(statement.get("select_list", [])) != 1
        or statement.get("where_clause")
    ):
        raise ExpressionError("write one scalar expression, not a query")
    columns: set[str] = set()
    for node in _nodes(statement["select_list"]):
        kind = node["class"]
        if kind not in _ALLOWED:
            raise ExpressionError(
                f"{kind.lower()} is not allowed in a metric expression; use "
                "columns, constants, operators, CASE and scalar functions"
            )
        if kind == "COLUMN_REF":
            columns.add(node["column_names"][-1])
        elif kind == "FUNCTION" and node["function_name"].lower() in _FORBIDDEN_FUNCTIONS:
            raise ExpressionError(
                f"function {node['function_name']}() is not allowed in a metric expression"
            )
    return Parsed(frozenset(columns))


def aggregate_sql(measure: Measure, time_column: str) -> str:
    """The SQL aggregate of a measure."""
    expr = "*" if measure.agg == "count" and measure.expr.strip() == "*" else f"({measure.expr})"
    return AGGREGATE_SQL[measure.agg].format(e=expr, t=time_column)


def bind(con: duckdb.DuckDBPyConnection, select: str, source: str, where: str | None) -> str:
    """Bind ``SELECT select FROM source WHERE where``; returns the result type or raises."""
    sql = f'SELECT {select} AS v FROM "{source}"' + (f" WHERE ({where})" if where else "")
    try:
        return con.execute(f"DESCRIBE {sql}").fetchall()[0][1]
    except duckdb.Error as exc:
        message = str(exc).split("\n")[0]
        raise ExpressionError(message) from None
