"""Conditions: the events a subscription yields from the serving warehouse after its cursor."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from opslake.security.roles import SCOPED_BREAKDOWNS, Principal, row_scope_sql
from opslake.subscriptions.model import (
    GRAIN_STEP,
    OPS,
    SCOPE_COLUMNS,
    Reader,
    Subscription,
    parse_ts,
    ts,
)

MAX_ROWS = 100_000


def _metric_rows(
    reader: Reader, tables: set[str], sub: Subscription, owner: Principal, start: datetime
) -> list[dict[str, Any]]:
    """Rows of the metric at or after ``start``: (series, bucket) once, daily rows winning."""
    if owner.row_scoped and sub.by not in SCOPED_BREAKDOWNS:
        return []
    dims = SCOPE_COLUMNS[sub.by]
    scope_sql, scope_params = row_scope_sql(owner, *SCOPED_BREAKDOWNS.get(sub.by, (None, None)))
    filters = {k: v for k, v in sub.filters.items() if k in dims}
    where = "".join(f" AND {c} = ?" for c in filters)
    columns = ", ".join(["bucket_start", *dims, "value"])
    out: dict[tuple[str, datetime], dict[str, Any]] = {}
    sources = ["metric_values_live", "metric_values"] if sub.grain == "1h" else ["metric_values"]
    for table in sources:  # later sources overwrite earlier ones: daily rows win
        if table not in tables:
            continue
        sql = (
            f"SELECT {columns} FROM {table} WHERE metric_id = ? AND grain = ? AND scope = ? "
            f"AND dt >= ? AND bucket_start >= ?{where}{scope_sql} "
            f"ORDER BY bucket_start LIMIT {MAX_ROWS}"
        )
        params = [
            sub.metric_id,
            sub.grain,
            sub.by,
            start.date().isoformat(),
            start,
            *filters.values(),
            *scope_params,
        ]
        for row in reader.query(sql, params).to_pylist():
            series = {c: row[c] for c in dims}
            key = "|".join("" if v is None else str(v) for v in series.values())
            out[(key, row["bucket_start"])] = {
                "series_key": key,
                "series": series,
                "bucket_start": row["bucket_start"],
                "value": row["value"],
                "source": table,
            }
    return sorted(out.values(), key=lambda r: (r["bucket_start"], r["series_key"]))


def _metric_events(
    reader: Reader,
    tables: set[str],
    sub: Subscription,
    owner: Principal,
    state: dict[str, Any],
    now: datetime,
) -> tuple[list[dict], dict]:
    since = parse_ts(sub.since)
    step = GRAIN_STEP[sub.grain]
    cursor = parse_ts(state["cursor"]) if state.get("cursor") else since
    start = max(since, cursor - step)  # re-read one bucket: late rows, recomputed hours
    series_state: dict[str, dict[str, Any]] = dict(state.get("series", {}))
    events: list[dict] = []
    for row in _metric_rows(reader, tables, sub, owner, start):
        bucket: datetime = row["bucket_start"]
        seen = series_state.get(row["series_key"], {})
        last = parse_ts(seen["bucket"]) if seen.get("bucket") else None
        if last is not None and bucket < last:
            continue  # older than what this series already answered
        base = {
            "subscription_id": sub.id,
            "condition": sub.kind,
            "metric_id": sub.metric_id,
            "grain": sub.grain,
            "by": sub.by,
            "series": row["series"],
            "bucket_start": ts(bucket),
            "value": row["value"],
            "detected_at": ts(now),
        }
        if sub.kind == "new_data":
            if last is None or bucket > last:
                events.append({**base, "event_key": f"new:{row['series_key']}:{ts(bucket)}"})
            series_state[row["series_key"]] = {"bucket": ts(bucket)}
        else:
            op, limit = sub.condition["op"], float(sub.condition["value"])
            holds = row["value"] is not None and OPS[op](float(row["value"]), limit)
            if holds and not seen.get("holds"):
                events.append(
                    {
                        **base,
                        "threshold": {"op": op, "value": limit},
                        "previous_value": seen.get("value"),
                        "event_key": f"threshold:{row['series_key']}:{ts(bucket)}",
                    }
                )
            series_state[row["series_key"]] = {
                "bucket": ts(bucket),
                "holds": holds,
                "value": row["value"],
            }
        cursor = max(cursor, bucket)
    return events, {"cursor": ts(cursor), "series": series_state}


def _anomaly_events(
    reader: Reader, tables: set[str], sub: Subscription, state: dict[str, Any], now: datetime
) -> tuple[list[dict], dict]:
    since = parse_ts(sub.since)
    cursor = parse_ts(state["cursor"]) if state.get("cursor") else since
    start = max(since, cursor - timedelta(hours=1))
    entity = sub.filters.get("entity_id")
    events = []
    for table in ("anomalies", "anomalies_live"):
        if table not in tables:
            continue
        rows = reader.query(
            f"SELECT ts, entity_id, metric, series, value, expected, score, explanation "
            f"FROM {table} WHERE metric = ? AND score >= ? AND dt >= ? AND ts >= ? AND "
            f"(?::VARCHAR IS NULL OR entity_id = ?) ORDER BY ts LIMIT {MAX_ROWS}",
            [
                sub.metric_id,
                float(sub.condition["min_score"]),
                start.date().isoformat(),
                start,
                entity,
                entity,
            ],
        ).to_pylist()
        for r in rows:
            events.append(
                {
                    "subscription_id": sub.id,
                    "condition": "anomaly",
                    "metric_id": sub.metric_id,
                    **{
                        k: r[k]
                        for k in (
                            "entity_id",
                            "series",
                            "value",
                            "expected",
                            "score",
                            "explanation",
                        )
                    },
                    "ts": ts(r["ts"]),
                    "detected_at": ts(now),
                    "event_key": f"anomaly:{r['series']}:{ts(r['ts'])}",
                }
            )
            cursor = max(cursor, r["ts"])
    return events, {"cursor": ts(cursor)}


def _quality_events(
    reader: Reader, tables: set[str], sub: Subscription, state: dict[str, Any], now: datetime
) -> tuple[list[dict], dict]:
    if "quality_results" not in tables:
        return [], state
    since = parse_ts(sub.since)
    first = state.get("day") or since.date().isoformat()
    f = sub.filters
    rows = reader.query(
        'SELECT day, layer, "table", "check", kind, severity, observed, threshold, '
        "unexpected_rows FROM quality_results WHERE NOT passed AND CAST(day AS VARCHAR) >= ? "
        'AND (?::VARCHAR IS NULL OR layer = ?) AND (?::VARCHAR IS NULL OR "table" = ?) '
        'AND (?::VARCHAR IS NULL OR severity = ?) ORDER BY day, layer, "table", "check" '
        f"LIMIT {MAX_ROWS}",
        [
            first,
            f.get("layer"),
            f.get("layer"),
            f.get("table"),
            f.get("table"),
            f.get("severity"),
            f.get("severity"),
        ],
    ).to_pylist()
    events, last = [], first
    for r in rows:
        day = r["day"].isoformat()
        last = max(last, day)
        events.append(
            {
                "subscription_id": sub.id,
                "condition": "quality_failed",
                **{
                    k: r[k]
                    for k in (
                        "layer",
                        "table",
                        "check",
                        "kind",
                        "severity",
                        "observed",
                        "threshold",
                        "unexpected_rows",
                    )
                },
                "day": day,
                "detected_at": ts(now),
                "event_key": f"quality:{day}:{r['layer']}.{r['table']}:{r['check']}",
            }
        )
    return events, {"day": last}


def _expiry_events(
    reader: Reader,
    tables: set[str],
    sub: Subscription,
    owner: Principal,
    state: dict[str, Any],
    now: datetime,
) -> tuple[list[dict], dict]:
    if "asset_ledger" not in tables:
        return [], state
    scope_sql, scope_params = row_scope_sql(owner, "department", "business")
    f = sub.filters
    days = int(sub.condition["within_days"])
    rows = reader.query(
        "SELECT dt, entity_id, name, kind, department, business, warranty_end, contract_end, "
        "licence_end, days_to_warranty_end, days_to_contract_end, days_to_licence_end "
        "FROM asset_ledger WHERE dt = (SELECT max(dt) FROM asset_ledger) "
        "AND (?::VARCHAR IS NULL OR kind = ?) AND (?::VARCHAR IS NULL OR department = ?) "
        "AND (?::VARCHAR IS NULL OR business = ?) AND (?::VARCHAR IS NULL OR entity_id = ?)"
        + scope_sql
        + f" ORDER BY entity_id LIMIT {MAX_ROWS}",
        [
            f.get("kind"),
            f.get("kind"),
            f.get("department"),
            f.get("department"),
            f.get("business"),
            f.get("business"),
            f.get("entity_id"),
            f.get("entity_id"),
            *scope_params,
        ],
    ).to_pylist()
    events = []
    for r in rows:
        for what in ("warranty", "contract", "licence"):
            left, end = r[f"days_to_{what}_end"], r[f"{what}_end"]
            if left is None or end is None or left > days:
                continue
            events.append(
                {
                    "subscription_id": sub.id,
                    "condition": "asset_expiry",
                    **{k: r[k] for k in ("entity_id", "name", "kind", "department", "business")},
                    "ends": what,
                    "end_date": end.isoformat(),
                    "days_left": left,
                    "as_of": str(r["dt"]),
                    "detected_at": ts(now),
                    "event_key": f"expiry:{r['entity_id']}:{what}:{end.isoformat()}",
                }
            )
    return events, state


def conditions(
    reader: Reader,
    tables: set[str],
    sub: Subscription,
    owner: Principal,
    state: dict[str, Any],
    now: datetime,
) -> tuple[list[dict], dict]:
    """The events ``sub`` yields after ``state``, and its next state."""
    if sub.kind in ("new_data", "threshold"):
        return _metric_events(reader, tables, sub, owner, state, now)
    if sub.kind == "anomaly":
        return _anomaly_events(reader, tables, sub, state, now)
    if sub.kind == "quality_failed":
        return _quality_events(reader, tables, sub, state, now)
    return _expiry_events(reader, tables, sub, owner, state, now)
