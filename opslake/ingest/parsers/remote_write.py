"""Prometheus remote write (1.0: snappy block format + protobuf ``WriteRequest``) → bronze samples.

``WriteRequest`` is decoded by protobuf's compiled parser (upb) from a descriptor built here
with only the fields OpsLake reads: ``WriteRequest`` field 1 is a repeated ``TimeSeries``
whose field 1 is a repeated ``Label`` (1: name, 2: value) and field 2 a repeated ``Sample``
(1: double value, 2: int64 timestamp in ms). Everything else (metadata, exemplars, native
histograms) is skipped by upb in C, so a body of unknown fields costs no Python work.
Output rows have exactly ``prometheus_text.BRONZE_SCHEMA``, so remote-write batches feed
the same bronze table and silver ``metric_points`` as scraped text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

import cramjam
import numpy as np
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from opslake.errors import InputError
from opslake.ingest.parsers import ParseResult, Reject
from opslake.ingest.parsers.prometheus_text import BRONZE_SCHEMA, canonical
from opslake.lake.landing import LandedBatch

#: Largest decompressed request bronze decodes: bounds its memory (the push endpoint refuses
#: far less, ``OPSLAKE_MAX_DECODED_BYTES``).
MAX_DECODED_BYTES = 512 * 2**20
#: Most series, labels, samples, label names and values one request may hold. Each costs a
#: Python object, so this bounds the work a small body can cause (an empty Sample is 2
#: bytes). Prometheus sends max_samples_per_send (default 2,000) samples, each its own
#: series: 2 + 3 × labels fields per sample, i.e. 166 labels per series at the default.
MAX_FIELDS = 1_000_000
#: Most series one request may hold: a series costs ~10 µs of Python (upb builds its objects
#: on access), ten times a label or sample, so they are bounded on their own. Prometheus
#: sends one series per sample, max_samples_per_send (default 2,000) of them.
MAX_SERIES = 50_000
#: Largest decoded/compressed ratio the push endpoint accepts. Snappy's format tops out at
#: 21.3 (a 3-byte copy of 64 bytes), reached by runs of one repeated pattern: what a bomb of
#: skip fields is. Real Prometheus requests (node_exporter, 12 requests measured) decode to
#: 5.8-6.9 times their size; the most regular synthetic one in the tests (2,000 series of
#: 100 sequential samples) to 15.2.
MAX_RATIO = 18.0
# Timestamps become microseconds in int64, so milliseconds beyond this would overflow.
_MAX_ABS_MS = (2**63 - 1) // 1000
# Bytes that start a tag of field 1 or 2 with wire type 2 (0x0a, 0x12), also when the tag
# is over-long: one per series, label, sample, label name and value, plus a few stray
# bytes of values. Counting them bounds the fields before upb allocates any.
_FIELD_TAGS = bytes(1 if b & 0x7F in (0x0A, 0x12) else 0 for b in range(256))


class RemoteWriteError(InputError):
    """A remote-write body that cannot be decompressed or decoded as a ``WriteRequest``."""


class RemoteWriteTooLarge(RemoteWriteError):
    """A remote-write body that decompresses to more (or more times its size) than accepted."""


@dataclass(frozen=True)
class Series:
    """One decoded ``TimeSeries``: its labels in wire order, sample values and timestamps."""

    labels: list[tuple[str, str]]
    values: list[float]
    timestamps_ms: list[int]


def _write_request_class() -> type[Message]:
    """``prometheus.WriteRequest`` of remote write 1.0, reduced to the fields read here."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="opslake/remote_write.proto",
                                               package="prometheus", syntax="proto3")
    for name, fields in (
            ("Label", [(1, "name", field.TYPE_STRING, ""), (2, "value", field.TYPE_STRING, "")]),
            ("Sample", [(1, "value", field.TYPE_DOUBLE, ""),
                        (2, "timestamp", field.TYPE_INT64, "")]),
            ("TimeSeries", [(1, "labels", field.TYPE_MESSAGE, ".prometheus.Label"),
                            (2, "samples", field.TYPE_MESSAGE, ".prometheus.Sample")]),
            ("WriteRequest", [(1, "timeseries", field.TYPE_MESSAGE, ".prometheus.TimeSeries")])):
        message = proto.message_type.add(name=name)
        for number, fname, ftype, type_name in fields:
            added = message.field.add(name=fname, number=number, type=ftype,
                                      label=field.LABEL_OPTIONAL)
            if type_name:  # the message fields are the repeated ones
                added.type_name, added.label = type_name, field.LABEL_REPEATED
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


_WriteRequest = _write_request_class()


def decoded_size(data: bytes, *, max_bytes: int = MAX_DECODED_BYTES,
                 max_ratio: float | None = None) -> int:
    """What ``data`` decompresses to, read from the snappy header before decompressing.

    Raises ``RemoteWriteTooLarge`` past ``max_bytes`` or ``max_ratio`` times the body's
    size, ``RemoteWriteError`` when the body is not snappy block-format data.
    """
    try:
        size = cramjam.snappy.decompress_raw_len(data)
    except cramjam.DecompressionError as exc:
        raise RemoteWriteError(f"body is not snappy block-format data ({exc})") from None
    if size > len(data) * 64 // 3 + 64:  # snappy's densest element: 3 bytes for 64
        raise RemoteWriteError(f"body is not snappy block-format data (its header declares "
                               f"{size:,} bytes, more than {len(data):,} bytes of snappy hold)")
    if size > max_bytes:
        raise RemoteWriteTooLarge(f"body decompresses to {size:,} bytes, more than the "
                                  f"{max_bytes:,} accepted; send smaller batches")
    if max_ratio is not None and size > max_ratio * len(data):
        raise RemoteWriteTooLarge(
            f"body decompresses to {size / len(data):.1f} times its size, more than the "
            f"{max_ratio:g} a remote-write request reaches; send what Prometheus sends")
    return size


def decompress(data: bytes) -> bytes:
    """The protobuf bytes of a snappy (block format) body; raises ``RemoteWriteError``."""
    decoded_size(data)
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as exc:
        raise RemoteWriteError(f"body is not snappy block-format data ({exc})") from None


def decode(data: bytes) -> list[Series]:
    """Decode a whole (compressed) ``WriteRequest``; raises ``RemoteWriteError`` when corrupt."""
    buf = decompress(data)
    if (fields := buf.translate(_FIELD_TAGS).count(1)) > MAX_FIELDS:
        raise RemoteWriteTooLarge(
            f"request holds up to {fields:,} series, labels and samples, more than the "
            f"{MAX_FIELDS:,} accepted; send smaller batches (lower "
            "queue_config.max_samples_per_send)")
    request = _WriteRequest()
    try:
        request.ParseFromString(buf)
    except DecodeError as exc:
        raise RemoteWriteError(f"protobuf is truncated or corrupt, or a label is not UTF-8: "
                               f"not a prometheus.WriteRequest ({exc})") from None
    if len(request.timeseries) > MAX_SERIES:  # counted in C, before Python touches one
        raise RemoteWriteTooLarge(
            f"request holds {len(request.timeseries):,} series, more than the "
            f"{MAX_SERIES:,} accepted; send smaller batches (lower "
            "queue_config.max_samples_per_send)")
    series = []
    for ts in request.timeseries:
        samples = [(s.value, s.timestamp) for s in ts.samples]
        series.append(Series([(label.name, label.value) for label in ts.labels],
                             [v for v, _ in samples], [t for _, t in samples]))
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
                                  f"series {index} has no __name__ label (metric name)"))
            continue
        if s.timestamps_ms and max(abs(min(s.timestamps_ms)),
                                   abs(max(s.timestamps_ms))) > _MAX_ABS_MS:
            rejects.append(Reject(index, canonical({"__name__": name, **labels}),
                                  f"series {index}: a sample timestamp is out of range "
                                  "(milliseconds since the epoch)"))
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
