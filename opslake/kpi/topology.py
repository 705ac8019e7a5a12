"""Gold topology and logs (S5.2b-c, S5.2f): relations with both ends described, and log lines
counted per message template, each tied to its CI's department and business.

Both carry the CMDB's department and business of the entities they name, so the API limits a
department viewer's rows the way it limits assets (``opslake.security.roles.row_scope_sql``).
"""

from __future__ import annotations

import hashlib

import polars as pl
import pyarrow as pa

from opslake.lake.schemas import TS

#: What each end of an edge is: the CMDB attributes copied beside the edge.
ENDPOINT_COLUMNS = ("kind", "type", "name", "department", "business")

GOLD_RELATIONS_SCHEMA = pa.schema(
    [
        ("src_entity_id", pa.string()),
        ("relation", pa.string()),
        ("dst_entity_id", pa.string()),
        ("valid_from", TS),
        ("valid_to", TS),
        *((f"src_{c}", pa.string()) for c in ENDPOINT_COLUMNS),
        *((f"dst_{c}", pa.string()) for c in ENDPOINT_COLUMNS),
    ]
)

LOG_TEMPLATES_SCHEMA = pa.schema(
    [
        ("hour", TS),
        ("entity_id", pa.string()),
        ("host", pa.string()),
        ("app", pa.string()),
        ("kind", pa.string()),
        ("type", pa.string()),
        ("department", pa.string()),
        ("business", pa.string()),
        ("severity", pa.int8()),
        ("level", pa.string()),
        ("template_id", pa.string()),
        ("template", pa.string()),
        ("count", pa.int64()),
        ("first_ts", TS),
        ("last_ts", TS),
        ("example", pa.string()),
    ]
)

#: Syslog severities 0-7 by their RFC 5424 keywords.
LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

# Variable parts of a message, masked in this order (an address before its numbers). A fixed
# masking, unlike a streaming miner (Drain), gives a day the same templates on every rebuild.
_MASKS = (
    (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "<UUID>"),
    (r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?::[0-9]{1,5})?\b", "<IP>"),
    (r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b", "<HEX>"),
    (r"\b[0-9]+(?:\.[0-9]+)?", "<NUM>"),
)


def template(messages: pl.Expr) -> pl.Expr:
    """The message with its variable parts (ids, addresses, numbers) masked."""
    for pattern, mask in _MASKS:
        messages = messages.str.replace_all(pattern, mask)
    return messages


def template_id(text: str) -> str:
    """A stable short id of a template (the same on every machine and rebuild)."""
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def newest_versions(assets: pa.Table) -> pl.DataFrame:
    """Each entity's newest known version (current, or the last before it left the CMDB)."""
    return (
        pl.from_arrow(assets.select(["entity_id", *ENDPOINT_COLUMNS, "valid_from"]))
        .filter(pl.col("entity_id").is_not_null())
        .sort(["entity_id", "valid_from"], descending=[False, True], nulls_last=True)
        .unique("entity_id", keep="first", maintain_order=True)
        .drop("valid_from")
    )


def described_relations(relations: pa.Table, assets: pa.Table) -> pa.Table:
    """Every edge version of ``relations`` with both ends' kind, type, name, department and
    business as the CMDB (``assets``, one snapshot's history) last knew them."""
    ends = newest_versions(assets)
    edges = pl.from_arrow(relations.select(["src_entity_id", "relation", "dst_entity_id"]))
    edges = edges.with_columns(
        valid_from=pl.from_arrow(relations.column("valid_from")),
        valid_to=pl.from_arrow(relations.column("valid_to")),
    )
    for side in ("src", "dst"):
        edges = edges.join(
            ends.rename({c: f"{side}_{c}" for c in ends.columns}),
            on=f"{side}_entity_id",
            how="left",
        )
    edges = edges.sort(["src_entity_id", "relation", "dst_entity_id", "valid_from"])
    return edges.select(GOLD_RELATIONS_SCHEMA.names).to_arrow().cast(GOLD_RELATIONS_SCHEMA)


def log_templates(logs: pa.Table, assets: pa.Table) -> pa.Table:
    """Log lines counted per hour, entity (or unknown host), app, severity and template, with
    the CI's kind, type, department and business; an example line of each."""
    if logs.num_rows == 0:
        return LOG_TEMPLATES_SCHEMA.empty_table()
    lines = pl.from_arrow(logs.select(["ts", "entity_id", "host", "app", "severity", "message"]))
    keys = ["hour", "entity_id", "host", "app", "severity", "template"]
    counted = (
        lines.with_columns(
            hour=pl.col("ts").dt.truncate("1h"),
            message=pl.col("message").fill_null(""),
        )
        .with_columns(template=template(pl.col("message")))
        .group_by(keys)
        .agg(
            count=pl.len(),
            first_ts=pl.col("ts").min(),
            last_ts=pl.col("ts").max(),
            example=pl.col("message").sort_by(["ts", "message"]).first(),
        )
    )
    ids = {t: template_id(t) for t in counted.get_column("template").unique().to_list()}
    ends = newest_versions(assets).drop("name")
    out = (
        counted.with_columns(
            template_id=pl.col("template").replace_strict(ids, return_dtype=pl.String),
            level=pl.col("severity").replace_strict(
                dict(enumerate(LEVELS)), default=None, return_dtype=pl.String
            ),
        )
        .join(ends, on="entity_id", how="left")
        .sort(keys, nulls_last=True)
    )
    return out.select(LOG_TEMPLATES_SCHEMA.names).to_arrow().cast(LOG_TEMPLATES_SCHEMA)


#: Edges the topology follows from a business's apps down to the hosts (and back up).
CHAIN_RELATIONS = frozenset({"depends_on", "runs_on"})


def reachable(
    edges: list[tuple[str, str]], starts: set[str], hops: int, *, down: bool = True
) -> set[str]:
    """Entities reached from ``starts`` over ``edges`` (src, dst) within ``hops``, going from
    src to dst (``down``) or back, ``starts`` included."""
    step: dict[str, set[str]] = {}
    for src, dst in edges:
        a, b = (src, dst) if down else (dst, src)
        step.setdefault(a, set()).add(b)
    seen, frontier = set(starts), set(starts)
    for _ in range(hops):
        frontier = {n for f in frontier for n in step.get(f, ())} - seen
        if not frontier:
            break
        seen |= frontier
    return seen
