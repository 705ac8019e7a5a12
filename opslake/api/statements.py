"""The read statements over the serving warehouse, written once for the API and ``Lake.local``.

Each function returns ``(sql, params)``: a fixed template and its bound parameters. Nothing a
caller chooses is ever SQL text: values are parameters, and the only names spliced in (a
breakdown's dimension columns, filter columns, a table name) come from closed lists that the
caller checks first. Row scope conditions (``opslake.security.roles.row_scope_sql``, or the
departments of an incident) go last, so a principal that is not row-scoped runs the same
statement without them. This module imports neither FastAPI nor DuckDB: the analysts'
client uses it without the service.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import date, datetime, timedelta

from opslake.errors import InputError
from opslake.metrics_catalog.compute import SCOPE_COLUMNS

#: Most rows one statement returns.
MAX_ROWS = 100_000
#: Stands in for "no end date" when taking the soonest of warranty, contract, licence end.
_NO_END = 2147483647
#: Tables whose newest ``dt`` partition a call reads when no day is given.
NEWEST_DT_TABLES = frozenset(
    {"incidents_current", "anomalies", "forecasts", "capacity", "asset_ledger"}
)

Statement = tuple[str, list[object]]


def catalog(q: str | None, category: str | None, status: str | None) -> Statement:
    """Catalog metrics, optionally searched (id, names, description) and narrowed."""
    return (
        (
            "SELECT * FROM catalog_metrics WHERE (?::VARCHAR IS NULL OR category = ?) "
            "AND (?::VARCHAR IS NULL OR status = ?) AND (?::VARCHAR IS NULL OR contains(lower("
            "concat_ws(' ', metric_id, name_zh_cn, name_en, description)), lower(?))) "
            "ORDER BY metric_id"
        ),
        [category, category, status, status, q, q],
    )


def metric(metric_id: str) -> Statement:
    """One metric's catalog row."""
    return "SELECT * FROM catalog_metrics WHERE metric_id = ?", [metric_id]


def versions(metric_id: str) -> Statement:
    """A metric's version history, oldest first."""
    return ("SELECT * FROM catalog_versions WHERE metric_id = ? ORDER BY major, minor", [metric_id])


def lineage(metric_id: str) -> Statement:
    """A metric's lineage, nearest nodes first."""
    return (
        ('SELECT * FROM catalog_lineage WHERE metric_id = ? ORDER BY depth, node, "column"'),
        [metric_id],
    )


def data_statement(
    metric_id: str,
    step: str,
    by: str,
    start: datetime,
    end: datetime,
    filters: Mapping[str, str] | None = None,
    scope_sql: str = "",
) -> Statement:
    """The statement ``GET /v1/metrics/{id}/data`` runs, and its bound parameters (less
    those of ``scope_sql``, the row scope of :func:`row_scope_sql`, which go last)."""
    filters = filters or {}
    allowed = SCOPE_COLUMNS.get(by, ())
    columns = ", ".join(
        ["bucket_start", *allowed, "value", "numerator", "denominator", "metric_version"]
    )
    where = "".join(f" AND {c} = ?" for c in filters)
    sql = (
        f"SELECT {columns} FROM metric_values WHERE metric_id = ? AND grain = ? AND "
        "scope = ? AND dt BETWEEN ? AND ? AND bucket_start >= ? AND bucket_start < ?"
        f"{where}{scope_sql} ORDER BY bucket_start{''.join(', ' + c for c in allowed)} "
        f"LIMIT {MAX_ROWS}"
    )
    last_day = (end - timedelta(microseconds=1)).date().isoformat()
    return sql, [
        metric_id,
        step,
        by,
        start.date().isoformat(),
        last_day,
        start,
        end,
        *filters.values(),
    ]


def newest_dt(table: str) -> Statement:
    """The newest ``dt`` of ``table`` (column ``d``), for calls that default to it."""
    if table not in NEWEST_DT_TABLES:
        # The name is spliced into the statement: only the closed list may be.
        raise InputError(
            f"{table!r} has no newest-day statement; use one of {sorted(NEWEST_DT_TABLES)}"
        )
    return f'SELECT max(dt) AS d FROM "{table}"', []


def _departments(departments: Collection[str] | None) -> Statement:
    """Only incidents every department of which is one of ``departments`` (None: any)."""
    if departments is None:
        return "", []
    return (
        " AND len(departments) > 0 AND list_has_all(?::VARCHAR[], departments)",
        [sorted(departments)],
    )


def incidents(
    dt: str,
    status: str | None,
    severity: str | None,
    departments: Collection[str] | None = None,
    table: str = "incidents_current",
) -> Statement:
    """A day's incidents in ``table`` (one of ``INCIDENT_TABLES``); with ``departments``, only
    those wholly within them."""
    _incident_table(table)
    scope, scope_params = _departments(departments)
    return (
        f'SELECT * EXCLUDE (dt) FROM "{table}" WHERE dt = ? AND (?::VARCHAR IS NULL '
        "OR status = ?) AND (?::VARCHAR IS NULL OR severity = ?)"
        + scope
        + " ORDER BY started_at, incident_id",
        [dt, status, status, severity, severity, *scope_params],
    )


#: Where an incident can be: the daily history, then today's live incidents; and where the
#: alerts of each are.
INCIDENT_TABLES = ("incidents_current", "incidents_live")
ALERT_TABLES = dict(zip(INCIDENT_TABLES, ("incident_alerts_current", "incident_alerts_live")))


def _incident_table(table: str) -> None:
    if table not in INCIDENT_TABLES:
        # The name is spliced into the statement: only the closed list may be.
        raise InputError(f"{table!r} holds no incidents; use one of {list(INCIDENT_TABLES)}")


def incident_exists(
    incident_id: str, departments: Collection[str] | None = None, table: str = "incidents_current"
) -> Statement:
    """One row when the incident exists in ``table`` (one of ``INCIDENT_TABLES``), within
    ``departments`` when given."""
    _incident_table(table)
    scope, scope_params = _departments(departments)
    return (
        f'SELECT 1 AS x FROM "{table}" WHERE incident_id = ?' + scope,
        [incident_id, *scope_params],
    )


def incident_alerts(incident_id: str, table: str = "incidents_current") -> Statement:
    """The alert episodes an incident of ``table`` (one of ``INCIDENT_TABLES``) converged."""
    _incident_table(table)
    return (
        (
            f'SELECT * EXCLUDE (dt) FROM "{ALERT_TABLES[table]}" WHERE incident_id = ? '
            "ORDER BY starts_at, alert_id"
        ),
        [incident_id],
    )


def anomalies(dt: str, entity_id: str | None, metric: str | None, events_only: bool) -> Statement:
    """A day's anomalous points, optionally of one entity or metric, or events only."""
    return (
        (
            "SELECT * EXCLUDE (dt) FROM anomalies WHERE dt = ? AND (?::VARCHAR IS NULL OR "
            "entity_id = ?) AND (?::VARCHAR IS NULL OR metric = ?) AND (NOT ? OR is_event) "
            f"ORDER BY ts, series LIMIT {MAX_ROWS}"
        ),
        [dt, entity_id, entity_id, metric, metric, events_only],
    )


def forecasts(dt: str, entity_id: str | None, metric: str | None) -> Statement:
    """A forecast run's points and bounds, optionally of one entity or metric."""
    return (
        (
            "SELECT * EXCLUDE (dt) FROM forecasts WHERE dt = ? AND (?::VARCHAR IS NULL OR "
            "entity_id = ?) AND (?::VARCHAR IS NULL OR metric = ?) "
            f"LIMIT {MAX_ROWS}"
        ),
        [dt, entity_id, entity_id, metric, metric],
    )


def capacity(dt: str, entity_id: str | None, metric: str | None) -> Statement:
    """A capacity run, soonest to fill first."""
    return (
        (
            "SELECT * EXCLUDE (dt) FROM capacity WHERE dt = ? AND (?::VARCHAR IS NULL OR "
            "entity_id = ?) AND (?::VARCHAR IS NULL OR metric = ?) "
            f"ORDER BY days_left NULLS LAST, entity_id, metric LIMIT {MAX_ROWS}"
        ),
        [dt, entity_id, entity_id, metric, metric],
    )


def assets(
    dt: str,
    kind: str | None,
    department: str | None,
    business: str | None,
    expiring_within_days: int | None,
    scope: Statement = ("", []),
) -> Statement:
    """The asset ledger of ``dt`` (owner contacts still sealed), with the row ``scope``."""
    scope_sql, scope_params = scope
    return (
        "SELECT * EXCLUDE (dt) FROM asset_ledger WHERE dt = ? AND (?::VARCHAR IS NULL OR "
        "kind = ?) AND (?::VARCHAR IS NULL OR department = ?) AND (?::VARCHAR IS NULL OR "
        "business = ?) AND (?::INTEGER IS NULL OR least(coalesce(days_to_warranty_end, "
        f"{_NO_END}), coalesce(days_to_contract_end, {_NO_END}), "
        f"coalesce(days_to_licence_end, {_NO_END})) <= ?)"
        + scope_sql
        + f" ORDER BY entity_id LIMIT {MAX_ROWS}",
        [
            dt,
            kind,
            kind,
            department,
            department,
            business,
            business,
            expiring_within_days,
            expiring_within_days,
            *scope_params,
        ],
    )


def newest_quality_day() -> Statement:
    """The newest checked day of the quality results (column ``d``)."""
    return "SELECT max(day) AS d FROM quality_results", []


def quality(day: str | date | None, failed: bool) -> Statement:
    """A checked day's quality results (``failed``: only failures)."""
    want = day.isoformat() if isinstance(day, date) else day
    return (
        (
            "SELECT * FROM quality_results WHERE CAST(day AS VARCHAR) = ? AND (NOT ? OR NOT "
            'passed) ORDER BY layer, "table", "check"'
        ),
        [want, failed],
    )


#: The topology: the newest partition of gold relations holds the whole edge history.
_EDGES = (
    "SELECT * EXCLUDE (dt) FROM relations WHERE dt = (SELECT max(dt) FROM relations) "
    "AND (valid_from IS NULL OR valid_from <= ?) AND (valid_to IS NULL OR valid_to > ?)"
)
#: How many hops up and down the graph an entity's neighbours reach.
NEIGHBOUR_HOPS = 4


def relations(
    as_of: datetime,
    entity_id: str | None,
    relation: str | None,
    scope: Statement = ("", []),
    limit: int = MAX_ROWS,
    offset: int = 0,
) -> Statement:
    """Edges valid at ``as_of`` (optionally touching ``entity_id``, of one ``relation``),
    within the row ``scope`` (on both ends' columns); one page of them."""
    scope_sql, scope_params = scope
    return (
        (
            f"{_EDGES} AND (?::VARCHAR IS NULL OR ? IN (src_entity_id, dst_entity_id)) "
            f"AND (?::VARCHAR IS NULL OR relation = ?){scope_sql} "
            "ORDER BY src_entity_id, relation, dst_entity_id, valid_from LIMIT ? OFFSET ?"
        ),
        [
            as_of,
            as_of,
            entity_id,
            entity_id,
            relation,
            relation,
            *scope_params,
            min(limit, MAX_ROWS),
            offset,
        ],
    )


def neighbours(entity_id: str, as_of: datetime, scope: Statement = ("", [])) -> Statement:
    """The edges reached from ``entity_id`` going down (to what it runs on and depends on)
    and up (to what runs on or depends on it), up to ``NEIGHBOUR_HOPS`` hops, at ``as_of``,
    through edges within the row ``scope``; ``direction`` and ``hops`` say how."""
    scope_sql, scope_params = scope

    def walk(name: str, start: str, end: str) -> str:
        return (
            f"{name}(entity_id, hops, path) AS (SELECT ?::VARCHAR, 0, [?::VARCHAR] UNION ALL "
            f"SELECT e.{end}, w.hops + 1, list_append(w.path, e.{end}) FROM {name} w "
            f"JOIN e ON e.{start} = w.entity_id WHERE w.hops < {NEIGHBOUR_HOPS} "
            f"AND NOT list_contains(w.path, e.{end}))"
        )

    return (
        (
            f"WITH RECURSIVE e AS ({_EDGES}{scope_sql}), "
            f"{walk('down', 'src_entity_id', 'dst_entity_id')}, "
            f"{walk('up', 'dst_entity_id', 'src_entity_id')} "
            "SELECT DISTINCT 'down' AS direction, w.hops + 1 AS hops, e.* FROM down w "
            f"JOIN e ON e.src_entity_id = w.entity_id WHERE w.hops < {NEIGHBOUR_HOPS} "
            "UNION SELECT DISTINCT 'up', w.hops + 1, e.* FROM up w "
            f"JOIN e ON e.dst_entity_id = w.entity_id WHERE w.hops < {NEIGHBOUR_HOPS} "
            "ORDER BY direction, hops, src_entity_id, relation, dst_entity_id"
        ),
        [as_of, as_of, *scope_params, entity_id, entity_id, entity_id, entity_id],
    )


def entity(entity_id: str, scope: Statement = ("", [])) -> Statement:
    """The CI's row in the newest asset ledger (owner contact left out), within ``scope``."""
    scope_sql, scope_params = scope
    return (
        "SELECT * EXCLUDE (dt, owner_contact_sm4) FROM asset_ledger WHERE dt = "
        "(SELECT max(dt) FROM asset_ledger) AND entity_id = ?" + scope_sql,
        [entity_id, *scope_params],
    )


def entity_health(entity_ids: Collection[str]) -> Statement:
    """The newest hourly health (score, status, reason) of each of ``entity_ids``."""
    return (
        (
            "SELECT entity_id, hour, health_score, status, firing_alerts, worst_severity, reason "
            "FROM entity_health WHERE dt = (SELECT max(dt) FROM entity_health) AND "
            "list_contains(?::VARCHAR[], entity_id) QUALIFY row_number() OVER "
            "(PARTITION BY entity_id ORDER BY hour DESC) = 1 ORDER BY entity_id"
        ),
        [sorted(entity_ids)],
    )


def latest_metrics(entity_id: str) -> Statement:
    """Each metric's newest hourly roll-up of the entity (last, average, p95 of the hour)."""
    return (
        (
            "SELECT metric, bucket_start, last, avg, p95, samples FROM metric_rollup_1h WHERE "
            "dt = (SELECT max(dt) FROM metric_rollup_1h WHERE entity_id = ?) AND entity_id = ? "
            "QUALIFY row_number() OVER (PARTITION BY metric ORDER BY bucket_start DESC) = 1 "
            "ORDER BY metric"
        ),
        [entity_id, entity_id],
    )


def entity_incidents(entity_id: str, departments: Collection[str] | None = None) -> Statement:
    """The newest day's firing incidents touching the entity (within ``departments``)."""
    scope, scope_params = _departments(departments)
    return (
        "SELECT incident_id, title, status, severity, started_at, updated_at, alert_count, "
        "root_cause FROM incidents_current WHERE dt = (SELECT max(dt) FROM incidents_current) "
        "AND status = 'firing' AND list_contains(entities, ?)"
        + scope
        + " ORDER BY started_at, incident_id",
        [entity_id, *scope_params],
    )


def entity_alerts(entity_id: str, departments: Collection[str] | None = None) -> Statement:
    """The entity's alerts still firing in the newest day's incidents (within
    ``departments``: only alerts of incidents wholly within them)."""
    scope, scope_params = _departments(departments)
    return (
        "SELECT a.incident_id, a.alert_id, a.alertname, a.severity, a.title, a.starts_at, "
        "a.occurrence, a.is_root_cause FROM incident_alerts_current a JOIN incidents_current "
        "i USING (incident_id) WHERE i.dt = (SELECT max(dt) FROM incidents_current) AND "
        "i.status = 'firing' AND a.ends_at IS NULL AND a.entity_id = ?"
        + scope
        + " ORDER BY a.starts_at, a.alert_id",
        [entity_id, *scope_params],
    )


#: Log levels (syslog keywords), most severe first: ``level=err`` also answers crit and worse.
LOG_LEVELS = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def logs(
    entity_id: str | None,
    level: str | None,
    business: str | None,
    start: datetime | None,
    end: datetime | None,
    scope: Statement = ("", []),
    limit: int = MAX_ROWS,
    offset: int = 0,
) -> Statement:
    """Hourly log template counts, newest hour first, of ``level`` or more severe; a page."""
    scope_sql, scope_params = scope
    worst = None if level is None else LOG_LEVELS.index(level)
    return (
        "SELECT * EXCLUDE (dt) FROM logs WHERE (?::VARCHAR IS NULL OR entity_id = ?) AND "
        "(?::INTEGER IS NULL OR severity <= ?) AND (?::VARCHAR IS NULL OR business = ?) AND "
        "(?::TIMESTAMPTZ IS NULL OR hour >= ?) AND (?::TIMESTAMPTZ IS NULL OR hour < ?)"
        + scope_sql
        + " ORDER BY hour DESC, entity_id, severity, count DESC, template_id LIMIT ? OFFSET ?",
        [
            entity_id,
            entity_id,
            worst,
            worst,
            business,
            business,
            start,
            start,
            end,
            end,
            *scope_params,
            min(limit, MAX_ROWS),
            offset,
        ],
    )


#: How far back an entity's recent log templates go from its newest logged hour.
RECENT_LOG_HOURS = 24


def recent_log_templates(entity_id: str, scope: Statement = ("", [])) -> Statement:
    """The entity's templates over its last logged day, most frequent first, with counts."""
    scope_sql, scope_params = scope
    return (
        "SELECT template_id, template, level, min(severity) AS severity, sum(count)::BIGINT AS count, "
        "max(last_ts) AS last_ts, arg_max(example, last_ts) AS example FROM logs WHERE "
        "entity_id = ? AND hour > (SELECT max(hour) FROM logs WHERE entity_id = ?) - "
        f"INTERVAL {RECENT_LOG_HOURS} HOUR" + scope_sql + " GROUP BY template_id, template, "
        "level ORDER BY count DESC, template_id LIMIT 50",
        [entity_id, entity_id, *scope_params],
    )
