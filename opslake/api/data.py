"""The read API (``/v1``): catalog, metric data, incidents, anomalies, forecasts, assets, quality.

Every statement is a fixed template over the serving warehouse with bound parameters; names
a caller chooses (a metric, a breakdown, a filter column) are checked against the catalog
and a closed list first. Row scoping: a principal whose role is row-scoped (department
viewers) gets only rows of its departments or businesses, and a breakdown that mixes
departments (all, region, object kind or type) is refused rather than aggregated over others.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, BeforeValidator

from opslake.alerting.handling import HandlingLog, with_state
from opslake.api import statements
from opslake.api.auth import GUARDED, error_responses, requires
from opslake.api.statements import Statement, data_statement
from opslake.api.warehouse import WarehouseReader
from opslake.errors import ConfigError, Forbidden, NotFoundError, StorageError
from opslake.kpi import topology as topo
from opslake.kpi.ledger import CONTACT_CONTEXT
from opslake.metrics_catalog.compute import SCOPE_COLUMNS
from opslake.security.roles import SCOPED_BREAKDOWNS, Principal, row_scope_sql

router = APIRouter(prefix="/v1", tags=["data"])
Format = Literal["json", "csv", "arrow"]
ARROW_TYPE = "application/vnd.apache.arrow.stream"
ID = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,128}$")]
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso(value: object) -> object:
    """Only ISO 8601 text is a day or a time here; pydantic would also read a bare number
    (``day=1.5e9``) as Unix time, which the API description does not promise."""
    if isinstance(value, str) and not _ISO_DAY.match(value):
        raise ValueError("not an ISO 8601 date or time; give YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ")
    return value


#: A UTC day as ``YYYY-MM-DD``; a time as ISO 8601 (``2026-03-02T00:00:00Z``).
IsoDate = Annotated[date, BeforeValidator(_iso)]
IsoDateTime = Annotated[datetime, BeforeValidator(_iso)]


class Rows(BaseModel):
    """Rows as JSON (``format=json``); CSV and Arrow carry the same columns."""

    count: int
    rows: list[dict[str, Any]]


def _table(*codes: int) -> dict[int | str, dict]:
    """OpenAPI responses of an endpoint answering rows in the asked format."""
    return {
        200: {
            "model": Rows,
            "description": "The rows: JSON {count, rows} (format=json), "
            "CSV with a header line (format=csv) or an Arrow IPC stream (format=arrow)",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                ARROW_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **error_responses(*GUARDED, *codes),
    }


def _reader(request: Request) -> WarehouseReader:
    return request.app.state.warehouse


def _rows(
    request: Request, table: pa.Table, fmt: Format = "json", body: bytes | None = None
) -> Response:
    """The rows in the asked format (``body`` if already encoded); the count is audited."""
    request.state.rows = table.num_rows
    reader = _reader(request)
    if body is None:
        body = reader.derived(table, fmt, _ENCODERS[fmt])
    # Rows straight from a snapshot table may be answered again from the answer cache.
    generation = None if getattr(request.state, "volatile", False) else reader.served_from(table)
    request.state.answer = (body, _MEDIA_TYPES[fmt], generation)
    return Response(body, media_type=_MEDIA_TYPES[fmt])


def _arrow(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _csv(table: pa.Table) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=table.column_names)
    writer.writeheader()
    writer.writerows(table.to_pylist())
    return out.getvalue().encode()


def _json_rows(table: pa.Table) -> bytes:
    """``{"count", "rows"}``, with the values ``json.dumps`` writes of the rows as Python."""
    # Python objects cost 7 times the polars writer, which reads the Arrow columns directly.
    frame = _writable(table)
    if frame is None:
        rows = table.to_pylist()
        return json.dumps(
            {"count": len(rows), "rows": rows}, ensure_ascii=False, default=_json
        ).encode()
    out = io.BytesIO()
    out.write(b'{"count": %d, "rows": ' % table.num_rows)
    frame.write_json(out)
    out.write(b"}")
    return out.getvalue()


def _writable(table: pa.Table) -> pl.DataFrame | None:
    """``table`` for polars to write as JSON, or None if it would write other values."""
    # One select on the frame as read, casting only what needs it (float64 as it is).
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind, value = column.type, pl.col(name)
        if pa.types.is_floating(kind):
            if not pc.all(pc.is_finite(column), min_count=0).as_py():
                return None  # json.dumps writes NaN and Infinity, polars null
            if kind != pa.float64():
                # A float32's Python value is the double it widens to, which has more digits.
                value = value.cast(pl.Float64)
        elif pa.types.is_timestamp(kind) and kind.unit != "ns":
            value = _isoformat(value, kind.tz is not None)
        elif not _plain(kind):
            return None
        columns.append(value)
    return pl.from_arrow(table).select(columns)


def _isoformat(times: pl.Expr, zoned: bool) -> pl.Expr:
    """Timestamps as ``datetime.isoformat`` writes them: six digits of fraction or none."""
    # Polars itself would write the fraction in as few digits as it takes (".120").
    text = times.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f" + ("%:z" if zoned else ""))
    return text.str.replace(".000000", "", literal=True)


def _plain(kind: pa.DataType) -> bool:
    """Whether polars writes values of ``kind`` as ``json.dumps`` writes their Python ones."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_dictionary(kind):
        return _plain(kind.value_type)
    return (
        pa.types.is_boolean(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_date32(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_null(kind)
    )


_ENCODERS = {"json": _json_rows, "csv": _csv, "arrow": _arrow}
_MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8", "arrow": ARROW_TYPE}


def _json(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


async def _query(request: Request, sql: str, params: list[object]) -> pa.Table:
    return (await _read(request, sql, params, None))[0]


async def _answer(request: Request, statement: Statement, fmt: Format) -> Response:
    """The rows of ``statement`` in ``fmt``."""
    table, body = await _read(request, *statement, fmt)
    return _rows(request, table, fmt, body)


def _encoded(
    reader: WarehouseReader, sql: str, params: list[object], fmt: Format | None
) -> tuple[pa.Table, bytes | None]:
    table = reader.query(sql, params)
    return table, None if fmt is None else reader.derived(table, fmt, _ENCODERS[fmt])


async def _read(
    request: Request, sql: str, params: list[object], fmt: Format | None
) -> tuple[pa.Table, bytes | None]:
    """The statement's rows and, given ``fmt``, a new answer's body."""
    # Encoded by the worker thread that ran the statement: on the event loop, which every
    # request waits on, each call into polars and Arrow waits for the GIL behind the queries.
    reader = _reader(request)
    # The file's identity is read once per request: each stat lets the loop's GIL go.
    generation = getattr(request.state, "generation", None)
    if generation is None:
        generation = request.state.generation = reader.generation()
    if (hit := reader.cached(sql, params, generation)) is not None:
        return hit, None
    try:
        table, body = await run_in_threadpool(_encoded, reader, sql, params, fmt)
    except duckdb.CatalogException as exc:
        # A warehouse built before the pipeline produced this table (or from a partial run).
        raise NotFoundError(
            f"the serving warehouse lacks what this endpoint reads "
            f"({str(exc).splitlines()[0]}); run the daily pipeline, then "
            "`opslake warehouse build`"
        ) from exc
    except duckdb.IOException as exc:
        raise StorageError(
            f"the serving warehouse cannot read its files ({exc}); retry, or "
            "rebuild it with `opslake warehouse build`"
        ) from exc
    if reader.served_from(table) is None:  # not a snapshot answer: neither is the response
        request.state.volatile = True
    return table, body


@router.get("/catalog/metrics", summary="List or search the metrics catalog", responses=_table(404))
async def catalog_list(
    request: Request,
    _p: Annotated[Principal, Depends(requires("catalog:read"))],
    q: Annotated[
        str | None, Query(max_length=200, description="Text in id, names, description")
    ] = None,
    category: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
    format: Format = "json",
) -> Response:
    """Catalog metrics with their names, owner, unit, dimensions, grains and version."""
    return await _answer(request, statements.catalog(q, category, status), format)


async def _metric(request: Request, metric_id: str) -> dict:
    table = await _query(request, *statements.metric(metric_id))
    rows = _reader(request).derived(table, "rows", pa.Table.to_pylist)
    if not rows:
        raise NotFoundError(
            f"no metric {metric_id!r} in the catalog; list them with GET /v1/catalog/metrics"
        )
    return rows[0]


@router.get(
    "/catalog/metrics/{metric_id}",
    summary="One metric's definition",
    responses={
        200: {"model": dict[str, Any], "description": "The definition"},
        **error_responses(*GUARDED, 404),
    },
)
async def catalog_detail(
    request: Request, metric_id: ID, _p: Annotated[Principal, Depends(requires("catalog:read"))]
) -> Response:
    """The metric's definition as the catalog holds it now."""
    metric = await _metric(request, metric_id)
    request.state.rows = 1
    return Response(
        json.dumps(metric, ensure_ascii=False, default=_json), media_type="application/json"
    )


@router.get(
    "/catalog/metrics/{metric_id}/versions",
    summary="A metric's version history",
    responses=_table(404),
)
async def catalog_versions(
    request: Request,
    metric_id: ID,
    _p: Annotated[Principal, Depends(requires("catalog:read"))],
    format: Format = "json",
) -> Response:
    """Every recorded version: what changed, when and by whom."""
    await _metric(request, metric_id)
    return await _answer(request, statements.versions(metric_id), format)


@router.get(
    "/catalog/metrics/{metric_id}/lineage", summary="A metric's lineage", responses=_table(404)
)
async def catalog_lineage(
    request: Request,
    metric_id: ID,
    _p: Annotated[Principal, Depends(requires("catalog:read"))],
    format: Format = "json",
) -> Response:
    """Metric → input metrics → model columns → silver → bronze → landing."""
    await _metric(request, metric_id)
    return await _answer(request, statements.lineage(metric_id), format)


@router.get(
    "/metrics/{metric_id}/data", summary="A metric's values over time", responses=_table(400, 404)
)
async def metric_data(
    request: Request,
    metric_id: ID,
    principal: Annotated[Principal, Depends(requires("metrics:read"))],
    start: Annotated[IsoDateTime, Query(description="From (inclusive), ISO 8601")],
    end: Annotated[IsoDateTime, Query(description="To (exclusive), ISO 8601")],
    step: Annotated[
        str,
        Query(description="Grain the metric is computed at: 1h, 1d…", pattern=r"^[0-9]{1,3}[mhd]$"),
    ] = "1h",
    by: Annotated[
        str,
        Query(
            description="Breakdown: all, entity, business, department, "
            "region, object_kind, object_type"
        ),
    ] = "all",
    business: Annotated[str | None, Query(max_length=200)] = None,
    department: Annotated[str | None, Query(max_length=200)] = None,
    region: Annotated[str | None, Query(max_length=200)] = None,
    object_kind: Annotated[str | None, Query(max_length=40)] = None,
    object_type: Annotated[str | None, Query(max_length=40)] = None,
    entity_id: Annotated[str | None, Query(max_length=200)] = None,
    format: Format = "json",
) -> Response:
    """Values of one metric at one grain and breakdown, filtered by dimension values."""
    metric = await _metric(request, metric_id)
    start, end = _utc(start), _utc(end)
    if end <= start or end - start > timedelta(days=366):
        raise ConfigError(
            "the time range is empty or longer than a year; give start < end within 366 days"
        )
    if step not in metric["grains"]:
        raise ConfigError(
            f"{metric_id} is computed at {', '.join(metric['grains'])}, not "
            f"{step}; pick one of those as step"
        )
    if by not in [*metric["dimensions"], "all"]:
        raise ConfigError(
            f"{metric_id} can be broken down by all, {', '.join(metric['dimensions'])}, not {by!r}"
        )
    filters = {
        k: v
        for k, v in (
            ("business", business),
            ("department", department),
            ("region", region),
            ("object_kind", object_kind),
            ("object_type", object_type),
            ("entity_id", entity_id),
        )
        if v
    }
    allowed = SCOPE_COLUMNS.get(by, ())
    wrong = sorted(set(filters) - set(allowed))
    if wrong:
        raise ConfigError(
            f"filters {wrong} do not apply to the breakdown {by!r}; filter on "
            f"{', '.join(allowed) or 'nothing'} or choose another 'by'"
        )
    if principal.row_scoped and by not in SCOPED_BREAKDOWNS:
        raise Forbidden(
            f"the breakdown {by!r} mixes departments; as a department viewer "
            "use by=department, business or entity"
        )
    scope_sql, scope_params = row_scope_sql(principal, *SCOPED_BREAKDOWNS.get(by, (None, None)))
    sql, params = data_statement(metric_id, step, by, start, end, filters, scope_sql)
    return await _answer(request, (sql, [*params, *scope_params]), format)


def _utc(ts: datetime) -> datetime:
    try:
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+05:00 is before the first UTC instant
        raise ConfigError(
            f"{ts.isoformat()} is outside the years 1-9999 in UTC; give "
            "start and end as ISO 8601 times within them"
        ) from exc


def _departments(principal: Principal) -> frozenset[str] | None:
    """The departments a row-scoped principal's incidents must lie within (None: any)."""
    return principal.departments if principal.row_scoped else None


async def _day(request: Request, table: str, day: date | None) -> str:
    if day is not None:
        return day.isoformat()
    days = await _query(request, *statements.newest_dt(table))
    newest = days.column("d")[0].as_py()
    if newest is None:
        raise NotFoundError(f"{table} has no rows yet; run the daily pipeline")
    return str(newest)


@router.get("/incidents", summary="Incidents from alert convergence", responses=_table(404))
async def incidents(
    request: Request,
    principal: Annotated[Principal, Depends(requires("incidents:read"))],
    day: Annotated[IsoDate | None, Query(description="UTC day (default: the newest)")] = None,
    status: Literal["firing", "resolved"] | None = None,
    severity: Annotated[str | None, Query(max_length=20)] = None,
    live: Annotated[
        bool,
        Query(
            description="today's incidents as the live path converges them, within a minute "
            "of each alert landing (gold/incidents_live; day defaults to today, UTC), instead "
            "of the daily history"
        ),
    ] = False,
    format: Format = "json",
) -> Response:
    """The day's incidents with root cause and enrichment, and their handling as of now
    (handling_status, assignee, acknowledged and resolved by whom and when); department
    viewers see only incidents wholly within their departments."""
    source = statements.INCIDENT_TABLES[1 if live else 0]
    if live:
        dt = (day or datetime.now(UTC).date()).isoformat()
    else:
        dt = await _day(request, source, day)
    table = await _query(
        request, *statements.incidents(dt, status, severity, _departments(principal), source)
    )
    handling: HandlingLog = request.app.state.handling
    states = await run_in_threadpool(handling.states, table.column("incident_id").to_pylist())
    # Rows of this moment, not of the snapshot: never answered again from a cache.
    request.state.volatile = True
    return _rows(request, with_state(table, states), format)


@router.get(
    "/incidents/{incident_id}/alerts", summary="The alerts of one incident", responses=_table(404)
)
async def incident_alerts(
    request: Request,
    incident_id: Annotated[str, Path(pattern=r"^INC-[0-9a-f]{12}$")],
    principal: Annotated[Principal, Depends(requires("incidents:read"))],
    format: Format = "json",
) -> Response:
    """Every alert episode of the incident: fingerprint, occurrence, why muted, root cause."""
    table = await visible_incident(request, incident_id, principal)
    return await _answer(request, statements.incident_alerts(incident_id, table), format)


async def visible_incident(request: Request, incident_id: str, principal: Principal) -> str:
    """The table (daily or today's live incidents) ``incident_id`` is in if ``principal`` may
    see it (a department viewer: one wholly within its departments), else NotFoundError."""
    missing: list[NotFoundError] = []
    for table in statements.INCIDENT_TABLES:
        try:
            found = await _query(
                request, *statements.incident_exists(incident_id, _departments(principal), table)
            )
        except NotFoundError as exc:
            missing.append(exc)  # no daily (or no live) incidents in this warehouse yet
            continue
        if found.num_rows:
            return table
    if len(missing) == len(statements.INCIDENT_TABLES):
        raise missing[0]
    raise NotFoundError(f"no incident {incident_id} you may see; list them with GET /v1/incidents")


@router.get("/capacity", summary="When disks, pools and power fill up", responses=_table(404))
async def capacity(
    request: Request,
    _p: Annotated[Principal, Depends(requires("forecasts:read"))],
    entity_id: Annotated[str | None, Query(max_length=200)] = None,
    metric: Annotated[str | None, Query(max_length=200)] = None,
    format: Format = "json",
) -> Response:
    """The newest capacity run: exhaustion date, earliest date and days left per series."""
    dt = await _day(request, "capacity", None)
    return await _answer(request, statements.capacity(dt, entity_id, metric), format)


@router.get("/anomalies", summary="Anomalous points of a day", responses=_table(404))
async def anomalies(
    request: Request,
    _p: Annotated[Principal, Depends(requires("anomalies:read"))],
    day: Annotated[IsoDate | None, Query(description="UTC day (default: the newest)")] = None,
    entity_id: Annotated[str | None, Query(max_length=200)] = None,
    metric: Annotated[str | None, Query(max_length=200)] = None,
    events_only: bool = False,
    format: Format = "json",
) -> Response:
    """Points scoring at least the report floor, with the level expected."""
    dt = await _day(request, "anomalies", day)
    return await _answer(request, statements.anomalies(dt, entity_id, metric, events_only), format)


@router.get("/forecasts", summary="Forecasts with intervals", responses=_table(404))
async def forecasts(
    request: Request,
    _p: Annotated[Principal, Depends(requires("forecasts:read"))],
    entity_id: Annotated[str | None, Query(max_length=200)] = None,
    metric: Annotated[str | None, Query(max_length=200)] = None,
    format: Format = "json",
) -> Response:
    """The newest forecast run: point and 80/95 % bounds per series and hour ahead."""
    dt = await _day(request, "forecasts", None)
    return await _answer(request, statements.forecasts(dt, entity_id, metric), format)


@router.get("/quality/results", summary="Data-quality check results", responses=_table(404))
async def quality_results(
    request: Request,
    _p: Annotated[Principal, Depends(requires("quality:read"))],
    day: Annotated[IsoDate | None, Query(description="Checked day (default: the newest)")] = None,
    failed: bool = False,
    format: Format = "json",
) -> Response:
    """Each check of each table for a day: passed, observed value, threshold."""
    days = await _query(request, *statements.newest_quality_day())
    newest = days.column("d")[0].as_py()
    want = day.isoformat() if day else (str(newest) if newest else None)
    return await _answer(request, statements.quality(want, failed), format)


@router.get("/assets", summary="The asset ledger, with expiry filters", responses=_table(404))
async def assets(
    request: Request,
    principal: Annotated[Principal, Depends(requires("assets:read"))],
    kind: Annotated[str | None, Query(max_length=40)] = None,
    department: Annotated[str | None, Query(max_length=200)] = None,
    business: Annotated[str | None, Query(max_length=200)] = None,
    expiring_within_days: Annotated[
        int | None,
        Query(
            ge=0,
            le=3650,
            description="Warranty, contract or licence ends within this many days (or has ended)",
        ),
    ] = None,
    format: Format = "json",
) -> Response:
    """CIs in service with days to warranty, contract and licence end; owner contacts are
    decrypted (SM4) only for roles allowed to see personal data."""
    dt = await _day(request, "asset_ledger", None)
    table = await _query(
        request,
        *statements.assets(
            dt,
            kind,
            department,
            business,
            expiring_within_days,
            row_scope_sql(principal, "department", "business"),
        ),
    )
    sealed = table.column("owner_contact_sm4").to_pylist()
    cipher = request.app.state.cipher
    contacts = [
        cipher.decrypt(v, CONTACT_CONTEXT) if v and principal.sees_sensitive else None
        for v in sealed
    ]
    table = table.drop_columns(["owner_contact_sm4"]).append_column(
        "owner_contact", pa.array(contacts, pa.string())
    )
    return _rows(request, table, format)


def _now() -> datetime:
    return datetime.now(UTC)


def _edge_scope(principal: Principal) -> Statement:
    """The row scope of an edge: both of its ends within the principal's rows."""
    src_sql, src_params = row_scope_sql(principal, "src_department", "src_business")
    dst_sql, dst_params = row_scope_sql(principal, "dst_department", "dst_business")
    return src_sql + dst_sql, [*src_params, *dst_params]


Limit = Annotated[int, Query(ge=1, le=statements.MAX_ROWS, description="Rows per page")]
Offset = Annotated[
    int, Query(ge=0, le=2**31 - 1, description="Rows to skip (the next page: offset + limit)")
]


@router.get("/relations", summary="The topology at a time", responses=_table(400, 404))
async def relations(
    request: Request,
    principal: Annotated[Principal, Depends(requires("assets:read"))],
    as_of: Annotated[
        IsoDateTime | None, Query(description="Edges valid at this time (default: now)")
    ] = None,
    entity: Annotated[str | None, Query(max_length=200, description="Edges touching it")] = None,
    relation: Annotated[str | None, Query(max_length=40)] = None,
    limit: Limit = 1000,
    offset: Offset = 0,
    format: Format = "json",
) -> Response:
    """Relations (runs_on, depends_on, belongs_to, located_in, powered_by) valid at
    ``as_of``, with both ends' kind, type, name, department and business and the edge's
    valid_from / valid_to; department viewers get edges with both ends in their rows."""
    when = _utc(as_of) if as_of else _now()
    statement = statements.relations(when, entity, relation, _edge_scope(principal), limit, offset)
    if as_of is None:  # "now" moves: not an answer to keep
        request.state.volatile = True
        return _rows(request, await _query(request, *statement), format)
    return await _answer(request, statement, format)


@router.get("/logs", summary="Log lines counted per template and hour", responses=_table(400, 404))
async def logs(
    request: Request,
    principal: Annotated[Principal, Depends(requires("assets:read"))],
    entity: Annotated[str | None, Query(max_length=200)] = None,
    level: Annotated[
        Literal[statements.LOG_LEVELS] | None,  # type: ignore[valid-type]
        Query(description="This syslog level or more severe (err: emerg, alert, crit, err)"),
    ] = None,
    business: Annotated[str | None, Query(max_length=200)] = None,
    start: Annotated[IsoDateTime | None, Query(description="From this hour (inclusive)")] = None,
    end: Annotated[IsoDateTime | None, Query(description="Before this hour")] = None,
    limit: Limit = 1000,
    offset: Offset = 0,
    format: Format = "json",
) -> Response:
    """Per hour, entity, app, level and message template: the count, first and last time and
    an example line, with the CI's kind, type, department and business; newest hour first.
    Department viewers get the logs of their departments' and businesses' CIs."""
    statement = statements.logs(
        entity,
        level,
        business,
        _utc(start) if start else None,
        _utc(end) if end else None,
        row_scope_sql(principal, "department", "business"),
        limit,
        offset,
    )
    return await _answer(request, statement, format)


async def _dicts(request: Request, statement: Statement) -> dict[str, Any]:
    rows = (await _query(request, *statement)).to_pylist()
    return {"count": len(rows), "rows": rows}


@router.get(
    "/entities/{entity_id}",
    summary="One CI: attributes, neighbours, metrics, alerts, logs",
    responses={
        200: {"model": dict[str, Any], "description": "The entity and what surrounds it"},
        **error_responses(*GUARDED, 400, 404),
    },
)
async def entity(
    request: Request,
    entity_id: ID,
    principal: Annotated[Principal, Depends(requires("assets:read"))],
    as_of: Annotated[
        IsoDateTime | None, Query(description="Neighbours as of this time (default: now)")
    ] = None,
) -> Response:
    """The CI's ledger row (``entity``), its health now, its ``neighbours`` up and down the
    relation graph (business → app → service → VM → host; ``direction``, ``hops``), its
    newest hourly value of each metric, the firing incidents and alerts touching it, and its
    log templates of its last logged day with counts. Department viewers get 404 for CIs
    outside their departments and businesses, and neighbours only through their own CIs."""
    scope = row_scope_sql(principal, "department", "business")
    found = await _query(request, *statements.entity(entity_id, scope))
    if not found.num_rows:
        raise NotFoundError(
            f"no CI {entity_id!r} you may see in the asset ledger; find one with GET "
            "/v1/assets or GET /v1/relations"
        )
    when = _utc(as_of) if as_of else _now()
    departments = _departments(principal)
    health, neighbours, metrics, incidents, alerts, logs = await asyncio.gather(
        _dicts(request, statements.entity_health([entity_id])),
        _dicts(request, statements.neighbours(entity_id, when, _edge_scope(principal))),
        _dicts(request, statements.latest_metrics(entity_id)),
        _dicts(request, statements.entity_incidents(entity_id, departments)),
        _dicts(request, statements.entity_alerts(entity_id, departments)),
        _dicts(request, statements.recent_log_templates(entity_id)),
    )
    body = {
        "entity": found.to_pylist()[0],
        "health": health["rows"][0] if health["rows"] else None,
        "as_of": when,
        "neighbours": neighbours,
        "metrics": metrics,
        "incidents": incidents,
        "alerts": alerts,
        "logs": logs,
    }
    request.state.rows = 1 + sum(
        part["count"] for part in (neighbours, metrics, incidents, alerts, logs)
    )
    request.state.volatile = True
    return Response(
        json.dumps(body, ensure_ascii=False, default=_json), media_type="application/json"
    )


@router.get(
    "/topology",
    summary="Businesses down to hosts, with health now",
    responses={
        200: {"model": dict[str, Any], "description": "Nodes with health, and edges"},
        **error_responses(*GUARDED, 404),
    },
)
async def topology(
    request: Request,
    principal: Annotated[Principal, Depends(requires("assets:read"))],
    business: Annotated[str | None, Query(max_length=200)] = None,
    root: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")] = None,
) -> Response:
    """The current chain business → app → service → VM → host (runs_on and depends_on edges):
    ``nodes`` (CI attributes and newest health: score, status, firing alerts) and ``edges``.
    ``business`` keeps that business's CIs and what they run on; ``root`` keeps what lies
    above and below one CI. Department viewers get only their departments' and businesses'
    CIs and the edges between them."""
    scope = row_scope_sql(principal, "department", "business")
    dt = await _day(request, "asset_ledger", None)
    cis = await _query(request, *statements.assets(dt, None, None, None, None, scope))
    edges = await _query(request, *statements.relations(_now(), None, None, _edge_scope(principal)))
    pairs = [
        (e["src_entity_id"], e["dst_entity_id"])
        for e in edges.select(["src_entity_id", "relation", "dst_entity_id"]).to_pylist()
        if e["relation"] in topo.CHAIN_RELATIONS
    ]
    nodes = {
        r["entity_id"]: {
            k: r[k] for k in ("entity_id", "name", "kind", "type", "department", "business")
        }
        for r in cis.to_pylist()
    }
    keep = set(nodes)
    if business is not None:
        starts = {n for n, r in nodes.items() if r["business"] == business}
        keep = topo.reachable(pairs, starts, statements.NEIGHBOUR_HOPS)
    if root is not None:
        if root not in nodes:
            raise NotFoundError(f"no CI {root!r} you may see; pick one of /v1/topology's nodes")
        keep = topo.reachable(pairs, {root}, statements.NEIGHBOUR_HOPS) | topo.reachable(
            pairs, {root}, statements.NEIGHBOUR_HOPS, down=False
        )
    keep &= set(nodes)
    health = await _query(request, *statements.entity_health(keep))
    for row in health.to_pylist():
        nodes[row["entity_id"]]["health"] = row
    body = {
        "nodes": [{"health": None, **nodes[n]} for n in sorted(keep)],
        "edges": [{"src": s, "dst": d} for s, d in sorted(set(pairs)) if s in keep and d in keep],
    }
    request.state.rows = len(body["nodes"]) + len(body["edges"])
    request.state.volatile = True
    return Response(
        json.dumps(body, ensure_ascii=False, default=_json), media_type="application/json"
    )
