"""Prometheus exposition parsing and the silver metric conformer."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from opslake.ingest.parsers import prometheus_text
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import METRIC_POINTS
from opslake.transforms import metrics

BATCH = LandedBatch("prometheus", "b-01", "2026-03-02", "p", "s", 0,
                    "2026-03-02T01:00:00+00:00", "prom", "test")

EXPOSITION = b"""\
# HELP node_cpu_utilisation_ratio CPU busy ratio.
# TYPE node_cpu_utilisation_ratio gauge
node_cpu_utilisation_ratio{job="node",entity_id="vm-0001",instance="10.0.0.1:9100"} 0.25 1772409600000
node_cpu_utilisation_ratio{entity_id="vm-0001",instance="10.0.0.1:9100",job="node"} 0.5 1772409660000

http_requests_total{path="/a b",code="200"} 1027 1772409600000
up 1
broken{entity_id="vm-1" 1 2
node_load1{entity_id="vm-2"} high 1772409600000
node_load1{entity_id="vm-2"} 1 17724096x
dup{a="1",a="2"} 1 1772409600000
weird{a="x\\"y\\\\z"} NaN 1772409600000
"""


def test_parses_samples_and_quarantines_bad_lines_with_reasons() -> None:
    result = prometheus_text.parse(EXPOSITION, BATCH)
    rows = result.table.to_pylist()
    assert result.table.schema == prometheus_text.BRONZE_SCHEMA
    assert [r["metric"] for r in rows] == ["node_cpu_utilisation_ratio"] * 2 + [
        "http_requests_total", "up", "weird"]
    # Label order does not change the series identity.
    assert rows[0]["label_set"] == rows[1]["label_set"] == \
        '{entity_id="vm-0001",instance="10.0.0.1:9100",job="node"}'
    assert rows[2]["label_set"] == '{code="200",path="/a b"}'
    assert rows[0]["ts"] == datetime(2026, 3, 2, tzinfo=UTC)
    assert rows[3]["ts"] == datetime(2026, 3, 2, 1, tzinfo=UTC), "no timestamp: batch time"
    assert rows[4]["label_set"] == '{a="x\\"y\\\\z"}'
    reasons = {r.line_no: r.reason for r in result.rejects}
    assert sorted(reasons) == [8, 9, 10, 11]
    assert reasons[8].startswith("not a sample line")
    assert reasons[9] == "value is not a number: high"
    assert reasons[10].startswith("timestamp is not an integer")
    assert "duplicate label 'a'" in reasons[11]
    assert result.rejects[0].raw == 'broken{entity_id="vm-1" 1 2'


def test_undecodable_batch_is_one_reject() -> None:
    result = prometheus_text.parse(b"\xff\xfe", BATCH)
    assert result.table.num_rows == 0 and result.rejects[0].line_no == 0


@pytest.mark.parametrize("text", ['{a="1"', '{a=1}', '{a="1" b="2"}', '{1a="x"}'])
def test_label_set_errors(text: str) -> None:
    with pytest.raises(ValueError):
        prometheus_text.parse_label_set(text)


def _bronze(*batches: tuple[str, bytes]) -> pa.Table:
    tables = []
    for batch_id, body in batches:
        batch = LandedBatch(**{**BATCH.__dict__, "batch_id": batch_id})
        tables.append(prometheus_text.parse(body, batch).table)
    table = pa.concat_tables(tables)
    for name in ("metric", "label_set", "batch_id"):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 table.column(name).dictionary_encode())
    return table


def test_silver_dedups_sorts_and_resolves_entities() -> None:
    bronze = _bronze(
        ("b-2", b'm{entity_id="vm-2"} 2 1772409660000\nm{entity_id="vm-1"} 1 1772409600000\n'),
        ("b-1", (b'm{entity_id="vm-2"} 9 1772409660000\n'
                b'm{instance="10.0.0.9:9100"} 5 1772409600000\n'
                b'm{instance="10.7.7.7:9100"} 6 1772409600000\n')),
    )

    def resolve(instances: pa.Array) -> pa.Array:
        return pa.array([{"10.0.0.9:9100": "host-9"}.get(i) for i in instances.to_pylist()],
                        pa.string())

    out = pa.concat_tables(metrics.to_silver(bronze, resolve))
    assert out.schema == METRIC_POINTS
    rows = [(r["entity_id"], r["value"], r["batch_id"]) for r in out.to_pylist()]
    # vm-2's point arrived twice: the first delivery (batch b-1 sorts first) wins.
    assert rows == [("host-9", 5.0, "b-1"), ("vm-1", 1.0, "b-2"), ("vm-2", 9.0, "b-1"),
                    (None, 6.0, "b-1")]
    assert out.column("labels").to_pylist()[0] == [("instance", "10.0.0.9:9100")]
    again = pa.concat_tables(metrics.to_silver(bronze, resolve))
    assert again.equals(out)


def test_crlf_lines_and_odd_control_bytes_keep_their_line_numbers() -> None:
    crlf = prometheus_text.parse(b"a 1 1772409600000\r\n\r\nb x 1772409600000\r\n", BATCH)
    assert [r["metric"] for r in crlf.table.to_pylist()] == ["a"]
    assert [r.line_no for r in crlf.rejects] == [3]
    # A unit-separator byte cannot be split on as a field: the slower path takes over.
    odd = prometheus_text.parse(b'a{l="x\x1fy"} 1 1772409600000\nb 2 1772409600000\n', BATCH)
    assert [r["metric"] for r in odd.table.to_pylist()] == ["a", "b"]
