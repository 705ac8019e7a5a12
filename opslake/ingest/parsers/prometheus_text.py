"""Prometheus text exposition format (0.0.4) → bronze samples, vectorised with polars.

Label sets repeat for every sample of a series, so they are parsed once per distinct set
(a few thousand per batch) rather than once per line (hundreds of thousands).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC

import polars as pl
import pyarrow as pa

from opslake.ingest.parsers import ParseResult, Reject
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import TS

BRONZE_SCHEMA = pa.schema(
    [
        ("ts", TS),
        ("metric", pa.string()),
        ("label_set", pa.string()),
        ("value", pa.float64()),
        ("batch_id", pa.string()),
        ("received_at", TS),
    ]
)

_SAMPLE = r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?[ \t]*$"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_label_set(text: str) -> dict[str, str]:
    """Parse ``{a="1",b="x"}`` into a dict; raises ``ValueError`` saying what is wrong."""
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError("label set must be enclosed in braces")
    body, pos, labels = text[1:-1], 0, {}
    while pos < len(body):
        m = _LABEL.match(body, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad label syntax at {body[pos:pos + 30]!r}")
        name, value = m.group(1), m.group(2)
        if "\\" in value:
            value = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group()], value)
        if name in labels:
            raise ValueError(f"duplicate label {name!r}")
        labels[name] = value
        pos = m.end()
        if m.group(3) == "" and pos < len(body):
            raise ValueError(f"missing comma before {body[pos:pos + 30]!r}")
    return labels


def canonical(labels: dict[str, str]) -> str:
    """A label set as one string with sorted names: the series identity."""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one batch of exposition text; samples without a timestamp take the batch time."""
    try:
        lines = _lines(data)
    except UnicodeDecodeError as exc:
        return ParseResult(BRONZE_SCHEMA.empty_table(),
                           [Reject(0, repr(data[:200]), f"batch is not UTF-8 text: {exc}")])
    lines = lines.filter(~pl.col("raw").str.contains(r"^\s*(#|$)"))
    # Fast path: plain splitting on single spaces, right for every line whose label values
    # hold no spaces; the rest (rare) goes through the full regular expression.
    split = lines.with_columns(pl.col("raw").str.splitn(" ", 3).alias("f")).unnest("f")
    series, value, ts = pl.col("field_0"), pl.col("field_1"), pl.col("field_2")
    simple = ((~series.str.contains("{", literal=True) | series.str.ends_with("}"))
              & value.is_not_null() & (ts.is_null() | ~ts.str.contains(r"\s")))
    split = split.with_columns(simple.fill_null(False).alias("simple"))
    fast = split.filter("simple").select(
        "line_no", "raw", series.alias("series"), value.alias("value_raw"), ts.alias("ts_raw"))
    slow = split.filter(~pl.col("simple")).select("line_no", "raw")
    matched = slow.with_columns(pl.col("raw").str.strip_chars().str.extract_groups(_SAMPLE)
                                .alias("m")).unnest("m")
    slow_rows = matched.select(
        "line_no", "raw", (pl.col("1") + pl.col("2").fill_null("")).alias("series"),
        pl.col("3").alias("value_raw"), pl.col("4").alias("ts_raw"))
    rows = pl.concat([fast, slow_rows]).with_columns(
        pl.col("value_raw").cast(pl.Float64, strict=False).alias("value"),
        pl.col("ts_raw").cast(pl.Int64, strict=False).alias("ts_ms"),
    )
    rows = rows.join(_series_table(rows.get_column("series")), on="series", how="left")

    reason = (
        pl.when(pl.col("series").is_null())
        .then(pl.lit("not a sample line: expected 'name{labels} value [timestamp_ms]'"))
        .when(pl.col("series_error").is_not_null())
        .then(pl.col("series_error"))
        .when(pl.col("value").is_null())
        .then(pl.lit("value is not a number: ") + pl.col("value_raw"))
        .when(pl.col("ts_raw").is_not_null() & pl.col("ts_ms").is_null())
        .then(pl.lit("timestamp is not an integer of milliseconds: ") + pl.col("ts_raw"))
    )
    rows = rows.with_columns(reason.alias("reason"))
    bad = rows.filter(pl.col("reason").is_not_null()).sort("line_no")
    rejects = [Reject(int(n), raw, why) for n, raw, why in
               bad.select("line_no", "raw", "reason").iter_rows()]

    received = batch.received.astimezone(UTC)
    default_ms = int(received.timestamp() * 1000)
    good = rows.filter(pl.col("reason").is_null()).sort("line_no").select(
        pl.from_epoch(pl.col("ts_ms").fill_null(default_ms), time_unit="ms")
        .dt.cast_time_unit("us").dt.replace_time_zone("UTC").alias("ts"),
        pl.col("metric"),
        pl.col("label_set"),
        pl.col("value"),
        pl.lit(batch.batch_id).alias("batch_id"),
        pl.lit(received).cast(pl.Datetime("us", "UTC")).alias("received_at"),
    )
    return ParseResult(good.to_arrow().cast(BRONZE_SCHEMA), rejects)


def _lines(data: bytes) -> pl.DataFrame:
    """(line_no, raw) for every line, split in polars (no GIL) and CRLF-tolerant."""
    data.decode("utf-8")  # raises for a batch that is not text at all
    try:
        # A separator byte that exposition text never holds: each line is one field, and
        # blank lines stay (as nulls), so row numbers are line numbers.
        lines = pl.read_csv(data, has_header=False, separator="\x1f", quote_char=None,
                            new_columns=["raw"], infer_schema=False).with_columns(
            pl.col("raw").fill_null(""))
    except (pl.exceptions.ComputeError, pl.exceptions.SchemaError):
        lines = pl.DataFrame({"raw": data.decode("utf-8").split("\n")}).with_columns(
            pl.col("raw").str.strip_suffix("\r"))
    return lines.with_row_index("line_no", offset=1)


def _series_table(series: pl.Series) -> pl.DataFrame:
    """Metric, canonical label set or error for each distinct ``name{labels}`` string."""
    texts = series.drop_nulls().unique().to_list()
    parsed = [_parse_series(t) for t in texts]
    return pl.DataFrame(
        {"series": texts, "metric": [p[0] for p in parsed],
         "label_set": [p[1] for p in parsed], "series_error": [p[2] for p in parsed]},
        schema={"series": pl.String, "metric": pl.String, "label_set": pl.String,
                "series_error": pl.String},
    )


# Series repeat in every scrape, so their parse is cached across batches in one process.
@functools.lru_cache(maxsize=500_000)
def _parse_series(text: str) -> tuple[str | None, str | None, str | None]:
    name, brace, rest = text.partition("{")
    if not _NAME.match(name):
        return None, None, f"bad metric name {name!r}"
    try:
        return name, canonical(parse_label_set(brace + rest) if brace else {}), None
    except ValueError as exc:
        return None, None, f"bad label set: {exc}"
