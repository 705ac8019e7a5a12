"""The ``prometheus`` source in either landed format: scraped text (``prom``) or remote write (``pb``)."""

from __future__ import annotations

from opslake.ingest.parsers import ParseResult, Reject, prometheus_text, remote_write
from opslake.lake.landing import LandedBatch

#: Both parsers produce this schema, so one bronze table holds batches of either format.
BRONZE_SCHEMA = prometheus_text.BRONZE_SCHEMA

_PARSERS = {"prom": prometheus_text.parse, "pb": remote_write.parse}


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Parse one landed ``prometheus`` batch with the parser its format (``batch.fmt``) names."""
    parser = _PARSERS.get(batch.fmt)
    if parser is None:
        return ParseResult(
            BRONZE_SCHEMA.empty_table(),
            [
                Reject(
                    0,
                    repr(data[:200]),
                    f"prometheus batch format {batch.fmt!r} is unknown; accepted "
                    "formats: 'prom' (text exposition) and 'pb' (remote write, snappy protobuf)",
                )
            ],
        )
    return parser(data, batch)
