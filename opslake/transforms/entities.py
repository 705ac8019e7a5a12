"""Raw source identities (entity ids, CMDB names, IPs, ``ip:port``, URLs) → ``entity_id``.

Sources name an object in their own way: Prometheus by ``instance`` (``10.20.1.12:9100``),
syslog by host name (``vm-0012.gov.local``), tickets by entity id. The CMDB knows all
three, so the resolver is a lookup table built from silver ``assets`` and applied as one
vectorised hash lookup over a whole column (``replace_strict``), never row by row.

Matching is case-insensitive. A raw identity is normalised first (scheme, path and port
dropped, ``[v6]:port`` unbracketed); a host name that does not match in full is tried once
more by its first label (``vm-0012.other.domain`` → ``vm-0012``). A key that names two
entities on the same footing (two CIs with one IP) resolves to null rather than a guess;
unknown identities resolve to null too, so callers keep the raw value and count them.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pyarrow as pa

# Lower rank wins when one key string comes from several kinds of identity.
_RANK_ENTITY_ID, _RANK_NAME, _RANK_IP, _RANK_SHORT_NAME = 0, 1, 2, 3
_IPV4 = r"^\d{1,3}(?:\.\d{1,3}){3}$"


class EntityResolver:
    """Resolves raw identities to entity ids through the CMDB (silver ``assets``)."""

    def __init__(self, assets: pa.Table, *, as_of: datetime | None = None) -> None:
        """Build the lookup from ``assets`` (schemas.ASSETS), as known at ``as_of`` if given.

        Each entity contributes its latest version (valid at ``as_of`` when given); entities
        retired by then still resolve, but an entity alive at ``as_of`` wins a shared key.
        """
        versions = pl.DataFrame(
            assets.select(["entity_id", "name", "ip", "valid_from", "valid_to"])
        )
        if as_of is not None:
            versions = versions.filter(pl.col("valid_from") <= as_of)
        latest = versions.sort(["entity_id", "valid_from"]).unique(
            subset=["entity_id"], keep="last", maintain_order=True
        )
        alive = pl.col("valid_to").is_null()
        if as_of is not None:
            alive = alive | (pl.col("valid_to") > as_of)
        latest = latest.with_columns(
            alive.alias("alive"), pl.col("name").str.to_lowercase().alias("name")
        )
        short = pl.when(~pl.col("name").str.contains(_IPV4)).then(
            pl.col("name").str.extract(r"^([^.]+)\.", 1)
        )
        candidates = pl.concat(
            [
                latest.select(
                    _normalise(pl.col(column)).alias("key"),
                    "entity_id",
                    "alive",
                    pl.lit(rank, pl.Int8).alias("rank"),
                )
                for column, rank in (
                    ("entity_id", _RANK_ENTITY_ID),
                    ("name", _RANK_NAME),
                    ("ip", _RANK_IP),
                )
            ]
            + [
                latest.select(
                    short.alias("key"),
                    "entity_id",
                    "alive",
                    pl.lit(_RANK_SHORT_NAME, pl.Int8).alias("rank"),
                )
            ]
        )
        candidates = candidates.filter(pl.col("key").is_not_null() & (pl.col("key") != ""))
        # Per key keep only the best footing (alive first, then rank); ambiguous → null.
        best = (
            candidates.sort(["key", "alive", "rank"], descending=[False, True, False])
            .unique(subset=["key"], keep="first", maintain_order=True)
            .select("key", "alive", "rank")
        )
        self._lookup = (
            candidates.join(best, on=["key", "alive", "rank"])
            .group_by("key")
            .agg(pl.col("entity_id").n_unique().alias("n"), pl.col("entity_id").min())
            .filter(pl.col("n") == 1)
            .select("key", "entity_id")
            .sort("key")
        )

    @property
    def mapping(self) -> pl.DataFrame:
        """The lookup table (normalised ``key`` → ``entity_id``), e.g. for a SQL join."""
        return self._lookup

    def expr(self, column: pl.Expr) -> pl.Expr:
        """An expression resolving ``column`` (raw identities) to entity ids, null if unknown."""
        keys = self._lookup.get_column("key")
        ids = self._lookup.get_column("entity_id")
        normalised = _normalise(column)
        short = pl.when(~normalised.str.contains(_IPV4)).then(
            normalised.str.extract(r"^([^.]+)\.", 1)
        )
        return pl.coalesce(
            normalised.replace_strict(keys, ids, default=None, return_dtype=pl.String),
            short.replace_strict(keys, ids, default=None, return_dtype=pl.String),
        )

    def resolve(self, values: pl.Series | pa.Array | pa.ChunkedArray) -> pl.Series:
        """Entity ids for a column of raw identities, aligned with it (null where unknown)."""
        series = values if isinstance(values, pl.Series) else pl.Series(values)
        frame = pl.DataFrame({"raw": series.cast(pl.String)})
        return frame.select(self.expr(pl.col("raw")).alias("entity_id")).to_series()


def _normalise(column: pl.Expr) -> pl.Expr:
    """Lower-case host (or id, or IP) without scheme, path, user or port."""
    text = column.cast(pl.String).str.strip_chars().str.to_lowercase()
    text = text.str.replace(r"^[a-z][a-z0-9+.\-]*://", "").str.replace(r"^[^/@]*@", "")
    text = text.str.replace(r"/.*$", "")
    text = text.str.replace(r"^\[([^\]]*)\](?::\d+)?$", "$1")  # [v6]:port
    return text.str.replace(r"^([^:]+):\d+$", "$1")  # host:port; bare IPv6 has several ':'
