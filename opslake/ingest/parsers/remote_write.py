"""Prometheus remote write (1.0: snappy block format + protobuf ``WriteRequest``) → bronze samples.

``WriteRequest`` is decoded by protobuf's compiled parser (upb) from a descriptor built here
with only the fields OpsLake reads: ``WriteRequest`` field 1 is a repeated ``TimeSeries``
whose field 1 is a repeated ``Label`` (1: name, 2: value) and field 2 a repeated ``Sample``
(1: double value, 2: int64 timestamp in ms). Everything else (metadata, exemplars, native
histograms) is skipped by upb in C, so a body of unknown fields costs no Python work.
Output rows have exactly ``prometheus_text.BRONZE_SCHEMA``, so remote-write batches feed
the same bronze table and silver ``metric_points`` as scraped text.

Reading each series from upb's objects costs ~10 µs of Python, and Prometheus sends one
series per sample. So a body laid out as Prometheus writes it (every series: its labels,
then its samples, each sample its value and then its timestamp) is decoded by
``_decode_regular`` instead: upb cuts the series apart, numpy reads every value and
timestamp at once, and each distinct label block is canonicalised once per process (the
shared ``series_cache.SeriesCache``). A series ending in one Sample is looked up by the
bytes before it, so a known block costs a hash and one comparison and no step per label;
its metric and label set reach every sample by one gather. Any other body, a body of fewer
than ``REGULAR_MIN_SERIES`` series, and any body with a series to reject take the upb
path, whose rows the regular one reproduces exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

import cramjam
import numpy as np
import polars as pl
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from opslake.errors import RemoteWriteError, RemoteWriteTooLarge
from opslake.ingest.parsers import ParseResult, Reject
from opslake.ingest.parsers.prometheus_text import BRONZE_SCHEMA, canonical, slices
from opslake.ingest.parsers.series_cache import SeriesCache
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
#: Most labels per series the regular decoder steps through (one numpy round per label);
#: a series with more sends its request down the upb path.
MAX_REGULAR_LABELS = 64
#: Fewest series for which the regular decoder pays: its fixed cost (~60 numpy and ~10
#: polars calls, ~0.5 ms on a loaded 2-core machine) is what upb's Python costs for 32-64
#: series (measured).
REGULAR_MIN_SERIES = 64


@dataclass(frozen=True)
class Series:
    """One decoded ``TimeSeries``: its labels in wire order, sample values and timestamps."""

    labels: list[tuple[str, str]]
    values: list[float]
    timestamps_ms: list[int]


def _message_classes() -> dict[str, type[Message]]:
    """``prometheus.WriteRequest`` of remote write 1.0, reduced to the fields read here.

    ``SeriesBodies`` reads the same bytes with each ``TimeSeries`` left as raw bytes: upb
    cuts a request into series in C, for the regular decoder.
    """
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="opslake/remote_write.proto", package="prometheus", syntax="proto3"
    )
    for name, fields in (
        ("Label", [(1, "name", field.TYPE_STRING, ""), (2, "value", field.TYPE_STRING, "")]),
        ("Sample", [(1, "value", field.TYPE_DOUBLE, ""), (2, "timestamp", field.TYPE_INT64, "")]),
        (
            "TimeSeries",
            [
                (1, "labels", field.TYPE_MESSAGE, ".prometheus.Label"),
                (2, "samples", field.TYPE_MESSAGE, ".prometheus.Sample"),
            ],
        ),
        ("WriteRequest", [(1, "timeseries", field.TYPE_MESSAGE, ".prometheus.TimeSeries")]),
        ("SeriesBodies", [(1, "timeseries", field.TYPE_BYTES, "")]),
    ):
        message = proto.message_type.add(name=name)
        for number, fname, ftype, type_name in fields:
            added = message.field.add(
                name=fname, number=number, type=ftype, label=field.LABEL_OPTIONAL
            )
            if type_name or name == "SeriesBodies":  # the repeated ones
                added.label = field.LABEL_REPEATED
            if type_name:
                added.type_name = type_name
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in ("WriteRequest", "TimeSeries", "SeriesBodies")
    }


_CLASSES = _message_classes()
_WriteRequest, _TimeSeries, _SeriesBodies = (
    _CLASSES["WriteRequest"],
    _CLASSES["TimeSeries"],
    _CLASSES["SeriesBodies"],
)


def decoded_size(
    data: bytes, *, max_bytes: int = MAX_DECODED_BYTES, max_ratio: float | None = None
) -> int:
    """What ``data`` decompresses to, read from the snappy header before decompressing.

    Raises ``RemoteWriteTooLarge`` past ``max_bytes`` or ``max_ratio`` times the body's
    size, ``RemoteWriteError`` when the body is not snappy block-format data.
    """
    try:
        size = cramjam.snappy.decompress_raw_len(data)
    except cramjam.DecompressionError as exc:
        raise RemoteWriteError(f"body is not snappy block-format data ({exc})") from None
    if size > len(data) * 64 // 3 + 64:  # snappy's densest element: 3 bytes for 64
        raise RemoteWriteError(
            f"body is not snappy block-format data (its header declares "
            f"{size:,} bytes, more than {len(data):,} bytes of snappy hold)"
        )
    if size > max_bytes:
        raise RemoteWriteTooLarge(
            f"body decompresses to {size:,} bytes, more than the "
            f"{max_bytes:,} accepted; send smaller batches"
        )
    if max_ratio is not None and size > max_ratio * len(data):
        raise RemoteWriteTooLarge(
            f"body decompresses to {size / len(data):.1f} times its size, more than the "
            f"{max_ratio:g} a remote-write request reaches; send what Prometheus sends"
        )
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
    return _decode_series(_request_bytes(data))


def _request_bytes(data: bytes) -> bytes:
    """The decompressed request, refused when it holds more fields than accepted.

    Fields are bounded before upb allocates any by counting the bytes that start a tag of
    field 1 or 2 with wire type 2 (0x0a, 0x12), also when the tag is over-long: one per
    series, label, sample, label name and value, plus a few stray bytes of values.
    """
    buf = decompress(data)
    low = np.frombuffer(buf, np.uint8) & 0x7F
    if (fields := np.count_nonzero(low == 0x0A) + np.count_nonzero(low == 0x12)) > MAX_FIELDS:
        raise RemoteWriteTooLarge(
            f"request holds up to {fields:,} series, labels and samples, more than the "
            f"{MAX_FIELDS:,} accepted; send smaller batches (lower "
            "queue_config.max_samples_per_send)"
        )
    return buf


def _decode_series(buf: bytes) -> list[Series]:
    """Every series of a decompressed request, read from upb's objects."""
    request = _WriteRequest()
    try:
        request.ParseFromString(buf)
    except DecodeError as exc:
        raise RemoteWriteError(
            f"protobuf is truncated or corrupt, or a label is not UTF-8: "
            f"not a prometheus.WriteRequest ({exc})"
        ) from None
    if len(request.timeseries) > MAX_SERIES:  # counted in C, before Python touches one
        raise RemoteWriteTooLarge(
            f"request holds {len(request.timeseries):,} series, more than the "
            f"{MAX_SERIES:,} accepted; send smaller batches (lower "
            "queue_config.max_samples_per_send)"
        )
    series = []
    for ts in request.timeseries:
        samples = [(s.value, s.timestamp) for s in ts.samples]
        series.append(
            Series(
                [(label.name, label.value) for label in ts.labels],
                [v for v, _ in samples],
                [t for _, t in samples],
            )
        )
    return series


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one landed remote-write body; a series without ``__name__`` is rejected alone."""
    return _parse(data, batch, rows=True)


def check(data: bytes, batch: LandedBatch) -> ParseResult:
    """:func:`parse`'s rejects without its rows (an empty table): what the push endpoint
    needs to know before it acknowledges a body."""
    return _parse(data, batch, rows=False)


def _parse(data: bytes, batch: LandedBatch, *, rows: bool) -> ParseResult:
    try:
        buf = _request_bytes(data)
        regular = _decode_regular(buf, min_series=REGULAR_MIN_SERIES, rows=rows)
        if regular is not None:
            return ParseResult(_table(*regular, batch) if rows else BRONZE_SCHEMA.empty_table(), [])
        decoded = _decode_series(buf)
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
            rejects.append(
                Reject(
                    index, canonical(labels), f"series {index} has no __name__ label (metric name)"
                )
            )
            continue
        if (
            s.timestamps_ms
            and max(abs(min(s.timestamps_ms)), abs(max(s.timestamps_ms))) > _MAX_ABS_MS
        ):
            rejects.append(
                Reject(
                    index,
                    canonical({"__name__": name, **labels}),
                    f"series {index}: a sample timestamp is out of range "
                    "(milliseconds since the epoch)",
                )
            )
            continue
        metrics.append(name)
        label_sets.append(canonical(labels))
        counts.append(len(s.values))
        values.extend(s.values)
        stamps.extend(s.timestamps_ms)
    if not rows:
        return ParseResult(BRONZE_SCHEMA.empty_table(), rejects)
    series = pa.array(metrics, pa.string()), pa.array(label_sets, pa.string())
    counts_ = np.asarray(counts, np.int64)
    take = np.repeat(np.arange(len(counts_), dtype=np.int64), counts_)
    return ParseResult(
        _table(
            series[0].take(take),
            series[1].take(take),
            np.asarray(values, np.float64),
            np.asarray(stamps, np.int64),
            batch,
        ),
        rejects,
    )


def _table(
    metrics: pa.Array,
    label_sets: pa.Array,
    values: np.ndarray,
    stamps: np.ndarray,
    batch: LandedBatch,
) -> pa.Table:
    """Bronze rows: one per sample, with its metric and label set already one per sample."""
    received = batch.received.astimezone(UTC)
    n = len(values)
    return pa.Table.from_arrays(
        [
            pa.array(stamps * 1000, pa.int64()).view(_TS),
            metrics,
            label_sets,
            pa.array(values, pa.float64()),
            pa.repeat(pa.scalar(batch.batch_id, pa.string()), n),
            pa.repeat(pa.scalar(received, _TS), n),
        ],
        schema=BRONZE_SCHEMA,
    )


_TS = BRONZE_SCHEMA.field("ts").type


def _label_sets(blocks: list[bytes]) -> list[tuple[str | None, str | None]]:
    """Metric name and canonical label set of each encoded label block.

    Both are None for a block without ``__name__`` or that upb refuses (a label that is not
    UTF-8): the upb path rejects its request with the reason.
    """
    out: list[tuple[str | None, str | None]] = []
    for block in blocks:
        try:
            labels = {label.name: label.value for label in _TimeSeries.FromString(block).labels}
        except DecodeError:
            labels = {}
        name = labels.pop("__name__", "")
        out.append((name, canonical(labels)) if name else (None, None))
    return out


#: Metric and label set of every label block seen. Series of one target send the same block
#: in every request, so each distinct block is decoded (upb) and canonicalised once per
#: process; only blocks the label walk (:func:`_label_ends`) confirmed are kept, so a cached
#: block is a run of labels and nothing else.
_LABEL_SETS = SeriesCache(_label_sets, pl.Binary, {"metric": pl.String, "label_set": pl.String})

#: What :func:`_decode_regular` answers without ``rows`` for a request it decodes whole.
_ACCEPTED = ()


def _decode_regular(
    buf: bytes, *, min_series: int = 0, rows: bool = True
) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray] | tuple[()] | None:
    """Metrics, label sets, values and timestamps (one of each per sample) of a request
    laid out as Prometheus writes it, with no series to reject and at least ``min_series``
    series; else None. Without ``rows``, only whether it is such a request (``_ACCEPTED``).

    Work is linear in the request: a series whose label block is cached costs no step per
    label; the others are walked in numpy rounds (at most ``MAX_REGULAR_LABELS``), and
    samples are chained by pointer doubling (log of the longest series).
    """
    try:
        bodies = _SeriesBodies.FromString(buf).timeseries
    except DecodeError:
        return None  # the upb path raises the error that says what is wrong
    if not min_series <= len(bodies) <= MAX_SERIES:
        return None
    lengths = np.fromiter(map(len, bodies), np.int64, len(bodies))
    # Only series, each as tag 0x0a and a shortest length: the sizes add up to the request.
    sizes = 1 + _varint_size(lengths) + lengths
    if int(sizes.sum()) != len(buf):
        return None
    ends = np.cumsum(sizes)
    starts = ends - lengths
    pad = np.frombuffer(buf + bytes(16), np.uint8)  # varint reads may run past the end
    found = _label_blocks(buf, pad, starts, ends)
    if found is None:
        return None
    label_ends, blocks, label_sets = found
    samples = _samples(pad, label_ends, ends)
    if samples is None:
        return None
    counts, values, stamps = samples
    if ((stamps > _MAX_ABS_MS) | (stamps < -_MAX_ABS_MS)).any():
        return None
    if not rows:  # a series without a name: the upb path rejects it
        return None if label_sets.get_column("metric")[blocks].has_nulls() else _ACCEPTED
    if (counts != 1).any():
        blocks = np.repeat(blocks, counts)
    chosen = _LABEL_SETS.arrow(label_sets).take(blocks)
    metrics, label_sets_ = (chosen.column(c).chunk(0) for c in ("metric", "label_set"))
    return None if metrics.null_count else (metrics, label_sets_, values, stamps)


def _label_blocks(
    buf: bytes, pad: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, pl.DataFrame] | None:
    """Where each series' labels end, the row of its label block in ``_LABEL_SETS``, and
    the frame those rows index; None where a label block is laid out otherwise.

    A series ending in one Sample is first looked up by the block before that Sample
    (:func:`_last_sample`): a cached block is a run of labels, so the series is that block
    and that Sample, and nothing is walked. Only the other series are walked label by label.
    """
    guess = _last_sample(pad, starts, ends)
    blocks, label_sets = _LABEL_SETS.find(
        slices(buf, starts, np.maximum(guess, starts), binary=True)
    )
    blocks[guess < 0] = -1
    walk = np.flatnonzero(blocks < 0)
    if not walk.size:
        return guess, blocks, label_sets
    walked = _label_ends(pad, starts[walk], ends[walk])
    if walked is None:
        return None
    guess[walk] = walked
    blocks, label_sets = _LABEL_SETS.rows(slices(buf, starts, guess, binary=True))
    return guess, blocks, label_sets


#: Sizes of a Sample as Prometheus writes it (value 0x09 + 8 bytes, timestamp 0x10 + varint),
#: likeliest first: 16 bytes for millisecond timestamps of 2001-2109, 7 for a value of 0
#: (left out); then every other size up to a value and a 10-byte timestamp.
_SAMPLE_SIZES = (16, 7, *(size for size in range(21) if size not in (16, 7)))


def _last_sample(pad: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Where a Sample (tag 0x12, one-byte size) reaching the end of each series would start;
    -1 where none would. A guess: :func:`_label_blocks` confirms it."""
    guess = np.full(len(ends), -1, np.int64)
    todo = np.arange(len(ends))
    for size in _SAMPLE_SIZES:
        at = ends[todo] - 2 - size
        hit = (at >= starts[todo]) & (pad[at] == 0x12) & (pad[at + 1] == size)
        guess[todo[hit]] = at[hit]
        todo = todo[~hit]
        if not todo.size:
            break
    return guess


def _label_ends(pad: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """Where each series' labels (its leading fields 1) end, stepping all series at once."""
    pos = starts.copy()
    active = np.flatnonzero((pos < ends) & (pad[pos] == 0x0A))
    for _ in range(MAX_REGULAR_LABELS):
        if not active.size:
            return pos
        length, after = _uvarint(pad, pos[active] + 1, 5)
        nxt = after + length.astype(np.int64)
        if ((after < 0) | (nxt > ends[active])).any():
            return None
        pos[active] = nxt
        active = active[(nxt < ends[active]) & (pad[np.minimum(nxt, len(pad) - 1)] == 0x0A)]
    return None if active.size else pos


def _samples(
    pad: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Count per series, values and timestamps of the samples filling each [start, end)."""
    filled = starts < ends
    single = (
        (pad[starts] == 0x12) & (pad[starts + 1] < 0x80) & (starts + 2 + pad[starts + 1] == ends)
    )
    if (single | ~filled).all():  # one sample per series: how Prometheus sends them
        return _sample_values(pad, starts[filled], filled.astype(np.int64))
    # Candidates: every 0x12 byte in the sample regions; the chains of samples from each
    # region's start are found by pointer doubling over them.
    tags = np.flatnonzero(pad[: len(pad) - 16] == 0x12)
    lo, hi = np.searchsorted(tags, starts), np.searchsorted(tags, ends)
    per_region = hi - lo
    first = np.cumsum(per_region) - per_region
    region = np.repeat(np.arange(len(starts)), per_region)
    cand = tags[np.arange(per_region.sum()) + np.repeat(lo - first, per_region)]
    if not (per_region[filled] > 0).all() or (cand[first[filled]] != starts[filled]).any():
        return None  # a region that does not start with a sample
    size = pad[cand + 1].astype(np.int64)  # samples are < 128 bytes: a one-byte length
    target = np.where(size < 0x80, cand + 2 + size, -1)
    end_sentinel, bad_sentinel = len(cand), len(cand) + 1
    at = np.minimum(np.searchsorted(cand, target), len(cand) - 1) if len(cand) else target
    linked = (target < ends[region]) & (target >= 0) & (cand[at] == target) if len(cand) else at
    jump = np.where(target == ends[region], end_sentinel, np.where(linked, at, bad_sentinel))
    jump = np.append(jump, [end_sentinel, bad_sentinel])
    # Round k holds samples 0 .. 2**k - 1 of every chain and adds the next 2**k: jump is
    # composed with itself each round, so the rounds are log2 of the longest series.
    chain = first[filled]
    while True:
        step = jump[chain]
        if (step == bad_sentinel).any():
            return None
        step = step[step < end_sentinel]
        if not step.size:
            break
        chain = np.concatenate([chain, step])
        jump = jump[jump]
    chain.sort()
    return _sample_values(pad, cand[chain], np.bincount(region[chain], minlength=len(starts)))


def _sample_values(
    pad: np.ndarray, at: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Values and timestamps of Samples (each with a one-byte size) starting at ``at``;
    None if laid out otherwise."""
    size = pad[at + 1].astype(np.int64)
    has_value = (pad[at + 2] == 0x09) & (size >= 9)
    # proto3 leaves out a value of 0; the bits are copied, so -0.0 and NaNs stay as sent.
    values = np.where(has_value, _unaligned(pad, "<f8")[at + 3], 0.0)
    tag = at + 2 + 9 * has_value
    # A timestamp fills the rest of its Sample: its varint is exactly that long.
    width = size - 9 * has_value - 1  # -1: no timestamp
    if (width == 0).any() or ((pad[tag] != 0x10) & (width > 0)).any():
        return None
    stamps = _exact_varints(pad, tag + 1, width)
    return None if stamps is None else (counts, values, stamps.view(np.int64))


def _unaligned(pad: np.ndarray, dtype: str) -> np.ndarray:
    """The 8-byte ``dtype`` value starting at each byte of ``pad``: one gather reads many."""
    return np.ndarray((len(pad) - 7,), dtype, pad, strides=(1,))


def _uvarint(pad: np.ndarray, at: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Varints at ``at`` of at most ``width`` bytes: values, and where each ends (-1: longer)."""
    if (pad[at] < 0x80).all():  # lengths of labels and samples: one byte each, mostly
        return pad[at].astype(np.uint64), at + 1
    octets = pad[np.minimum(at, len(pad) - width)[:, None] + np.arange(width)]
    last = octets < 0x80
    count = np.argmax(last, axis=1)
    shifts = (7 * np.arange(width)).astype(np.uint64)
    parts = (octets & 0x7F).astype(np.uint64) << shifts
    values = np.where(np.arange(width) <= count[:, None], parts, 0).sum(axis=1, dtype=np.uint64)
    fits = last.any(axis=1) & ((count < 9) | (octets[:, -1] <= 1))  # 10 bytes hold 64 bits
    return values, np.where(fits, at + count + 1, -1)


#: Masks and shifts that pack the 7-bit groups of up to 8 varint bytes into one integer:
#: pairs of groups, then pairs of pairs, then the two halves.
_PACK = [
    (np.uint64(keep), np.uint64(move), np.uint64(shift))
    for keep, move, shift in (
        (0x007F007F007F007F, 0x7F007F007F007F00, 1),
        (0x00003FFF00003FFF, 0x3FFF00003FFF0000, 2),
        (0x000000000FFFFFFF, 0x0FFFFFFF00000000, 4),
    )
]


#: Per varint width (0-8 bytes): its bytes in a little-endian word, and the high bits
#: those bytes have (all but the last).
_WIDTH_BYTES = np.array([(1 << 8 * w) - 1 for w in range(9)], np.uint64)
_WIDTH_HIGH = np.array([sum(0x80 << 8 * i for i in range(w - 1)) for w in range(9)], np.uint64)
_HIGH_BITS = np.uint64(0x8080808080808080)


def _exact_varints(pad: np.ndarray, at: np.ndarray, width: np.ndarray) -> np.ndarray | None:
    """Varints of exactly ``width`` bytes at ``at`` (0 where ``width`` < 1); None if one
    is longer or shorter."""
    if width.max(initial=0) > 8:  # a negative timestamp: ten bytes
        values, after = _uvarint(pad, at, 10)
        ok = (after == at + width) | (width < 1)
        return np.where(width < 1, np.uint64(0), values) if ok.all() else None
    width = np.maximum(width, 0)
    word = _unaligned(pad, "<u8")[at] & _WIDTH_BYTES[width]
    if ((word & _HIGH_BITS) != _WIDTH_HIGH[width]).any():
        return None
    for keep, move, shift in _PACK:
        word = (word & keep) | ((word & move) >> shift)
    return word


#: Smallest value of each varint size past one byte.
_VARINT_STEPS = np.array([1 << (7 * k) for k in range(1, 10)], np.uint64)


def _varint_size(values: np.ndarray) -> np.ndarray:
    """Bytes of the shortest varint of each (non-negative) value."""
    return 1 + np.searchsorted(_VARINT_STEPS, values.astype(np.uint64), side="right")
