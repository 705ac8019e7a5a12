"""Bronze CMDB snapshots → silver ``assets`` and ``relations`` with validity intervals (SCD-2).

Both tables are snapshot partitioned: partition D holds the full history as known at the
end of day D, rebuilt from every bronze snapshot up to and including D (a few thousand
rows each), so a late or corrected snapshot needs no incremental bookkeeping.

Rules (one function, :func:`scd2`, for both tables):

* A version begins when a key first appears, reappears after missing from a snapshot, or
  its attributes change. It begins at ``changed_at`` (the CI's ``updated_at``) when that
  time is credible, i.e. after the previous snapshot and not after the one that first
  shows the version; otherwise at that snapshot's export time.
* A version ends where the key's next version begins, or at the export time of the first
  snapshot without the key; the current version has ``valid_to`` null.
* Two deliveries of the same export (same ``exported_at``) count once: the row received
  last wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl
import pyarrow as pa

from opslake.lake import schemas
from opslake.transforms._silver import to_schema

_VALIDITY = ("valid_from", "valid_to")
_ASSET_ATTRIBUTES = [n for n in schemas.ASSETS.names if n not in ("entity_id", *_VALIDITY)]
_RELATION_KEYS = ["src", "relation", "dst"]


def scd2(
    snapshots: pl.DataFrame,
    keys: Sequence[str],
    attributes: Sequence[str],
    *,
    at: str = "exported_at",
    changed_at: str | None = None,
    snapshot_times: Sequence[datetime] | None = None,
) -> pl.DataFrame:
    """Versions (keys, attributes, valid_from, valid_to) from full snapshots, oldest first.

    ``snapshots`` holds every key present in each snapshot, with the snapshot time in
    ``at``. ``snapshot_times`` adds snapshots that hold no rows at all (an export whose
    relations list was empty), so that everything in them counts as missing.
    """
    keys, attributes = list(keys), list(attributes)
    times = pl.concat(
        [
            snapshots.select(pl.col(at)),
            pl.DataFrame({at: list(snapshot_times or [])}, schema={at: snapshots.schema[at]}),
        ]
    )
    times = (
        times.unique()
        .sort(at)
        .with_row_index("snap")
        .with_columns(
            pl.col(at).shift(1).alias("prev_time"), pl.col(at).shift(-1).alias("next_time")
        )
    )

    tie = [c for c in ("received_at", "batch_id") if c in snapshots.columns]
    rows = (
        snapshots.sort([at, *keys, *tie], nulls_last=True)
        .unique(subset=[at, *keys], keep="last", maintain_order=True)
        .join(times.select(at, "snap"), on=at)
        .sort([*keys, "snap"])
    )
    previous = pl.col("snap").shift(1).over(keys)
    changed = pl.any_horizontal(
        pl.lit(False), *(pl.col(a).ne_missing(pl.col(a).shift(1).over(keys)) for a in attributes)
    )
    begins = previous.is_null() | (pl.col("snap") != previous + 1) | changed
    rows = rows.with_columns(begins.cast(pl.UInt32).cum_sum().over(keys).alias("version"))

    when_changed = [pl.col(changed_at).first().alias("changed_at")] if changed_at else []
    versions = (
        rows.group_by([*keys, "version"], maintain_order=True)
        .agg(
            *(pl.col(a).first() for a in attributes),
            *when_changed,
            pl.col("snap").min().alias("first_snap"),
            pl.col("snap").max().alias("last_snap"),
        )
        .join(
            times.select(
                pl.col("snap").alias("first_snap"), pl.col(at).alias("seen_at"), "prev_time"
            ),
            on="first_snap",
        )
        .join(
            times.select(
                pl.col("snap").alias("last_snap"), pl.col("next_time").alias("missing_at")
            ),
            on="last_snap",
        )
    )
    valid_from = pl.col("seen_at")
    if changed_at:
        credible = (pl.col("changed_at") <= pl.col("seen_at")) & (
            pl.col("prev_time").is_null() | (pl.col("changed_at") > pl.col("prev_time"))
        )
        valid_from = pl.when(credible).then(pl.col("changed_at")).otherwise(valid_from)
    versions = versions.with_columns(valid_from.alias("valid_from")).sort([*keys, "first_snap"])
    follows = pl.col("first_snap").shift(-1).over(keys) == pl.col("last_snap") + 1
    versions = versions.with_columns(
        pl.when(follows.fill_null(False))
        .then(pl.col("valid_from").shift(-1).over(keys))
        .otherwise(pl.col("missing_at"))
        .alias("valid_to")
    )
    return versions.select(*keys, *attributes, *_VALIDITY).sort([*keys, "valid_from"])


def to_silver_assets(bronze_cis: pa.Table) -> pa.Table:
    """Asset history as of the newest snapshot in ``bronze_cis`` (all CMDB days up to D)."""
    frame = pl.DataFrame(bronze_cis).with_columns(pl.col("kind").str.to_lowercase())
    versions = scd2(frame, ["entity_id"], _ASSET_ATTRIBUTES, changed_at="updated_at")
    return to_schema(versions, schemas.ASSETS)


def to_silver_relations(
    bronze_relations: pa.Table, snapshot_times: Sequence[datetime] | None = None
) -> pa.Table:
    """Relation history as of the newest snapshot (all CMDB days up to D).

    Pass the export times of the CI snapshots as ``snapshot_times`` so that an export with
    no relations at all still ends the relations it no longer lists.
    """
    frame = pl.DataFrame(bronze_relations).with_columns(pl.col("relation").str.to_lowercase())
    versions = scd2(frame, _RELATION_KEYS, [], snapshot_times=snapshot_times)
    return to_schema(
        versions.rename({"src": "src_entity_id", "dst": "dst_entity_id"}), schemas.RELATIONS_SCHEMA
    )
