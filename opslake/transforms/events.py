"""Bronze Alertmanager alerts (one day) → silver ``events``.

Alertmanager re-sends a firing alert on every ``repeat_interval`` and after restarts, so
one alert state arrives many times. Silver keeps one row per (fingerprint, starts_at,
status): the first notification received, since it tells when the state became known.
``event_id`` is the first 32 hex digits of sha256("fingerprint|starts_at µs since epoch|
status"), so re-running a day gives the same ids. ``ends_at`` is null while firing.
"""

from __future__ import annotations

import hashlib

import polars as pl
import pyarrow as pa

from opslake.lake import schemas
from opslake.transforms._silver import to_schema
from opslake.transforms.entities import EntityResolver

SOURCE = "alertmanager"
_KEY = ["fingerprint", "starts_at", "status"]


def to_silver(bronze: pa.Table, resolver: EntityResolver) -> pa.Table:
    """Deduplicated, entity-mapped events of one day (schemas.EVENTS), in a stable order."""
    frame = pl.DataFrame(bronze).with_columns(pl.col("status").str.to_lowercase())
    frame = frame.sort([*_KEY, "received_at", "batch_id", "line_no"]).unique(
        subset=_KEY, keep="first", maintain_order=True
    )
    labels, annotations = pl.col("labels"), pl.col("annotations")
    frame = frame.with_columns(
        pl.lit(SOURCE).alias("source"),
        labels.map.get("severity").str.to_lowercase().alias("severity"),
        pl.coalesce(annotations.map.get("summary"), labels.map.get("alertname")).alias("title"),
        annotations.map.get("description").alias("description"),
        pl.coalesce(labels.map.get("entity_id"), resolver.expr(labels.map.get("instance"))).alias(
            "entity_id"
        ),
        # The contract says null while firing: Alertmanager sends either Go's zero time
        # (the parser stores null) or, for alerts from Prometheus, a provisional resolve
        # timeout that is not an end.
        pl.when((pl.col("status") != "firing") & (pl.col("ends_at").dt.year() > 1))
        .then(pl.col("ends_at"))
        .alias("ends_at"),
    )
    keys = (
        frame.select(
            pl.format("{}|{}|{}", "fingerprint", pl.col("starts_at").dt.epoch("us"), "status")
        )
        .to_series()
        .to_list()
    )
    frame = frame.with_columns(
        pl.Series(
            "event_id", [hashlib.sha256(k.encode()).hexdigest()[:32] for k in keys], pl.String
        )
    )
    return to_schema(frame.sort(["starts_at", "fingerprint", "status"]), schemas.EVENTS)
