"""Subscriptions: a client is told when a metric gets new data, crosses a threshold, turns
anomalous, when a quality check fails or an asset nears expiry (S6.2f).

A subscription names what to watch (a catalog metric at a grain and breakdown with dimension
filters, the anomalies of a raw metric, failing quality checks, expiring assets), a condition
and a delivery:

- **webhook**: the event JSON POSTed with ``X-OpsLake-Timestamp: <unix seconds>`` and
  ``X-OpsLake-Signature: sm3=<hex HMAC-SM3(secret, "timestamp.body")>`` (plus
  ``X-OpsLake-Subscription`` and ``X-OpsLake-Event``, the event key for de-duplication);
  any 2xx answer acknowledges it. The destination must be on the administrator's egress
  allow-list (:mod:`opslake.security.egress`), checked at creation and again at each
  delivery, which connects to the address that check passed and follows no redirect; the
  delivery log records only the status code and a fixed reason, never the receiver's answer;
- **mqtt**: published QoS 1 to ``opslake-out/subscriptions/<id>`` on the broker of
  ``OPSLAKE_MQTT_BROKER`` (``host:port``) as ``{"timestamp", "signature", "event_key",
  "body"}`` where ``body`` is the same JSON text a webhook gets and the signature covers
  ``"timestamp.body"`` the same way; the broker's PUBACK acknowledges it;
- **sse**: events are buffered per subscription and ``GET /v1/subscriptions/{id}/events``
  streams them (``id:`` is the log sequence, so a client resumes with ``Last-Event-ID``).

The secret (given or generated at creation, shown once) is kept SM4-encrypted when the store
is given a cipher, and never returned by a listing.

Everything lives in one SQLite file, ``state_dir/subscriptions.db``: the subscriptions (a
deleted one is kept, marked deleted, so its log still reads), each subscription's cursor
and per-series state, and the **delivery log**, append-only (triggers refuse UPDATE and
DELETE): a ``queued`` record carries an event's document; ``sent``, ``failed`` (with
``next_attempt_at``), ``buffered`` (SSE) and ``expired`` records follow it. An event's state
is its latest record. Events and the cursor that passed them are written in one transaction,
and a unique index allows one ``queued`` record per (subscription, event key), so a
re-evaluation never queues an event twice and a crash never loses one.

:func:`evaluate` runs one pass: for each live subscription, read the rows after its cursor
from the serving warehouse (fixed templates, bound parameters only; ``metric_values`` and,
at the hourly grain, ``metric_values_live`` where the warehouse serves it, the daily rows
winning), restricted to the owner's rows when the owner's role is row-scoped; queue what the
condition yields; then deliver what is due. A delivery that fails is tried again in the same
pass after short pauses, then on later passes at ``next_attempt_at`` with exponential
backoff (30 s doubling, at most 10 min); after :data:`GIVE_UP_AFTER` it is ``expired``.
Delivery is at least once: a receiver de-duplicates on the event key.

Conditions, and which events they produce (each event key is stable, so re-reading is safe):

- ``new_data``: each (series, bucket) of the metric the first time it is seen at or after
  the subscription's start (the bucket in progress counts: its first value is news);
- ``threshold`` (``op`` one of ``> < >= <=``, ``value``): a series whose value enters the
  condition (it did not hold for the series' previous value, or the series is new);
- ``anomaly`` (``min_score``): anomalies (``anomalies``/``anomalies_live``) of the raw metric
  ``metric_id`` (optionally one ``entity_id``) scoring at least ``min_score``;
- ``quality_failed``: each failing check of ``quality_results`` per checked day;
- ``asset_expiry`` (``within_days``): each CI of the newest ``asset_ledger`` whose warranty,
  contract or licence ends within that many days (once per end date).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx

from opslake.crypto import hmac_sm3
from opslake.errors import ConfigError, InputError, NotFoundError, OpsLakeError
from opslake.lake.state_db import StateDB
from opslake.metrics_catalog.compute import SCOPE_COLUMNS as CATALOG_SCOPES
from opslake.security.egress import EgressPolicy, EgressRefused
from opslake.security.roles import ROLES, SCOPED_BREAKDOWNS, Principal, row_scope_sql
from opslake.settings import Settings

DB_FILE = "subscriptions.db"
LOCK_FILE = "subscriptions.lock"
SECRET_CONTEXT = "subscriptions.secret"
BROKER_ENV = "OPSLAKE_MQTT_BROKER"
#: Outside ``opslake/#``, which the service's own MQTT listener ingests.
TOPIC_PREFIX = "opslake-out/subscriptions"
SIGNATURE_HEADER = "X-OpsLake-Signature"
TIMESTAMP_HEADER = "X-OpsLake-Timestamp"
#: In-pass retry pauses (seconds) before a delivery is left for a later pass.
RETRY_PAUSES = (0.5, 1.0)
BASE_BACKOFF_S = 30
MAX_BACKOFF_S = 600
#: A delivery still failing this long after it was queued is given up (``expired``).
GIVE_UP_AFTER = timedelta(days=7)
TIMEOUT_S = 5.0
MAX_ROWS = 100_000
OPS = {">": lambda a, b: a > b, "<": lambda a, b: a < b, ">=": lambda a, b: a >= b,
       "<=": lambda a, b: a <= b}
CONDITIONS = ("new_data", "threshold", "anomaly", "quality_failed", "asset_expiry")
DELIVERIES = ("webhook", "mqtt", "sse")
#: Scope the owner needs for each condition's data.
NEEDS = {"new_data": "metrics:read", "threshold": "metrics:read", "anomaly": "anomalies:read",
         "quality_failed": "quality:read", "asset_expiry": "assets:read"}
#: Breakdowns and the dimension columns each carries (``all``: none).
SCOPE_COLUMNS = {"all": (), **CATALOG_SCOPES}
GRAIN_STEP = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
FILTERS = {"anomaly": ("entity_id",), "quality_failed": ("layer", "table", "severity"),
           "asset_expiry": ("kind", "department", "business", "entity_id")}
ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
logger = logging.getLogger(__name__)


class DeliveryError(OpsLakeError):
    """A receiver refused or could not be reached; the delivery is retried later."""


class Reader(Protocol):
    """What the evaluator needs of the serving warehouse (``WarehouseReader``)."""

    def query(self, sql: str, params: Sequence[object] = ()) -> Any: ...

    def tables(self) -> set[str]: ...


def ts(moment: datetime) -> str:
    """A UTC instant as fixed-width text (sorts as it compares)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _json(value: object) -> object:
    if isinstance(value, datetime):
        return ts(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def canonical(doc: Mapping[str, object]) -> str:
    """The JSON text of an event document (sorted keys, no spaces): what is signed."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_json)


def sign(secret: str, timestamp: int | str, body: str) -> str:
    """``sm3=<hex HMAC-SM3(secret, "timestamp.body")>``."""
    return "sm3=" + hmac_sm3(secret.encode(), f"{timestamp}.{body}".encode())


def verify(secret: str, timestamp: str, body: str, signature: str, *,
           max_age_s: float = 300.0, now: float | None = None) -> bool:
    """Whether a delivery is authentic and fresh (for receivers written in Python)."""
    import hmac

    if not str(timestamp).isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff(failures: int) -> timedelta:
    """Wait before the next pass tries again after ``failures`` failed passes (1, 2, …)."""
    return timedelta(seconds=min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2 ** max(0, failures - 1)))


# --- the model ----------------------------------------------------------------------------


@dataclass
class Subscription:
    """What to watch, when to tell, where to deliver; ``owner`` the user it acts for."""

    id: str
    owner: str
    condition: dict[str, Any]
    delivery: dict[str, Any]
    metric_id: str | None = None
    grain: str = "1h"
    by: str = "all"
    filters: dict[str, str] = field(default_factory=dict)
    #: The owner's role, scopes, departments and businesses when it subscribed.
    principal: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    created_at: str = ""
    since: str = ""
    deleted_at: str | None = None

    @property
    def kind(self) -> str:
        return str(self.condition.get("type"))

    @property
    def topic(self) -> str:
        return f"{TOPIC_PREFIX}/{self.id}"

    def public(self) -> dict[str, Any]:
        """The subscription as the API and the CLI show it: no secret."""
        doc = asdict(self)
        if self.delivery.get("type") == "mqtt":
            doc["delivery"] = {**self.delivery, "topic": self.topic}
        return doc

    def owner_principal(self) -> Principal:
        """The owner as it subscribed (the evaluator may narrow it to its current role)."""
        p = self.principal
        return Principal(self.owner, str(p.get("role", "")), frozenset(p.get("scopes", ())),
                         frozenset(p.get("departments", ())), frozenset(p.get("businesses", ())))


def _floor(moment: datetime, grain: str) -> datetime:
    moment = moment.astimezone(UTC)
    if grain == "1d":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def new_subscription(owner: Principal, spec: Mapping[str, Any], now: datetime,
                     catalog: Reader | None = None, *, egress: EgressPolicy | None = None
                     ) -> tuple[Subscription, str]:
    """Validate ``spec`` for ``owner``; the subscription and its secret (shown once).

    ``spec`` holds ``condition`` and ``delivery`` dicts, ``metric_id``, ``grain``, ``by``,
    ``filters``, ``name`` and optionally ``secret``. With ``catalog`` (the warehouse) a
    metric condition's metric, grain and breakdown are checked against the catalog. A
    webhook's URL must pass ``egress`` (by default the policy of the environment's settings).
    """
    condition = dict(spec.get("condition") or {})
    kind = condition.get("type")
    if kind not in CONDITIONS:
        raise InputError(f"condition.type {kind!r} is unknown; use one of {list(CONDITIONS)}")
    if not owner.allows(NEEDS[kind]):
        raise InputError(f"a {kind} subscription reads data that needs the scope "
                         f"{NEEDS[kind]}, which {owner.user} lacks; pick another condition")
    if kind == "threshold":
        if condition.get("op") not in OPS:
            raise InputError(f"threshold op {condition.get('op')!r} is unknown; use one of "
                             f"{list(OPS)}")
        condition = {"type": kind, "op": condition["op"],
                     "value": _number(condition.get("value"), "threshold value")}
    elif kind == "anomaly":
        condition = {"type": kind,
                     "min_score": _number(condition.get("min_score", 0.0), "min_score")}
    elif kind == "asset_expiry":
        days = condition.get("within_days", 30)
        if not isinstance(days, int) or isinstance(days, bool) or not 0 <= days <= 3650:
            raise InputError("asset_expiry within_days must be a whole number of days, 0-3650")
        condition = {"type": kind, "within_days": days}
    else:
        condition = {"type": kind}
    metric_id = spec.get("metric_id") or None
    grain, by = str(spec.get("grain") or "1h"), str(spec.get("by") or "all")
    filters = {str(k): str(v) for k, v in (spec.get("filters") or {}).items() if v}
    if kind in ("new_data", "threshold", "anomaly") and (
            not metric_id or not set(str(metric_id)) <= ID_CHARS or len(metric_id) > 128):
        raise InputError(f"a {kind} subscription needs metric_id (letters, digits, _ . -)")
    if kind in ("new_data", "threshold"):
        if grain not in GRAIN_STEP:
            raise InputError(f"grain {grain!r} is not served; use one of {list(GRAIN_STEP)}")
        if by not in SCOPE_COLUMNS:
            raise InputError(f"by {by!r} is not a breakdown; use one of {list(SCOPE_COLUMNS)}")
        allowed = SCOPE_COLUMNS[by]
        if owner.row_scoped and by not in SCOPED_BREAKDOWNS:
            raise InputError(f"the breakdown {by!r} mixes departments; as a department viewer "
                             "use by=department, business or entity")
        if catalog is not None:
            _check_catalog(catalog, str(metric_id), grain, by)
    else:
        by, grain = "all", "1h"
        allowed = FILTERS[kind]
        if kind != "anomaly":
            metric_id = None
    if wrong := sorted(set(filters) - set(allowed)):
        raise InputError(f"filters {wrong} do not apply here; filter on "
                         f"{', '.join(allowed) or 'nothing'}")
    delivery = dict(spec.get("delivery") or {})
    channel = delivery.get("type")
    if channel == "webhook":
        url = str(delivery.get("url") or "")
        if len(url) > 2000:
            raise InputError("a webhook url has at most 2000 characters; shorten it")
        (egress or EgressPolicy.from_settings(Settings.from_env())).check(url)
        delivery = {"type": "webhook", "url": url}
    elif channel == "mqtt":
        delivery = {"type": "mqtt"}
    elif channel == "sse":
        delivery = {"type": "sse"}
    else:
        raise InputError(f"delivery.type {channel!r} is unknown; use one of {list(DELIVERIES)}")
    secret = str(spec.get("secret") or secrets.token_urlsafe(32))
    if len(secret) < 16:
        raise InputError("a delivery secret has at least 16 characters; leave it out to "
                         "have one generated")
    sub = Subscription(
        id="sub_" + secrets.token_hex(8), owner=owner.user, condition=condition,
        delivery=delivery, metric_id=metric_id, grain=grain, by=by, filters=filters,
        principal={"role": owner.role, "scopes": sorted(owner.scopes),
                   "departments": sorted(owner.departments),
                   "businesses": sorted(owner.businesses)},
        name=str(spec.get("name") or "")[:200], created_at=ts(now),
        since=ts(_floor(now, grain)))
    return sub, secret


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{what} must be a number, not {value!r}")
    return float(value)


def _check_catalog(reader: Reader, metric_id: str, grain: str, by: str) -> None:
    try:
        if "catalog_metrics" not in reader.tables():
            return
    except NotFoundError:
        return  # no warehouse yet: the metric is checked when there is one
    rows = reader.query("SELECT grains, dimensions FROM catalog_metrics WHERE metric_id = ?",
                        [metric_id]).to_pylist()
    if not rows:
        raise NotFoundError(f"no metric {metric_id!r} in the catalog; list them with "
                            "GET /v1/catalog/metrics")
    if grain not in (rows[0]["grains"] or []):
        raise InputError(f"{metric_id} is computed at {', '.join(rows[0]['grains'])}, not "
                         f"{grain}")
    if by not in [*(rows[0]["dimensions"] or []), "all"]:
        raise InputError(f"{metric_id} can be broken down by all, "
                         f"{', '.join(rows[0]['dimensions'] or [])}, not {by!r}")


# --- the store and the delivery log -------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, doc TEXT NOT NULL, secret TEXT NOT NULL,
    created_at TEXT NOT NULL, deleted_at TEXT);
CREATE TABLE IF NOT EXISTS cursors (
    sub_id TEXT PRIMARY KEY REFERENCES subscriptions(id), state TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, sub_id TEXT NOT NULL, event_key TEXT NOT NULL,
    channel TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL, at TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', next_attempt_at TEXT, payload TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_one_event ON deliveries (sub_id, event_key)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries (sub_id, event_key, seq);
CREATE TRIGGER IF NOT EXISTS deliveries_no_update BEFORE UPDATE ON deliveries
    BEGIN SELECT RAISE(ABORT, 'the delivery log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS deliveries_no_delete BEFORE DELETE ON deliveries
    BEGIN SELECT RAISE(ABORT, 'the delivery log is append-only'); END;
"""


@dataclass(frozen=True)
class Delivery:
    """One record of the delivery log."""

    seq: int
    sub_id: str
    event_key: str
    channel: str
    status: str  # queued, sent, failed, buffered, expired
    attempts: int
    at: str
    detail: str = ""
    next_attempt_at: str | None = None
    payload: str | None = None


class SubscriptionStore:
    """Subscriptions, cursors and the delivery log in ``state_dir/subscriptions.db``.

    ``protect``/``unprotect`` encrypt and decrypt secrets at rest (SM4 field encryption in
    the service and the CLI); ``egress`` is the allow-list its webhooks are delivered under
    (by default only the entries added through the API to ``state_dir``).
    """

    def __init__(self, state_dir: Path, *, protect: Callable[[str], str] = lambda s: s,
                 unprotect: Callable[[str], str] = lambda s: s,
                 egress: EgressPolicy | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_FILE
        self._protect, self._unprotect = protect, unprotect
        self.egress = egress or EgressPolicy(self.state_dir)
        self._db = StateDB(self.path, _SCHEMA, "the subscriptions store")

    @classmethod
    def from_settings(cls, settings: Settings, cipher: Any | None = None) -> SubscriptionStore:
        """The store of ``settings`` under its egress policy; secrets sealed with ``cipher``
        (a FieldCipher)."""
        egress = EgressPolicy.from_settings(settings)
        if cipher is None:
            return cls(settings.state_dir, egress=egress)
        return cls(settings.state_dir,
                   protect=lambda s: cipher.encrypt(s, SECRET_CONTEXT),
                   unprotect=lambda s: cipher.decrypt(s, SECRET_CONTEXT), egress=egress)

    # subscriptions

    def add(self, sub: Subscription, secret: str) -> Subscription:
        with self._db.tx() as conn:
            conn.execute("INSERT INTO subscriptions (id, owner, doc, secret, created_at) "
                         "VALUES (?, ?, ?, ?, ?)",
                         (sub.id, sub.owner, json.dumps(asdict(sub)), self._protect(secret),
                          sub.created_at))
        return sub

    @staticmethod
    def _sub(row: sqlite3.Row) -> Subscription:
        sub = Subscription(**json.loads(row["doc"]))
        sub.deleted_at = row["deleted_at"]
        return sub

    def list(self, owner: str | None = None, *, deleted: bool = False) -> list[Subscription]:
        """Subscriptions (of ``owner``, or all), oldest first."""
        with self._db.connect() as conn:
            rows = conn.execute(
                "SELECT * FROM subscriptions WHERE (? IS NULL OR owner = ?) AND "
                "(? OR deleted_at IS NULL) ORDER BY created_at, id",
                (owner, owner, deleted)).fetchall()
        return [self._sub(r) for r in rows]

    def get(self, sub_id: str) -> Subscription:
        with self._db.connect() as conn:
            row = conn.execute("SELECT * FROM subscriptions WHERE id = ? AND deleted_at IS NULL",
                               (sub_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no subscription {sub_id!r}; list yours with "
                                "GET /v1/subscriptions or `opslake subscriptions list`")
        return self._sub(row)

    def secret(self, sub_id: str) -> str:
        with self._db.connect() as conn:
            row = conn.execute("SELECT secret FROM subscriptions WHERE id = ?",
                               (sub_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no subscription {sub_id!r}")
        return self._unprotect(row["secret"])

    def remove(self, sub_id: str, now: datetime) -> None:
        """Mark deleted: nothing more is evaluated or delivered; its log stays."""
        with self._db.tx() as conn:
            done = conn.execute("UPDATE subscriptions SET deleted_at = ? WHERE id = ? AND "
                                "deleted_at IS NULL", (ts(now), sub_id)).rowcount
        if not done:
            raise NotFoundError(f"no subscription {sub_id!r}")

    # cursors

    def state(self, sub_id: str) -> dict[str, Any]:
        with self._db.connect() as conn:
            row = conn.execute("SELECT state FROM cursors WHERE sub_id = ?",
                               (sub_id,)).fetchone()
        return json.loads(row["state"]) if row else {}

    def advance(self, sub: Subscription, events: Sequence[Mapping[str, Any]],
                state: Mapping[str, Any], now: datetime) -> int:
        """Queue ``events`` and move the cursor to ``state`` in one transaction.

        Events already queued (same key) are skipped; returns how many are new.
        """
        new = 0
        with self._db.tx() as conn:
            for event in events:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO deliveries (sub_id, event_key, channel, status, "
                    "attempts, at, payload) VALUES (?, ?, ?, 'queued', 0, ?, ?)",
                    (sub.id, event["event_key"], sub.delivery["type"], ts(now),
                     canonical(event)))
                new += cur.rowcount
            conn.execute("INSERT INTO cursors (sub_id, state, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (sub_id) DO UPDATE SET state = excluded.state, "
                         "updated_at = excluded.updated_at",
                         (sub.id, json.dumps(state, default=_json), ts(now)))
        return new

    # the delivery log

    def append(self, record: Delivery) -> Delivery:
        """Append one record; its sequence number assigned."""
        with self._db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO deliveries (sub_id, event_key, channel, status, attempts, at, "
                "detail, next_attempt_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.sub_id, record.event_key, record.channel, record.status,
                 record.attempts, record.at, record.detail, record.next_attempt_at,
                 record.payload))
        return Delivery(**{**asdict(record), "seq": int(cur.lastrowid or 0)})

    def records(self, sub_id: str | None = None, *, after: int = 0, limit: int = 1000,
                status: str | None = None) -> list[Delivery]:
        """Log records (of one subscription), oldest first, after sequence ``after``."""
        with self._db.connect() as conn:
            rows = conn.execute(
                "SELECT * FROM deliveries WHERE (? IS NULL OR sub_id = ?) AND seq > ? AND "
                "(? IS NULL OR status = ?) ORDER BY seq LIMIT ?",
                (sub_id, sub_id, after, status, status, limit)).fetchall()
        return [Delivery(**dict(r)) for r in rows]

    def latest(self, sub_id: str, event_key: str) -> Delivery | None:
        with self._db.connect() as conn:
            row = conn.execute("SELECT * FROM deliveries WHERE sub_id = ? AND event_key = ? "
                               "ORDER BY seq DESC LIMIT 1", (sub_id, event_key)).fetchone()
        return Delivery(**dict(row)) if row else None

    def due(self, now: datetime) -> list[tuple[Delivery, Delivery]]:
        """(latest record, queued record) of events to deliver now, oldest first."""
        with self._db.connect() as conn:
            rows = conn.execute(
                "SELECT d.*, q.seq AS q_seq, q.at AS q_at, q.payload AS q_payload "
                "FROM deliveries d "
                "JOIN (SELECT sub_id, event_key, max(seq) AS seq FROM deliveries "
                "      GROUP BY sub_id, event_key) m ON m.seq = d.seq "
                "JOIN deliveries q ON q.sub_id = d.sub_id AND q.event_key = d.event_key "
                "     AND q.status = 'queued' "
                "JOIN subscriptions s ON s.id = d.sub_id AND s.deleted_at IS NULL "
                "WHERE d.status IN ('queued', 'failed') AND "
                "coalesce(d.next_attempt_at, '') <= ? ORDER BY q.seq", (ts(now),)).fetchall()
        out = []
        for r in rows:
            row = dict(r)
            queued = Delivery(row.pop("q_seq"), row["sub_id"], row["event_key"], row["channel"],
                              "queued", 0, row.pop("q_at"), payload=row.pop("q_payload"))
            out.append((Delivery(**row), queued))
        return out

    def failures(self, sub_id: str, event_key: str) -> int:
        with self._db.connect() as conn:
            return int(conn.execute("SELECT count(*) FROM deliveries WHERE sub_id = ? AND "
                                    "event_key = ? AND status = 'failed'",
                                    (sub_id, event_key)).fetchone()[0])

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One evaluation at a time across threads and processes (service, CLI)."""
        with _THREAD_LOCK, open(self.state_dir / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


_THREAD_LOCK = threading.Lock()


# --- conditions ---------------------------------------------------------------------------


def _metric_rows(reader: Reader, tables: set[str], sub: Subscription, owner: Principal,
                 start: datetime) -> list[dict[str, Any]]:
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
        sql = (f"SELECT {columns} FROM {table} WHERE metric_id = ? AND grain = ? AND scope = ? "
               f"AND dt >= ? AND bucket_start >= ?{where}{scope_sql} "
               f"ORDER BY bucket_start LIMIT {MAX_ROWS}")
        params = [sub.metric_id, sub.grain, sub.by, start.date().isoformat(), start,
                  *filters.values(), *scope_params]
        for row in reader.query(sql, params).to_pylist():
            series = {c: row[c] for c in dims}
            key = "|".join("" if v is None else str(v) for v in series.values())
            out[(key, row["bucket_start"])] = {"series_key": key, "series": series,
                                                "bucket_start": row["bucket_start"],
                                                "value": row["value"], "source": table}
    return sorted(out.values(), key=lambda r: (r["bucket_start"], r["series_key"]))


def _metric_events(reader: Reader, tables: set[str], sub: Subscription, owner: Principal,
                   state: dict[str, Any], now: datetime) -> tuple[list[dict], dict]:
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
        base = {"subscription_id": sub.id, "condition": sub.kind, "metric_id": sub.metric_id,
                "grain": sub.grain, "by": sub.by, "series": row["series"],
                "bucket_start": ts(bucket), "value": row["value"], "detected_at": ts(now)}
        if sub.kind == "new_data":
            if last is None or bucket > last:
                events.append({**base, "event_key": f"new:{row['series_key']}:{ts(bucket)}"})
            series_state[row["series_key"]] = {"bucket": ts(bucket)}
        else:
            op, limit = sub.condition["op"], float(sub.condition["value"])
            holds = row["value"] is not None and OPS[op](float(row["value"]), limit)
            if holds and not seen.get("holds"):
                events.append({**base, "threshold": {"op": op, "value": limit},
                               "previous_value": seen.get("value"),
                               "event_key": f"threshold:{row['series_key']}:{ts(bucket)}"})
            series_state[row["series_key"]] = {"bucket": ts(bucket), "holds": holds,
                                               "value": row["value"]}
        cursor = max(cursor, bucket)
    return events, {"cursor": ts(cursor), "series": series_state}


def _anomaly_events(reader: Reader, tables: set[str], sub: Subscription,
                    state: dict[str, Any], now: datetime) -> tuple[list[dict], dict]:
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
            [sub.metric_id, float(sub.condition["min_score"]), start.date().isoformat(),
             start, entity, entity]).to_pylist()
        for r in rows:
            events.append({"subscription_id": sub.id, "condition": "anomaly",
                           "metric_id": sub.metric_id, **{k: r[k] for k in (
                               "entity_id", "series", "value", "expected", "score",
                               "explanation")},
                           "ts": ts(r["ts"]), "detected_at": ts(now),
                           "event_key": f"anomaly:{r['series']}:{ts(r['ts'])}"})
            cursor = max(cursor, r["ts"])
    return events, {"cursor": ts(cursor)}


def _quality_events(reader: Reader, tables: set[str], sub: Subscription,
                    state: dict[str, Any], now: datetime) -> tuple[list[dict], dict]:
    if "quality_results" not in tables:
        return [], state
    since = parse_ts(sub.since)
    first = state.get("day") or since.date().isoformat()
    f = sub.filters
    rows = reader.query(
        "SELECT day, layer, \"table\", \"check\", kind, severity, observed, threshold, "
        "unexpected_rows FROM quality_results WHERE NOT passed AND CAST(day AS VARCHAR) >= ? "
        "AND (?::VARCHAR IS NULL OR layer = ?) AND (?::VARCHAR IS NULL OR \"table\" = ?) "
        "AND (?::VARCHAR IS NULL OR severity = ?) ORDER BY day, layer, \"table\", \"check\" "
        f"LIMIT {MAX_ROWS}",
        [first, f.get("layer"), f.get("layer"), f.get("table"), f.get("table"),
         f.get("severity"), f.get("severity")]).to_pylist()
    events, last = [], first
    for r in rows:
        day = r["day"].isoformat()
        last = max(last, day)
        events.append({"subscription_id": sub.id, "condition": "quality_failed",
                       **{k: r[k] for k in ("layer", "table", "check", "kind", "severity",
                                            "observed", "threshold", "unexpected_rows")},
                       "day": day, "detected_at": ts(now),
                       "event_key": f"quality:{day}:{r['layer']}.{r['table']}:{r['check']}"})
    return events, {"day": last}


def _expiry_events(reader: Reader, tables: set[str], sub: Subscription, owner: Principal,
                   state: dict[str, Any], now: datetime) -> tuple[list[dict], dict]:
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
        + scope_sql + f" ORDER BY entity_id LIMIT {MAX_ROWS}",
        [f.get("kind"), f.get("kind"), f.get("department"), f.get("department"),
         f.get("business"), f.get("business"), f.get("entity_id"), f.get("entity_id"),
         *scope_params]).to_pylist()
    events = []
    for r in rows:
        for what in ("warranty", "contract", "licence"):
            left, end = r[f"days_to_{what}_end"], r[f"{what}_end"]
            if left is None or end is None or left > days:
                continue
            events.append({"subscription_id": sub.id, "condition": "asset_expiry",
                           **{k: r[k] for k in ("entity_id", "name", "kind", "department",
                                                "business")},
                           "ends": what, "end_date": end.isoformat(), "days_left": left,
                           "as_of": str(r["dt"]), "detected_at": ts(now),
                           "event_key": f"expiry:{r['entity_id']}:{what}:{end.isoformat()}"})
    return events, state


def conditions(reader: Reader, tables: set[str], sub: Subscription, owner: Principal,
               state: dict[str, Any], now: datetime) -> tuple[list[dict], dict]:
    """The events ``sub`` yields after ``state``, and its next state."""
    if sub.kind in ("new_data", "threshold"):
        return _metric_events(reader, tables, sub, owner, state, now)
    if sub.kind == "anomaly":
        return _anomaly_events(reader, tables, sub, state, now)
    if sub.kind == "quality_failed":
        return _quality_events(reader, tables, sub, state, now)
    return _expiry_events(reader, tables, sub, owner, state, now)


# --- delivery -----------------------------------------------------------------------------


class Sender:
    """Delivers one event document over a subscription's channel (webhooks under ``egress``)."""

    def __init__(self, egress: EgressPolicy, broker: tuple[str, int] | None = None,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.egress = egress
        self.broker = broker
        self.wallclock = wallclock
        self._mqtt: Any = None

    def send(self, sub: Subscription, secret: str, event_key: str, body: str) -> str:
        stamp = int(self.wallclock())
        signature = sign(secret, stamp, body)
        if sub.delivery["type"] == "webhook":
            return self._webhook(sub, event_key, body, stamp, signature)
        return self._publish(sub, json.dumps({
            "subscription_id": sub.id, "event_key": event_key, "timestamp": str(stamp),
            "signature": signature, "body": body}, ensure_ascii=False))

    def _webhook(self, sub: Subscription, event_key: str, body: str, stamp: int,
                 signature: str) -> str:
        # The log's owner may be anyone with subscriptions:write: its details are fixed
        # categories, never a receiver's answer or an exception's text (which would tell an
        # internal service's secrets, or open ports from closed ones).
        try:
            target = self.egress.check(sub.delivery["url"])
        except EgressRefused as exc:
            logger.warning("subscription %s: webhook refused: %s", sub.id, exc.reason)
            raise DeliveryError("refused: destination not allow-listed") from exc
        except OpsLakeError as exc:
            logger.error("subscription %s: the egress allow-list cannot be read: %s", sub.id,
                         exc)
            raise DeliveryError("refused: the egress allow-list cannot be read") from exc
        headers = {"Host": target.host_header, "Content-Type": "application/json; charset=utf-8",
                   TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: signature,
                   "X-OpsLake-Subscription": sub.id, "X-OpsLake-Event": event_key}
        # An explicit transport takes no proxy from the environment (a proxy would connect
        # elsewhere than the checked address) yet still honours SSL_CERT_FILE. A client per
        # delivery: connections pool by address, and two names on one address must not share
        # a TLS connection.
        try:
            with httpx.Client(transport=httpx.HTTPTransport(), trust_env=False,
                              follow_redirects=False, timeout=TIMEOUT_S) as client, \
                    client.stream("POST", target.pinned_url, content=body.encode(),
                                  headers=headers, extensions=target.extensions) as response:
                status = response.status_code  # the body is never read
        except httpx.TimeoutException as exc:
            raise DeliveryError("timed out") from exc
        except httpx.HTTPError as exc:
            raise DeliveryError("connection failed") from exc
        if 300 <= status < 400:
            raise DeliveryError(f"HTTP {status}: redirects are not followed")
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}: receiver answered with an error")
        return f"HTTP {status}"

    def _publish(self, sub: Subscription, payload: str) -> str:
        import paho.mqtt.client as mqtt

        if self.broker is None:
            raise DeliveryError(f"no MQTT broker configured; set {BROKER_ENV}=host:port")
        if self._mqtt is None:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                 client_id=f"opslake-subs-{uuid.uuid4().hex[:12]}")
            try:
                client.connect(self.broker[0], self.broker[1], keepalive=30)
            except OSError as exc:
                raise DeliveryError(f"MQTT broker {self.broker[0]}:{self.broker[1]}: "
                                    f"{exc}") from exc
            client.loop_start()
            self._mqtt = client
        info = self._mqtt.publish(sub.topic, payload.encode(), qos=1)
        try:
            info.wait_for_publish(timeout=TIMEOUT_S)
        except (RuntimeError, ValueError) as exc:
            self.close()
            raise DeliveryError(f"MQTT publish to {sub.topic}: {exc}") from exc
        if not info.is_published():
            self.close()
            raise DeliveryError(f"MQTT broker did not acknowledge {sub.topic} in {TIMEOUT_S}s")
        return f"PUBACK {sub.topic}"

    def close(self) -> None:
        if self._mqtt is not None:
            with contextlib.suppress(Exception):
                self._mqtt.disconnect()
                self._mqtt.loop_stop()
            self._mqtt = None


def broker_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """``OPSLAKE_MQTT_BROKER`` (``host:port``) as a pair; None when unset."""
    raw = (os.environ if environ is None else environ).get(BROKER_ENV, "")
    if not raw:
        return None
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{BROKER_ENV}={raw!r} is not HOST:PORT; use e.g. 127.0.0.1:1883")
    return host.strip("[]"), int(port)


@dataclass
class PassResult:
    """What one evaluation pass did."""

    queued: int = 0
    sent: int = 0
    failed: int = 0
    buffered: int = 0
    expired: int = 0
    errors: list[str] = field(default_factory=list)


def owners_from(users: Iterable[Any]) -> Callable[[Subscription], Principal | None]:
    """Resolve a subscription's owner against the current users (``IdentityStore.users()``):
    the scopes it subscribed with, narrowed to its current role; None for a disabled or
    removed user (its subscriptions pause)."""
    by_name = {u.name: u for u in users}

    def resolve(sub: Subscription) -> Principal | None:
        user = by_name.get(sub.owner)
        if user is None or user.disabled or user.role not in ROLES:
            return None
        scopes = frozenset(sub.principal.get("scopes", ())) & ROLES[user.role].scopes
        return Principal(user.name, user.role, scopes, frozenset(user.departments),
                         frozenset(user.businesses))

    return resolve


def evaluate(reader: Reader, store: SubscriptionStore, log: SubscriptionStore | None = None,
             now: datetime | None = None, *, sender: Sender | None = None,
             owners: Callable[[Subscription], Principal | None] | None = None,
             sleep: Callable[[float], None] = time.sleep) -> PassResult:
    """One pass: queue what each subscription's condition yields, then deliver what is due.

    ``log`` is the delivery log (the store's own by default); ``owners`` resolves a
    subscription's owner now (default: the owner as it subscribed).
    """
    log = log or store
    now = now or datetime.now(UTC)
    sender = sender or Sender(store.egress, broker_from_env())
    result = PassResult()
    with store.exclusive():
        live = store.list()
        tables: set[str] = set()
        if live:
            try:
                tables = reader.tables()
            except NotFoundError as exc:
                result.errors.append(str(exc))
        for sub in live:
            owner = owners(sub) if owners else sub.owner_principal()
            if owner is None or not owner.allows(NEEDS.get(sub.kind, "")):
                continue
            before = store.state(sub.id)
            try:
                events, state = conditions(reader, tables, sub, owner, before, now)
            except Exception as exc:  # noqa: BLE001 - one broken subscription must not stop others
                result.errors.append(f"{sub.id}: {exc.__class__.__name__}: {exc}")
                continue
            if events or state != before:
                result.queued += log.advance(sub, events, state, now)
        try:
            _deliver(log, store, sender, now, sleep, result)
        finally:
            sender.close()
    return result


def _target(sub: Subscription) -> str:
    """The receiver a delivery goes to: a webhook's host, or the MQTT broker."""
    if sub.delivery["type"] == "webhook":
        return "webhook:" + httpx.URL(sub.delivery["url"]).netloc.decode()
    return "mqtt"


def _deliver(log: SubscriptionStore, store: SubscriptionStore, sender: Sender, now: datetime,
             sleep: Callable[[float], None], result: PassResult) -> None:
    subs: dict[str, Subscription] = {}
    down: dict[str, str] = {}
    for latest, queued in log.due(now):
        sub = subs.get(latest.sub_id) or subs.setdefault(latest.sub_id, store.get(latest.sub_id))

        def record(status: str, attempts: int, detail: str = "",
                   next_at: datetime | None = None, *, sub: Subscription = sub,
                   latest: Delivery = latest) -> None:
            log.append(Delivery(0, sub.id, latest.event_key, latest.channel, status, attempts,
                                ts(now), detail, ts(next_at) if next_at else None))

        if latest.channel == "sse":
            record("buffered", 0, "streamed by GET /v1/subscriptions/{id}/events")
            result.buffered += 1
            continue
        attempts, error = latest.attempts, ""
        secret = store.secret(sub.id)
        target = _target(sub)
        # A receiver that failed every try of this pass is not tried again until the next.
        tries = (0.0, *RETRY_PAUSES) if target not in down else ()
        if not tries:
            error = down[target]
        for pause in tries:
            if pause:
                sleep(pause)
            attempts += 1
            try:
                detail = sender.send(sub, secret, latest.event_key, queued.payload or "{}")
            except DeliveryError as exc:
                error = str(exc)
                continue
            record("sent", attempts, detail)
            result.sent += 1
            break
        else:
            if now - parse_ts(queued.at) >= GIVE_UP_AFTER:
                record("expired", attempts, f"given up after {GIVE_UP_AFTER}: {error}")
                result.expired += 1
                continue
            down[target] = error
            failures = log.failures(sub.id, latest.event_key) + 1
            record("failed", attempts, error[:500], now + backoff(failures))
            result.failed += 1
