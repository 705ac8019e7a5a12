"""Prometheus remote write (1.0: snappy block format + protobuf ``WriteRequest``) → bronze samples.

The protobuf wire format is decoded by hand (no protobuf dependency): ``WriteRequest``
field 1 is a repeated ``TimeSeries`` whose field 1 is a repeated ``Label`` (1: name,
2: value) and field 2 a repeated ``Sample`` (1: double value, 2: int64 timestamp in ms).
Everything else (metadata, exemplars, native histograms) is skipped by its wire type.
Output rows have exactly ``prometheus_text.BRONZE_SCHEMA``, so remote-write batches feed
the same bronze table and silver ``metric_points`` as scraped text.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC

import cramjam
import numpy as np
import pyarrow as pa

from opslake.errors import InputError
from opslake.ingest.parsers import ParseResult, Reject
from opslake.ingest.parsers.prometheus_text import BRONZE_SCHEMA, canonical
from opslake.lake.landing import LandedBatch

#: Largest decompressed request accepted; snappy expands up to ~21x, so this bounds memory.
MAX_DECODED_BYTES = 512 * 2**20
# Timestamps become microseconds in int64, so milliseconds beyond this would overflow.
_MAX_ABS_MS = (2**63 - 1) // 1000

_DOUBLE = struct.Struct("<d")
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# A Sample encoded by Prometheus: tag 0x09, 8 value bytes, tag 0x10, varint timestamp.
_TAG_VALUE, _TAG_TS = 0x09, 0x10


class RemoteWriteError(InputError):
    """A remote-write body that cannot be decompressed or decoded as a ``WriteRequest``."""


@dataclass(frozen=True)
class Series:
    """One decoded ``TimeSeries``: its labels in wire order, sample values and timestamps."""

    labels: list[tuple[str, str]]
    values: list[float]
    timestamps_ms: list[int]


def decompress(data: bytes) -> bytes:
    """The protobuf bytes of a snappy (block format) body; raises ``RemoteWriteError``."""
    try:
        size = cramjam.snappy.decompress_raw_len(data)
    except cramjam.DecompressionError as exc:
        raise RemoteWriteError(f"body is not snappy block-format data ({exc})") from None
    if size > MAX_DECODED_BYTES:
        raise RemoteWriteError(f"body decompresses to {size:,} bytes, more than the "
                               f"{MAX_DECODED_BYTES:,} accepted; send smaller batches")
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as exc:
        raise RemoteWriteError(f"body is not snappy block-format data ({exc})") from None


def decode(data: bytes) -> list[Series]:
    """Decode a whole (compressed) ``WriteRequest``; raises ``RemoteWriteError`` when corrupt."""
    buf = decompress(data)
    series: list[Series] = []
    pos, end = 0, len(buf)
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if field == 1 and wire == _LEN:
            length, pos = _varint(buf, pos, end)
            stop = _bounded(pos, length, end)
            series.append(_series(buf, pos, stop))
            pos = stop
        else:
            pos = _skip(buf, pos, end, wire)
    return series


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one landed remote-write body; a series without ``__name__`` is rejected alone."""
    try:
        decoded = decode(data)
    except RemoteWriteError as exc:
        return ParseResult(BRONZE_SCHEMA.empty_table(), [Reject(0, repr(data[:200]), str(exc))])
    metrics: list[str] = []
    label_sets: list[str] = []
    counts: list[int] = []
    values: list[float] = []
    stamps: list[int] = []
    rejects: list[Reject] = []
    for index, s in enumerate(decoded, start=1):
        labels = dict(s.labels)
        name = labels.pop("__name__", "")
        if not name:
            rejects.append(Reject(index, canonical(labels),
                                  "series has no __name__ label (metric name)"))
            continue
        if s.timestamps_ms and max(abs(min(s.timestamps_ms)),
                                   abs(max(s.timestamps_ms))) > _MAX_ABS_MS:
            rejects.append(Reject(index, canonical({"__name__": name, **labels}),
                                  "sample timestamp is out of range (milliseconds since epoch)"))
            continue
        metrics.append(name)
        label_sets.append(canonical(labels))
        counts.append(len(s.values))
        values.extend(s.values)
        stamps.extend(s.timestamps_ms)
    # Per-series strings are repeated to per-sample rows by one take, not per sample in Python.
    rows = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    received = batch.received.astimezone(UTC)
    n = len(values)
    table = pa.table(
        {
            "ts": pa.array(np.asarray(stamps, dtype=np.int64) * 1000, pa.int64()).cast(
                BRONZE_SCHEMA.field("ts").type),
            "metric": pa.array(metrics, pa.string()).take(rows),
            "label_set": pa.array(label_sets, pa.string()).take(rows),
            "value": pa.array(values, pa.float64()),
            "batch_id": pa.array([batch.batch_id], pa.string()).take(np.zeros(n, np.int64)),
            "received_at": pa.array([received], BRONZE_SCHEMA.field("received_at").type).take(
                np.zeros(n, np.int64)),
        },
        schema=BRONZE_SCHEMA,
    )
    return ParseResult(table, rejects)


# -- protobuf wire format -------------------------------------------------------------------
def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """An unsigned varint at ``pos``; returns (value, next position)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise RemoteWriteError(f"protobuf is truncated inside a varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise RemoteWriteError(f"protobuf varint longer than 10 bytes at byte {pos}")


def _tag(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    key, pos = _varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if field == 0:
        raise RemoteWriteError(f"protobuf field number 0 at byte {pos}: not a WriteRequest")
    return field, wire, pos


def _bounded(pos: int, length: int, end: int) -> int:
    stop = pos + length
    if stop > end:
        raise RemoteWriteError(f"protobuf is truncated: a field of {length:,} bytes at byte "
                               f"{pos} runs past the end ({end:,} bytes)")
    return stop


def _skip(buf: bytes, pos: int, end: int, wire: int) -> int:
    """Position after a field of an unknown number (``pos`` is right after its tag)."""
    if wire == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire == _I64:
        return _bounded(pos, 8, end)
    if wire == _LEN:
        length, pos = _varint(buf, pos, end)
        return _bounded(pos, length, end)
    if wire == _I32:
        return _bounded(pos, 4, end)
    raise RemoteWriteError(f"protobuf wire type {wire} at byte {pos} is not supported "
                           "(groups are not used by remote write)")


def _string(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    length, pos = _varint(buf, pos, end)
    stop = _bounded(pos, length, end)
    try:
        return buf[pos:stop].decode("utf-8"), stop
    except UnicodeDecodeError:
        raise RemoteWriteError(f"label text at byte {pos} is not UTF-8") from None


def _label(buf: bytes, pos: int, end: int) -> tuple[str, str]:
    name = value = ""
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if field == 1 and wire == _LEN:
            name, pos = _string(buf, pos, end)
        elif field == 2 and wire == _LEN:
            value, pos = _string(buf, pos, end)
        else:
            pos = _skip(buf, pos, end, wire)
    return name, value


def _series(buf: bytes, pos: int, end: int) -> Series:
    labels: list[tuple[str, str]] = []
    values: list[float] = []
    stamps: list[int] = []
    unpack = _DOUBLE.unpack_from
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if wire != _LEN or field not in (1, 2):
            pos = _skip(buf, pos, end, wire)
            continue
        length, pos = _varint(buf, pos, end)
        stop = _bounded(pos, length, end)
        if field == 1:
            labels.append(_label(buf, pos, stop))
        else:
            # Fast path for the layout Prometheus writes (value, then timestamp, nothing
            # else); any other layout is decoded field by field.
            ts, after = -1, -1
            if stop - pos >= 11 and buf[pos] == _TAG_VALUE and buf[pos + 9] == _TAG_TS:
                ts, after = _varint(buf, pos + 10, stop)
            if after == stop:
                values.append(unpack(buf, pos + 1)[0])
                stamps.append(ts - (1 << 64) if ts >= 1 << 63 else ts)
            else:
                value, ts = _sample(buf, pos, stop)
                values.append(value)
                stamps.append(ts)
        pos = stop
    return Series(labels, values, stamps)


def _sample(buf: bytes, pos: int, end: int) -> tuple[float, int]:
    """A ``Sample`` in any field order; missing fields take proto3 defaults (0)."""
    value, ts = 0.0, 0
    while pos < end:
        field, wire, pos = _tag(buf, pos, end)
        if field == 1 and wire == _I64:
            stop = _bounded(pos, 8, end)
            value = _DOUBLE.unpack_from(buf, pos)[0]
            pos = stop
        elif field == 2 and wire == _VARINT:
            ts, pos = _varint(buf, pos, end)
            ts = ts - (1 << 64) if ts >= 1 << 63 else ts  # int64 is two's complement
        else:
            pos = _skip(buf, pos, end, wire)
    return value, ts
