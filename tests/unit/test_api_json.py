"""The read API's JSON bodies, written by polars from Arrow columns, hold exactly the values
``json.dumps`` writes of the rows as Python objects (as the API answered before)."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest

from opslake.api.data import _json_rows

T = datetime(2026, 3, 2, 1, tzinfo=UTC)
COLUMNS = {
    "floats": pa.array([0.1, 1e-05, 1e16, 1e22, -0.0, 2.0, 5e-324, 1.7976931348623157e308, None]),
    "float32": pa.array([0.1, 1.5, None], pa.float32()),
    "ints": pa.array([2**62, -(2**63), 0, None]),
    "uint8": pa.array([1, 255, None], pa.uint8()),
    "bools": pa.array([True, False, None]),
    "texts": pa.array(['a"b\\c', "\n\t\x01\x1f\x7f", "互联网医院\u2028", "</script>", "", None]),
    "large_texts": pa.array(["x", None], pa.large_string()),
    "categories": pa.array(["x", "y", "x", None]).dictionary_encode(),
    "days": pa.array([date(2026, 3, 2), date(1, 1, 1), None]),
    "utc": pa.array(
        [T, T.replace(microsecond=5), T.replace(microsecond=120000), None],
        pa.timestamp("us", "UTC"),
    ),
    "etc_utc": pa.array([T, T.replace(microsecond=999999)], pa.timestamp("us", "Etc/UTC")),
    "shanghai": pa.array([T, T.replace(microsecond=1)], pa.timestamp("us", "Asia/Shanghai")),
    "naive": pa.array(
        [datetime(2026, 3, 2, 1), datetime(2026, 3, 2, 1, 0, 0, 120000)], pa.timestamp("us")
    ),
    "millis": pa.array([T.replace(microsecond=123000), T], pa.timestamp("ms", "UTC")),
    "seconds": pa.array([T, None], pa.timestamp("s", "UTC")),
    "text_lists": pa.array([["1h", "1d"], [], None, [None]]),
    "nulls": pa.nulls(2),
}
#: Columns polars would write otherwise: the rows go through Python objects as before.
OTHERWISE = {
    "nan": pa.array([float("nan"), 1.0]),
    "infinities": pa.array([float("inf"), float("-inf"), None]),
    "nanoseconds": pa.array([T.replace(microsecond=123000)], pa.timestamp("ns", "UTC")),
    "float_lists": pa.array([[0.1, None], [float("nan")]]),
    "maps": pa.array([[("team", "dba")], []], pa.map_(pa.string(), pa.string())),
    "structs": pa.array([{"a": 1, "b": "x"}, None]),
}


def _before(table: pa.Table) -> bytes:
    """What the API answered before: the rows as Python objects through json.dumps."""
    rows = table.to_pylist()
    return json.dumps(
        {"count": len(rows), "rows": rows},
        ensure_ascii=False,
        default=lambda value: value.isoformat(),
    ).encode()


def _same(a: object, b: object) -> bool:
    """Equal values of the same JSON types (1.0 is not 1), NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _table(name: str, column: pa.Array) -> pa.Table:
    return pa.table({name: column, "n": pa.array(range(len(column)))})


@pytest.mark.parametrize("name", [*COLUMNS, *OTHERWISE])
def test_each_type_answers_the_values_python_rows_did(name: str) -> None:
    table = _table(name, {**COLUMNS, **OTHERWISE}[name])
    body = _json_rows(table)
    assert _same(json.loads(body), json.loads(_before(table)))
    assert body.startswith(b'{"count": ')


def test_a_whole_answer_keeps_columns_rows_and_their_order() -> None:
    rows = 500
    table = pa.table(
        {
            name: pa.chunked_array([column.take([i % len(column) for i in range(rows)])])
            for name, column in COLUMNS.items()
        }
    )
    answer = json.loads(_json_rows(table))
    assert answer["count"] == rows and list(answer["rows"][0]) == list(COLUMNS)
    assert _same(answer, json.loads(_before(table)))
    assert _same(json.loads(_json_rows(table.slice(0, 0))), {"count": 0, "rows": []})


def test_what_json_cannot_hold_is_refused_as_before() -> None:
    for column in (
        pa.array([b"\x00"]),
        pa.array([timedelta(seconds=3)]),
        pa.array([Decimal("1.25")]),
    ):
        with pytest.raises(TypeError, match="is not JSON"):
            _json_rows(_table("x", column))
