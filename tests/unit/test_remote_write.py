"""Remote-write parsing: a hand-written encoder here, independent of the decoder under test."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import cramjam
import numpy as np
import polars as pl
import pytest

from opslake.ingest.parsers import prometheus, prometheus_text, remote_write
from opslake.ingest.parsers.series_cache import SeriesCache
from opslake.lake.landing import LandedBatch

RECEIVED = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _batch(fmt: str = "pb") -> LandedBatch:
    return LandedBatch(
        source="prometheus",
        batch_id="b-1",
        dt="2026-03-02",
        path="x",
        sha256="0" * 64,
        bytes=0,
        received_at=RECEIVED.isoformat(),
        fmt=fmt,
        connector="test",
    )


# -- a tiny protobuf encoder ------------------------------------------------------------
def _uvarint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values are sent as 10-byte two's complement
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _uvarint(field << 3 | wire)


def _len(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _uvarint(len(payload)) + payload


def _label(name: str, value: str) -> bytes:
    return _len(1, name.encode()) + _len(2, value.encode())


def _sample(value: float, ts_ms: int, *, reverse: bool = False) -> bytes:
    v = _key(1, 1) + struct.pack("<d", value)
    t = _key(2, 0) + _uvarint(ts_ms)
    return t + v if reverse else v + t


def _series(
    labels: dict[str, str], samples: list[tuple[float, int]], *, extra: bytes = b""
) -> bytes:
    body = b"".join(_len(1, _label(k, v)) for k, v in labels.items())
    body += b"".join(_len(2, _sample(v, t, reverse=i % 2 == 1)) for i, (v, t) in enumerate(samples))
    return body + extra


def write_request(*series: bytes, metadata: bytes = b"") -> bytes:
    """A snappy-compressed WriteRequest holding ``series`` (encoded TimeSeries messages)."""
    raw = b"".join(_len(1, s) for s in series) + metadata
    return bytes(cramjam.snappy.compress_raw(raw))


# -- tests ------------------------------------------------------------------------------
def test_round_trip_values_labels_and_timestamps() -> None:
    # Unknown fields everywhere: an exemplar-like field 3 in the series (length-delimited),
    # a 32-bit field, a varint field, and WriteRequest metadata (field 3).
    extra = _len(3, b"\x0a\x02hi") + _key(9, 5) + b"\x01\x02\x03\x04" + _key(10, 0) + _uvarint(7)
    body = write_request(
        _series(
            {"__name__": "node_load1", "job": "node", "instance": "10.0.0.1:9100"},
            [(0.5, 1764115200000), (1.25, 1764115260000)],
            extra=extra,
        ),
        _series(
            {"zz": 'quote " and \\ back\nslash', "__name__": "up"},
            [(float("inf"), -1000), (-2.0, 0)],
        ),
        _series({"__name__": "empty_series"}, []),
        metadata=_len(3, _key(1, 0) + _uvarint(1) + _len(2, b"node_load1")),
    )
    result = remote_write.parse(body, _batch())
    assert result.rejects == []
    assert result.table.schema == prometheus_text.BRONZE_SCHEMA
    rows = result.table.to_pylist()
    assert [r["metric"] for r in rows] == ["node_load1", "node_load1", "up", "up"]
    assert [r["value"] for r in rows] == [0.5, 1.25, float("inf"), -2.0]
    assert [int(r["ts"].timestamp() * 1000) for r in rows] == [
        1764115200000,
        1764115260000,
        -1000,
        0,
    ]
    assert rows[0]["label_set"] == prometheus_text.canonical(
        {"instance": "10.0.0.1:9100", "job": "node"}
    )
    # The same label set text as the exposition parser would produce for this series.
    assert rows[2]["label_set"] == '{zz="quote \\" and \\\\ back\\nslash"}'
    assert {r["batch_id"] for r in rows} == {"b-1"}
    assert {r["received_at"] for r in rows} == {RECEIVED}


def test_series_without_name_is_rejected_alone() -> None:
    body = write_request(
        _series({"__name__": "up", "job": "a"}, [(1.0, 1000)]),
        _series({"job": "nameless"}, [(2.0, 1000)]),
        _series({"__name__": "up", "job": "b"}, [(3.0, 1000)]),
    )
    result = remote_write.parse(body, _batch())
    assert result.table.column("value").to_pylist() == [1.0, 3.0]
    assert len(result.rejects) == 1
    reject = result.rejects[0]
    assert reject.line_no == 2 and "__name__" in reject.reason and "nameless" in reject.raw


def test_truncated_body_is_one_reject() -> None:
    raw = _len(1, _series({"__name__": "up"}, [(1.0, 1000), (2.0, 2000)]))
    for cut in (len(raw) - 1, len(raw) - 5, 3, 1):
        body = bytes(cramjam.snappy.compress_raw(raw[:cut]))
        result = remote_write.parse(body, _batch())
        assert result.table.num_rows == 0
        assert len(result.rejects) == 1 and result.rejects[0].line_no == 0
        assert "truncated" in result.rejects[0].reason
        with pytest.raises(remote_write.RemoteWriteError, match="truncated"):
            remote_write.decode(body)


def test_corrupt_snappy_is_one_reject() -> None:
    good = write_request(_series({"__name__": "up"}, [(1.0, 1000)]))
    for body in (b"\xff\xff\xff\xff", good[: len(good) // 2], b"not snappy at all, plain text"):
        result = remote_write.parse(body, _batch())
        assert result.table.num_rows == 0
        assert [r.line_no for r in result.rejects] == [0]
        assert "snappy" in result.rejects[0].reason or "protobuf" in result.rejects[0].reason


def test_uncompressed_protobuf_is_refused_with_snappy_reason() -> None:
    raw = _len(1, _series({"__name__": "up"}, [(1.0, 1000)]))
    with pytest.raises(remote_write.RemoteWriteError):
        remote_write.decode(raw)


def test_unterminated_group_is_corrupt() -> None:
    body = bytes(cramjam.snappy.compress_raw(_key(4, 3)))  # a group that never ends
    with pytest.raises(remote_write.RemoteWriteError, match="corrupt"):
        remote_write.decode(body)


def test_dispatch_by_format() -> None:
    pb = write_request(_series({"__name__": "up"}, [(1.0, 1000)]))
    assert prometheus.parse(pb, _batch("pb")).table.num_rows == 1
    text = b'up{job="a"} 1 1000\n'
    assert prometheus.parse(text, _batch("prom")).table.num_rows == 1
    unknown = prometheus.parse(text, _batch("csv"))
    assert unknown.table.num_rows == 0 and unknown.table.schema == prometheus_text.BRONZE_SCHEMA
    assert "'prom'" in unknown.rejects[0].reason and "'pb'" in unknown.rejects[0].reason


def test_text_and_remote_write_agree() -> None:
    labels = {"__name__": "node_load1", "instance": "h:9100", "job": "node"}
    pb = remote_write.parse(write_request(_series(labels, [(0.25, 1764115200000)])), _batch())
    text = prometheus_text.parse(
        b'node_load1{job="node",instance="h:9100"} 0.25 1764115200000\n', _batch("prom")
    )
    assert pb.table.equals(text.table)


def test_large_request_decodes_quickly() -> None:
    import time

    series = [
        _series(
            {"__name__": f"m{i % 50}", "instance": f"h{i}:9100", "job": "node"},
            [(float(j), 1764115200000 + j * 15000) for j in range(100)],
        )
        for i in range(2000)
    ]
    body = write_request(*series)
    start = time.perf_counter()
    result = remote_write.parse(body, _batch())
    elapsed = time.perf_counter() - start
    assert result.table.num_rows == 200_000 and not result.rejects
    assert elapsed < 5.0, f"200k samples took {elapsed:.2f}s"


# -- the regular (numpy) decoder --------------------------------------------------------
def _as_prometheus(labels: dict[str, str], samples: list[tuple[float, int]]) -> bytes:
    """A TimeSeries as Prometheus encodes it: labels, then samples (value, timestamp),
    proto3 zeros left out."""
    body = b"".join(_len(1, _label(k, v)) for k, v in labels.items())
    for value, ts_ms in samples:
        encoded = (
            _key(1, 1) + struct.pack("<d", value) if struct.pack("<d", value) != bytes(8) else b""
        )
        body += _len(2, encoded + (_key(2, 0) + _uvarint(ts_ms) if ts_ms else b""))
    return body


def _both_paths(body: bytes, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(remote_write, "REGULAR_MIN_SERIES", 0)
    fast = remote_write.parse(body, _batch())
    monkeypatch.setattr(remote_write, "_decode_regular", lambda buf, **_: None)
    return fast, remote_write.parse(body, _batch())


def test_prometheus_layout_is_decoded_regularly_and_matches_upb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = write_request(
        _as_prometheus(
            {"__name__": "up", "job": "node", "instance": "h:9100"}, [(1.0, 1764115200000)]
        ),
        _as_prometheus({"__name__": "zero", "é": "ü" * 100}, [(0.0, 1764115200000)]),
        _as_prometheus({"__name__": "neg", "job": "node"}, [(-0.0, -1000)]),
        _as_prometheus({"__name__": "at_epoch"}, [(2.5, 0)]),
        _as_prometheus({"__name__": "none"}, []),
        _as_prometheus(
            {"job": "node", "__name__": "many"},
            [(float(i % 3), 1764115200000 + i) for i in range(37)],
        ),
    )
    assert remote_write._decode_regular(remote_write._request_bytes(body)) is not None
    fast, upb = _both_paths(body, monkeypatch)
    assert fast.rejects == upb.rejects == []
    assert fast.table.num_rows == 41 and fast.table.equals(upb.table)
    bits = [np.asarray(t.column("value")).view(np.int64) for t in (fast.table, upb.table)]
    assert (bits[0] == bits[1]).all()  # -0.0 stays -0.0


@pytest.mark.parametrize(
    "series",
    [
        _series({"__name__": "up"}, [(1.0, 1000), (2.0, 2000)]),  # timestamp before value
        _series({"__name__": "up"}, [(1.0, 1000)], extra=_len(3, b"\x0a\x00")),  # an exemplar
        _as_prometheus({"__name__": "up", **{f"l{i}": "v" for i in range(70)}}, [(1.0, 1000)]),
        _as_prometheus({"__name__": "up"}, [(1.0, 2**62)]),  # out of range: rejected
        _as_prometheus({"job": "nameless"}, [(1.0, 1000)]),  # no name: rejected
    ],
)
def test_other_layouts_take_the_upb_path(series: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    body = write_request(_as_prometheus({"__name__": "ok"}, [(3.0, 1000)]), series)
    assert remote_write._decode_regular(remote_write._request_bytes(body)) is None
    fast, upb = _both_paths(body, monkeypatch)
    assert fast.rejects == upb.rejects and fast.table.equals(upb.table)


def test_known_label_blocks_are_found_by_the_sample_closing_each_series(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A series is looked up by the block before its last Sample; a wrong guess (a label
    value ending in what reads as a Sample's tag and size, a block seen before sent with two
    samples) only costs the label walk, never a wrong row."""
    monkeypatch.setattr(remote_write, "REGULAR_MIN_SERIES", 0)
    labels = [{"__name__": "m", "job": "node", "i": str(i)} for i in range(50)]
    # The last label's value ends in 0x12 0x10 and 5 more bytes: with a Sample of a value
    # and no timestamp (11 bytes) after it, the 16-byte guess lands inside the value.
    tricky = {"__name__": "t", "v": "ab\x12\x10xyzwv"}
    bodies = [
        write_request(
            *[_as_prometheus(lab, [(1.5, 1764115200000 + i)]) for i, lab in enumerate(labels)],
            _as_prometheus(tricky, [(2.5, 0)]),
        ),
        write_request(
            *[_as_prometheus(lab, [(1.5, 1764115200000), (0.0, 1764115201000)]) for lab in labels],
            _as_prometheus(tricky, [(2.5, 0)]),
        ),
    ]
    for body in bodies * 2:  # the second time, every block is cached
        assert remote_write._decode_regular(remote_write._request_bytes(body)) is not None
        fast, upb = _both_paths(body, monkeypatch)
        monkeypatch.undo()
        monkeypatch.setattr(remote_write, "REGULAR_MIN_SERIES", 0)
        assert fast.rejects == upb.rejects == [] and fast.table.equals(upb.table)
    assert fast.table.column("label_set").to_pylist()[-1] == '{v="ab\x12\x10xyzwv"}'


def test_label_not_utf8_in_the_prometheus_layout_refuses_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = (
        _len(1, _label("__name__", "up"))
        + _len(1, _len(1, b"job") + _len(2, b"\xff"))
        + _len(2, _key(1, 1) + struct.pack("<d", 1.0) + _key(2, 0) + _uvarint(1000))
    )
    body = write_request(_as_prometheus({"__name__": "ok"}, [(3.0, 1000)]), bad)
    for _ in range(2):  # the block is cached (without a metric) after the first time
        assert remote_write._decode_regular(remote_write._request_bytes(body)) is None
        fast, upb = _both_paths(body, monkeypatch)
        monkeypatch.undo()
        assert fast.rejects == upb.rejects and len(fast.rejects) == 1
        assert "UTF-8" in fast.rejects[0].reason and fast.table.num_rows == 0


@pytest.mark.parametrize(
    "values",
    [[0, 1, 127, 128, 300, 2**35, 1764115200000, 2**56 - 1], [5, -1000 % 2**64, 2**63, 2**64 - 1]],
)
def test_varints_of_an_exact_width_are_read_whole_or_refused(values: list[int]) -> None:
    encoded = [_uvarint(v) for v in values]
    data = b"".join(encoded)
    at = np.cumsum([0] + [len(e) for e in encoded[:-1]])
    width = np.array([len(e) for e in encoded])
    pad = np.frombuffer(data + bytes(16), np.uint8)
    assert remote_write._exact_varints(pad, at, width).tolist() == values
    for wrong in (width + 1, np.maximum(width - 1, 1)):
        if (wrong != width).any():
            assert remote_write._exact_varints(pad, at, wrong) is None
    assert remote_write._exact_varints(pad, at, np.full(len(at), -1)).tolist() == [0] * len(at)


def test_one_long_series_is_decoded_in_few_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(remote_write, "REGULAR_MIN_SERIES", 0)
    body = write_request(
        _as_prometheus(
            {"__name__": "up"}, [(float(i % 2), 1764115200000 + i) for i in range(200_000)]
        )
    )
    start = time.perf_counter()
    result = remote_write.parse(body, _batch())
    assert result.table.num_rows == 200_000 and not result.rejects
    assert time.perf_counter() - start < 5.0


def _label_blocks(*label_sets: dict[str, str]) -> pl.Series:
    return pl.Series(
        [b"".join(_len(1, _label(k, v)) for k, v in labels.items()) for labels in label_sets],
        dtype=pl.Binary,
    )


@pytest.mark.parametrize("hashing", ["polars", "all collide", "few slots"])
def test_label_set_cache_finds_each_block_even_when_hashes_collide(
    hashing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows come from comparing the blocks themselves: equal hashes only cost probes."""
    cache = SeriesCache(
        remote_write._label_sets,
        pl.Binary,
        {"metric": pl.String, "label_set": pl.String},
        limit=1500,
    )
    if hashing == "all collide":
        monkeypatch.setattr(cache, "_hash", lambda keys: np.full(len(keys), 7, np.uint64))
    elif hashing == "few slots":  # every hash in the table's last slots: probes wrap around
        monkeypatch.setattr(
            cache,
            "_hash",
            lambda keys: np.array([2**64 - 1 - len(key) % 3 for key in keys.to_list()], np.uint64),
        )
    sets = [{"__name__": f"m{i % 7}", "job": "node", "instance": f"h{i}"} for i in range(1200)]
    expected = [
        (s["__name__"], remote_write.canonical({k: v for k, v in s.items() if k != "__name__"}))
        for s in sets
    ]

    def answers(rows: np.ndarray, values: pl.DataFrame) -> list[tuple[str, str]]:
        return list(values[rows].iter_rows())

    for chunk in (range(10), range(5, 700), range(1200), range(1199, -1, -3)):
        keys = _label_blocks(*(sets[i] for i in chunk))
        assert answers(*cache.rows(keys)) == [expected[i] for i in chunk]
    assert answers(*cache.find(_label_blocks(sets[42], sets[7]))) == [expected[42], expected[7]]
    # find() only looks: a block never seen is -1 and stays out.
    assert (cache.find(_label_blocks({"__name__": "new"}))[0] == -1).all()
    # Past its limit the cache starts over, and still answers right; the frame a lookup
    # returned before stays valid for its rows.
    rows, before = cache.rows(_label_blocks(sets[3]))
    more = [{"__name__": "late", "n": str(i)} for i in range(600)]
    got = answers(*cache.rows(_label_blocks(*more, sets[3])))
    assert len(cache) <= 1500
    assert [m for m, _ in got] == ["late"] * 600 + ["m3"] and got[-1] == expected[3]
    assert answers(rows, before) == [expected[3]]
    # A block without __name__ (or not UTF-8) has no metric: the upb path rejects it.
    _, values = cache.rows(_label_blocks({"job": "nameless"}))
    assert values.filter(values["metric"].is_null()).height == 1


@pytest.mark.parametrize(
    "body",
    [
        write_request(
            *[
                _as_prometheus({"__name__": f"m{i}", "job": "node"}, [(1.0, 1000 + i)])
                for i in range(100)
            ]
        ),  # the regular path
        write_request(
            _as_prometheus({"__name__": "ok"}, [(3.0, 1000)]),
            _as_prometheus({"job": "nameless"}, [(1.0, 1000)]),
        ),  # one reject
        b"not snappy at all",
    ],
)
def test_check_rejects_what_parse_rejects_without_building_rows(body: bytes) -> None:
    parsed, checked = remote_write.parse(body, _batch()), remote_write.check(body, _batch())
    assert checked.rejects == parsed.rejects
    assert checked.table.num_rows == 0 and checked.table.schema == parsed.table.schema
