"""Syslog lines (RFC 5424, and legacy RFC 3164) → bronze rows, vectorised with polars.

One regular expression runs over all lines at once; lines it does not match get the
RFC 3164 expression, and what matches neither (or carries an impossible PRI, version or
timestamp) is rejected with the reason. RFC 3164 carries neither year nor zone: the year
is the batch day's (the previous one for a December line in an early-January batch) and
the time is taken as UTC.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pyarrow as pa

from opslake.ingest.parsers import ParseResult, Reject
from opslake.ingest.parsers._text import decode_lines, received_at, timestamp_expr
from opslake.lake.landing import LandedBatch
from opslake.lake.schemas import TS

BRONZE_SCHEMA = pa.schema(
    [
        ("line_no", pa.int64()),
        ("format", pa.string()),  # "rfc5424" or "rfc3164"
        ("pri", pa.int16()),
        ("version", pa.int16()),
        ("ts", TS),  # null for RFC 5424's NILVALUE timestamp
        ("hostname", pa.string()),
        ("app_name", pa.string()),
        ("procid", pa.string()),
        ("msgid", pa.string()),
        ("structured_data", pa.string()),
        ("message", pa.string()),
        ("batch_id", pa.string()),
        ("received_at", TS),
    ]
)

# SD-ELEMENT per RFC 5424 §6.3: [SD-ID *(SP SD-NAME="escaped value")]; values may hold
# escaped '"', '\' and ']'.
_SD_NAME = r'[^\s=\]"]+'
_SD_ELEMENT = rf'\[{_SD_NAME}(?: +{_SD_NAME}="(?:[^"\\]|\\.)*")* *\]'
_RFC5424 = (
    r"^<(?P<pri>\d{1,3})>(?P<version>\d{1,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) "
    rf"(?P<procid>\S+) (?P<msgid>\S+) (?P<sd>-|(?:{_SD_ELEMENT})+)(?: (?P<msg>.*))?$"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_RFC3164 = (
    rf"^<(?P<pri>\d{{1,3}})>(?P<mon>{'|'.join(_MONTHS)}) (?P<day>[ \d]\d) "
    r"(?P<time>\d{2}:\d{2}:\d{2}) (?P<host>\S+) "
    r"(?:(?P<tag>[^\s:\[]+)(?:\[(?P<pid>[^\]]*)\])?: ?)?(?P<msg>.*)$"
)

_COLUMNS = [
    "line_no",
    "raw",
    "format",
    "pri",
    "version",
    "ts",
    "ts_raw",
    "hostname",
    "app_name",
    "procid",
    "msgid",
    "structured_data",
    "message",
]


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one batch of syslog lines; bad lines become rejects, good ones bronze rows."""
    lines, rejects = decode_lines(data)
    frame = (
        pl.DataFrame({"raw": lines}, schema={"raw": pl.String})
        .with_row_index("line_no", offset=1)
        .with_columns(pl.col("line_no").cast(pl.Int64))
        .filter(pl.col("raw").str.strip_chars() != "")
    )

    modern = frame.with_columns(pl.col("raw").str.extract_groups(_RFC5424).alias("m")).unnest("m")
    rfc5424 = modern.filter(pl.col("pri").is_not_null()).select(
        "line_no",
        "raw",
        pl.lit("rfc5424").alias("format"),
        pl.col("pri"),
        pl.col("version"),
        timestamp_expr(pl.col("ts")).alias("ts"),
        pl.when(pl.col("ts") != "-").then(pl.col("ts")).alias("ts_raw"),
        _nil("host").alias("hostname"),
        _nil("app").alias("app_name"),
        _nil("procid"),
        _nil("msgid"),
        _nil("sd").alias("structured_data"),
        pl.col("msg").str.strip_prefix("\ufeff").alias("message"),  # RFC 5424 allows a BOM
    )
    legacy = (
        modern.filter(pl.col("pri").is_null())
        .select("line_no", "raw")
        .with_columns(pl.col("raw").str.extract_groups(_RFC3164).alias("m"))
        .unnest("m")
    )
    rfc3164 = legacy.filter(pl.col("pri").is_not_null()).select(
        "line_no",
        "raw",
        pl.lit("rfc3164").alias("format"),
        pl.col("pri"),
        pl.lit(None, pl.String).alias("version"),
        _legacy_ts(date.fromisoformat(batch.dt)).alias("ts"),
        pl.format("{} {} {}", "mon", "day", "time").alias("ts_raw"),
        pl.col("host").alias("hostname"),
        pl.col("tag").alias("app_name"),
        pl.col("pid").alias("procid"),
        pl.lit(None, pl.String).alias("msgid"),
        pl.lit(None, pl.String).alias("structured_data"),
        pl.col("msg").alias("message"),
    )
    rows = pl.concat([rfc5424.select(_COLUMNS), rfc3164.select(_COLUMNS)]).with_columns(
        pl.col("pri").cast(pl.Int16, strict=False),
        pl.col("version").cast(pl.Int16, strict=False),
    )
    reason = (
        pl.when(pl.col("pri") > 191)
        .then(pl.format("PRI {} is out of range 0-191", "pri"))
        .when(pl.col("version").is_not_null() & (pl.col("version") != 1))
        .then(pl.format("RFC 5424 VERSION is {}; only 1 is known", "version"))
        .when(pl.col("ts").is_null() & pl.col("ts_raw").is_not_null())
        .then(pl.format("timestamp '{}' is not a valid RFC 3339 (or RFC 3164) time", "ts_raw"))
    )
    rows = rows.with_columns(reason.alias("reason"))
    unmatched = legacy.filter(pl.col("pri").is_null()).select(
        "line_no", "raw", _unmatched_reason().alias("reason")
    )
    bad = pl.concat(
        [rows.filter(pl.col("reason").is_not_null()).select(unmatched.columns), unmatched]
    )
    rejects += [Reject(no, raw, why) for no, raw, why in bad.iter_rows()]
    rejects.sort(key=lambda r: r.line_no)

    good = (
        rows.filter(pl.col("reason").is_null())
        .sort("line_no")
        .select([c.name for c in BRONZE_SCHEMA if c.name not in ("batch_id", "received_at")])
        .with_columns(
            pl.lit(batch.batch_id).alias("batch_id"),
            pl.lit(received_at(batch)).cast(pl.Datetime("us", "UTC")).alias("received_at"),
        )
    )
    return ParseResult(good.to_arrow().cast(BRONZE_SCHEMA), rejects)


def _nil(group: str) -> pl.Expr:
    """RFC 5424's NILVALUE '-' as null."""
    return pl.when(pl.col(group) != "-").then(pl.col(group)).alias(group)


def _legacy_ts(day: date) -> pl.Expr:
    """RFC 3164 'Mmm dd hh:mm:ss' in the batch day's year (or the year before), as UTC."""
    month = pl.col("mon").replace_strict(list(_MONTHS), [f"{i:02d}" for i in range(1, 13)])

    def in_year(year: int) -> pl.Expr:
        text = pl.format(
            "{}-{}-{}T{}",
            pl.lit(str(year)),
            month,
            pl.col("day").str.strip_chars().str.zfill(2),
            "time",
        )
        return text.str.to_datetime("%Y-%m-%dT%H:%M:%S", time_unit="us", strict=False)

    # A line more than a day after the batch day must be from last year (Dec 31 in Jan 1).
    limit = day + timedelta(days=2)
    this_year = in_year(day.year)
    return (
        pl.when(this_year >= pl.lit(limit).cast(pl.Datetime("us")))
        .then(in_year(day.year - 1))
        .otherwise(this_year)
    ).dt.replace_time_zone("UTC")


def _unmatched_reason() -> pl.Expr:
    raw = pl.col("raw")
    return (
        pl.when(raw.str.contains(r"^<\d{1,3}>\d"))
        .then(
            pl.lit(
                "malformed RFC 5424 line: expected '<PRI>1 TIMESTAMP HOSTNAME APP-NAME "
                "PROCID MSGID STRUCTURED-DATA MSG' with '-' for empty fields"
            )
        )
        .when(raw.str.contains(r"^<\d{1,3}>"))
        .then(pl.lit("malformed RFC 3164 line: expected '<PRI>Mmm dd hh:mm:ss HOST TAG: MSG'"))
        .otherwise(pl.lit("not a syslog line: it does not start with '<PRI>'"))
    )
