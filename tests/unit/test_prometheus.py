"""Prometheus exposition parsing (the silver metric conformer: tests/unit/test_conform.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from opslake.ingest.parsers import prometheus_text
from opslake.ingest.parsers.series_cache import SeriesCache
from opslake.lake.landing import LandedBatch

BATCH = LandedBatch(
    "prometheus", "b-01", "2026-03-02", "p", "s", 0, "2026-03-02T01:00:00+00:00", "prom", "test"
)

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
        "http_requests_total",
        "up",
        "weird",
    ]
    # Label order does not change the series identity.
    assert (
        rows[0]["label_set"]
        == rows[1]["label_set"]
        == '{entity_id="vm-0001",instance="10.0.0.1:9100",job="node"}'
    )
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


@pytest.mark.parametrize("text", ['{a="1"', "{a=1}", '{a="1" b="2"}', '{1a="x"}'])
def test_label_set_errors(text: str) -> None:
    with pytest.raises(ValueError):
        prometheus_text.parse_label_set(text)


def test_crlf_lines_and_odd_control_bytes_keep_their_line_numbers() -> None:
    crlf = prometheus_text.parse(b"a 1 1772409600000\r\n\r\nb x 1772409600000\r\n", BATCH)
    assert [r["metric"] for r in crlf.table.to_pylist()] == ["a"]
    assert [r.line_no for r in crlf.rejects] == [3]
    # A unit-separator byte cannot be split on as a field: the slower path takes over.
    odd = prometheus_text.parse(b'a{l="x\x1fy"} 1 1772409600000\nb 2 1772409600000\n', BATCH)
    assert [r["metric"] for r in odd.table.to_pylist()] == ["a", "b"]


def test_empty_batch_has_no_rows() -> None:
    for body in (b"", b"\n", b"# HELP x y\n"):
        result = prometheus_text.parse(body, BATCH)
        assert result.table.num_rows == 0 and result.rejects == []
        assert result.table.schema == prometheus_text.BRONZE_SCHEMA


def test_series_seen_before_keep_their_identity() -> None:
    first = prometheus_text.parse(b'm{b="2",a="1"} 1 1772409600000\n', BATCH)
    again = prometheus_text.parse(
        b'm{a="1",b="2"} 2 1772409600000\nm{b="2",a="1"} 3 1\nm{a="1",a="1"} 4 1\n', BATCH
    )
    assert first.table.column("label_set").to_pylist() == ['{a="1",b="2"}']
    assert again.table.column("label_set").to_pylist() == ['{a="1",b="2"}'] * 2
    assert [r.line_no for r in again.rejects] == [3]


def test_series_cache_starting_over_keeps_the_whole_lookup() -> None:
    """Past its limit the cache starts over; keys of the lookup it had found before must
    still get their own values, not another key's (rows once came back as -1)."""
    import polars as pl

    cache = SeriesCache(
        lambda keys: [(k.upper(),) for k in keys], pl.String, {"value": pl.String}, limit=3
    )
    assert cache.lookup(pl.Series(["a", "b"])).get_column("value").to_list() == ["A", "B"]
    got = cache.lookup(pl.Series(["a", "c", "d", "a"])).get_column("value").to_list()
    assert got == ["A", "C", "D", "A"]
    assert cache.lookup(pl.Series(["b", "e"])).get_column("value").to_list() == ["B", "E"]


def test_a_batch_that_is_not_utf8_is_refused_whole_and_utf8_labels_parse() -> None:
    latin1 = 'node_load1{site="café"} 1 1772409600000\n'.encode("latin-1")
    result = prometheus_text.parse(latin1, BATCH)
    assert result.table.num_rows == 0
    [reject] = result.rejects
    assert "batch is not UTF-8 text" in reject.reason
    parsed = prometheus_text.parse(latin1.decode("latin-1").encode(), BATCH)
    assert parsed.rejects == []
    assert parsed.table.column("label_set").to_pylist() == ['{site="café"}']
