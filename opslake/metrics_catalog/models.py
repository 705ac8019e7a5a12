"""Semantic models: the silver tables metric expressions are written over (like MetricFlow's).

Each model is one silver table joined to the CMDB as known at the end of the day, so every
row carries the entity's business, department, region, object kind and object type. A few
models add computed columns (ticket durations, asset days-to-expiry); :attr:`Model.lineage`
says which silver columns each model column comes from, which is how catalog lineage reaches
column level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from opslake.lake import schemas

#: CMDB attributes joined onto every row with an ``entity_id``: model column → assets column.
#: Pseudo-columns a measure (not a filter) may use: the bucket its row falls in, e.g. for
#: freshness as ``date_diff('second', ts, bucket_end)``.
BUCKET_COLUMNS = ("bucket_start", "bucket_end")

ENTITY_ATTRIBUTES = {
    "business": "business",
    "department": "department",
    "region": "region",
    "object_kind": "kind",
    "object_type": "type",
}

_DIMS = (
    "LEFT JOIN (SELECT entity_id AS _e, business AS _business, department AS _department, "
    "region AS _region, kind AS _kind, type AS _type FROM cmdb) c ON c._e = s.entity_id"
)
_DIM_COLUMNS = (
    "c._business AS business, c._department AS department, c._region AS region, "
    "c._kind AS object_kind, c._type AS object_type"
)


@dataclass(frozen=True)
class Model:
    """One semantic model: its silver table, time column, SQL and column lineage."""

    name: str
    table: str
    time_column: str
    sql: str
    description: str
    #: Snapshot models describe the state at the end of the day: daily grain only.
    snapshot: bool = False
    #: Sampled models report on a schedule, so a missing bucket is missing data; event
    #: models (alerts, logs, tickets) are quiet when nothing happens.
    sampled: bool = False
    #: Whether the CMDB attributes of a row are those of its entity (not of the row itself,
    #: as a ticket's own business is), so they can be joined after aggregating per entity.
    attributes_by_entity: bool = True
    #: Computed column → the silver columns it is made of (others map to themselves).
    computed: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def lineage(self, column: str) -> list[tuple[str, str]]:
        """(silver table, column) pairs that a model column is computed from."""
        if column in ENTITY_ATTRIBUTES and column not in schemas.SILVER[self.table].names:
            return [("assets", ENTITY_ATTRIBUTES[column]), (self.table, "entity_id")]
        return [(self.table, c) for c in self.computed.get(column, (column,))]


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model(
            "metric_points",
            "metric_points",
            "ts",
            f"SELECT s.ts, s.metric, s.entity_id, s.value, s.labels, s.source, {_DIM_COLUMNS} "
            f"FROM silver_metric_points s {_DIMS}",
            "Every metric sample with its entity's CMDB attributes.",
            sampled=True,
        ),
        Model(
            "events",
            "events",
            "starts_at",
            "SELECT s.event_id, s.fingerprint, s.source, s.status, s.severity, s.title, "
            "s.entity_id, s.labels, s.starts_at, s.ends_at, s.received_at, "
            "date_diff('second', s.starts_at, s.ends_at) / 60.0 AS duration_minutes, "
            f"{_DIM_COLUMNS} FROM silver_events s {_DIMS}",
            "Alert notifications (firing and resolved rows) by their start time.",
            computed={"duration_minutes": ("starts_at", "ends_at")},
        ),
        Model(
            "logs",
            "logs",
            "ts",
            "SELECT s.ts, s.entity_id, s.host, s.app, s.severity, s.facility, s.message, "
            f"s.source, {_DIM_COLUMNS} FROM silver_logs s {_DIMS}",
            "Log lines with RFC 5424 severity (0 emergency … 7 debug).",
        ),
        Model(
            "probes",
            "probes",
            "ts",
            "SELECT s.ts, s.probe_id, s.target, s.entity_id, s.kind, s.ok, "
            "CAST(s.ok AS DOUBLE) AS ok_ratio, s.latency_ms, s.status_code, s.error, "
            f"s.source, {_DIM_COLUMNS} FROM silver_probes s {_DIMS}",
            "Synthetic HTTP/TCP probe results; ok_ratio is 1.0 for a success, 0.0 otherwise.",
            sampled=True,
            computed={"ok_ratio": ("ok",)},
        ),
        Model(
            "tickets",
            "tickets",
            "opened_at",
            # One row per ticket (the one furthest in its lifecycle), as service levels do.
            "SELECT s.ticket_id, s.type, s.status, s.priority, "
            "coalesce(s.business, c._business) AS business, s.entity_id, s.opened_at, "
            "s.acknowledged_at, s.resolved_at, s.closed_at, s.assignee_group, "
            "s.sla_target_minutes, s.alert_fingerprint, s.change_window_start, "
            "s.change_window_end, s.change_result, "
            "CASE WHEN s.acknowledged_at >= s.opened_at THEN "
            "date_diff('second', s.opened_at, s.acknowledged_at) / 60.0 END "
            "AS minutes_to_acknowledge, "
            "CASE WHEN s.resolved_at >= s.opened_at THEN "
            "date_diff('second', s.opened_at, s.resolved_at) / 60.0 END AS minutes_to_resolve, "
            "CASE WHEN s.resolved_at >= s.opened_at AND s.sla_target_minutes IS NOT NULL THEN "
            "date_diff('second', s.opened_at, s.resolved_at) <= 60 * s.sla_target_minutes "
            "END AS sla_met, "
            "coalesce(c._department, bd.department) AS department, c._region AS region, "
            "c._kind AS object_kind, c._type AS object_type "
            f"FROM silver_tickets s {_DIMS} "
            "LEFT JOIN (SELECT business AS _b, min(department) AS department FROM cmdb "
            "WHERE business IS NOT NULL GROUP BY ALL) bd ON bd._b = coalesce(s.business, "
            "c._business) "
            "QUALIFY row_number() OVER (PARTITION BY s.ticket_id ORDER BY s.closed_at DESC "
            "NULLS LAST, s.resolved_at DESC NULLS LAST, s.acknowledged_at DESC NULLS LAST, "
            "s.status DESC) = 1",
            "ITSM tickets (incidents, requests, problems, changes) by opening time, one row "
            "per ticket; durations in minutes, null when negative (bad data).",
            attributes_by_entity=False,
            computed={
                "minutes_to_acknowledge": ("opened_at", "acknowledged_at"),
                "minutes_to_resolve": ("opened_at", "resolved_at"),
                "sla_met": ("opened_at", "resolved_at", "sla_target_minutes"),
            },
        ),
        Model(
            "assets",
            "assets",
            "as_of_ts",
            "SELECT s.entity_id, s.kind AS object_kind, s.type AS object_type, s.name, "
            "s.department, s.business, s.region, s.location, s.vendor, s.model, "
            "s.lifecycle_state, s.purchase_date, s.warranty_end, s.contract_end, "
            "s.licence_end, s.owner, CAST($day AS DATE) AS as_of, "
            "CAST($day AS TIMESTAMPTZ) AS as_of_ts, "
            "date_diff('day', CAST($day AS DATE), s.warranty_end) AS days_to_warranty_end, "
            "date_diff('day', CAST($day AS DATE), s.contract_end) AS days_to_contract_end, "
            "date_diff('day', CAST($day AS DATE), s.licence_end) AS days_to_licence_end "
            "FROM cmdb s",
            "The CMDB as known at the end of the day (current version of every CI); "
            "days_to_*_end count from the day to the date (negative once expired).",
            snapshot=True,
            sampled=True,
            computed={
                "object_kind": ("kind",),
                "object_type": ("type",),
                "as_of": (),
                "as_of_ts": (),
                "days_to_warranty_end": ("warranty_end",),
                "days_to_contract_end": ("contract_end",),
                "days_to_licence_end": ("licence_end",),
            },
        ),
    )
}


def register_models(
    con: duckdb.DuckDBPyConnection,
    silver: dict[str, pa.Table],
    cmdb: pa.Table,
    day: str,
    names: list[str] | None = None,
) -> None:
    """Create the model views on ``con`` over ``silver`` tables and the day's current CMDB.

    ``silver`` maps table names to Arrow tables (absent ones are registered empty) and
    ``cmdb`` holds the current version of each CI.
    """
    con.register("cmdb", cmdb)
    for name in names or list(MODELS):
        model = MODELS[name]
        if model.table != "assets":
            con.register(
                f"silver_{model.table}",
                silver.get(model.table, schemas.SILVER[model.table].empty_table()),
            )
        sql = model.sql.replace("$day", f"DATE '{day}'")
        con.execute(f'CREATE OR REPLACE TEMP VIEW "{model.name}" AS {sql}')


def model_columns(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, str]:
    """Column → DuckDB type of a registered model view."""
    return {row[0]: row[1] for row in con.execute(f'DESCRIBE "{name}"').fetchall()}


def current_rows(assets: pa.Table, as_of: datetime) -> pa.Table:
    """The version of each CI valid at ``as_of`` (CIs retired before then are left out)."""
    valid_from, valid_to = assets.column("valid_from"), assets.column("valid_to")
    alive = pc.and_(
        pc.less_equal(valid_from, pa.scalar(as_of, schemas.TS)),
        pc.or_kleene(pc.is_null(valid_to), pc.greater(valid_to, pa.scalar(as_of, schemas.TS))),
    )
    return assets.filter(alive)
