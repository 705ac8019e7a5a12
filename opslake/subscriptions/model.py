"""A subscription: what it watches, its condition and delivery, validated for its owner."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from opslake.errors import InputError, NotFoundError
from opslake.metrics_catalog.compute import SCOPE_COLUMNS as CATALOG_SCOPES
from opslake.security.egress import EgressPolicy
from opslake.security.roles import SCOPED_BREAKDOWNS, Principal
from opslake.settings import Settings

#: Outside ``opslake/#``, which the service's own MQTT listener ingests.
TOPIC_PREFIX = "opslake-out/subscriptions"
OPS = {
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}
CONDITIONS = ("new_data", "threshold", "anomaly", "quality_failed", "asset_expiry")
DELIVERIES = ("webhook", "mqtt", "sse")
#: Scope the owner needs for each condition's data.
NEEDS = {
    "new_data": "metrics:read",
    "threshold": "metrics:read",
    "anomaly": "anomalies:read",
    "quality_failed": "quality:read",
    "asset_expiry": "assets:read",
}
#: Breakdowns and the dimension columns each carries (``all``: none).
SCOPE_COLUMNS = {"all": (), **CATALOG_SCOPES}
GRAIN_STEP = {"1h": timedelta(hours=1), "1d": timedelta(days=1)}
FILTERS = {
    "anomaly": ("entity_id",),
    "quality_failed": ("layer", "table", "severity"),
    "asset_expiry": ("kind", "department", "business", "entity_id"),
}
ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


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
    """An instant written by :func:`ts` (or any ISO text with an offset), in UTC."""
    return datetime.fromisoformat(text).astimezone(UTC)


def json_default(value: object) -> object:
    """``json.dumps``'s fallback for event documents: instants as :func:`ts`, days as ISO."""
    if isinstance(value, datetime):
        return ts(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def canonical(doc: Mapping[str, object]) -> str:
    """The JSON text of an event document (sorted keys, no spaces): what is signed."""
    return json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default
    )


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
        return Principal(
            self.owner,
            str(p.get("role", "")),
            frozenset(p.get("scopes", ())),
            frozenset(p.get("departments", ())),
            frozenset(p.get("businesses", ())),
        )


def _floor(moment: datetime, grain: str) -> datetime:
    moment = moment.astimezone(UTC)
    if grain == "1d":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def new_subscription(
    owner: Principal,
    spec: Mapping[str, Any],
    now: datetime,
    catalog: Reader | None = None,
    *,
    egress: EgressPolicy | None = None,
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
        raise InputError(
            f"a {kind} subscription reads data that needs the scope "
            f"{NEEDS[kind]}, which {owner.user} lacks; pick another condition"
        )
    if kind == "threshold":
        if condition.get("op") not in OPS:
            raise InputError(
                f"threshold op {condition.get('op')!r} is unknown; use one of {list(OPS)}"
            )
        condition = {
            "type": kind,
            "op": condition["op"],
            "value": _number(condition.get("value"), "threshold value"),
        }
    elif kind == "anomaly":
        condition = {
            "type": kind,
            "min_score": _number(condition.get("min_score", 0.0), "min_score"),
        }
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
        not metric_id or not set(str(metric_id)) <= ID_CHARS or len(metric_id) > 128
    ):
        raise InputError(f"a {kind} subscription needs metric_id (letters, digits, _ . -)")
    if kind in ("new_data", "threshold"):
        if grain not in GRAIN_STEP:
            raise InputError(f"grain {grain!r} is not served; use one of {list(GRAIN_STEP)}")
        if by not in SCOPE_COLUMNS:
            raise InputError(f"by {by!r} is not a breakdown; use one of {list(SCOPE_COLUMNS)}")
        allowed = SCOPE_COLUMNS[by]
        if owner.row_scoped and by not in SCOPED_BREAKDOWNS:
            raise InputError(
                f"the breakdown {by!r} mixes departments; as a department viewer "
                "use by=department, business or entity"
            )
        if catalog is not None:
            _check_catalog(catalog, str(metric_id), grain, by)
    else:
        by, grain = "all", "1h"
        allowed = FILTERS[kind]
        if kind != "anomaly":
            metric_id = None
    if wrong := sorted(set(filters) - set(allowed)):
        raise InputError(
            f"filters {wrong} do not apply here; filter on {', '.join(allowed) or 'nothing'}"
        )
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
        raise InputError(
            "a delivery secret has at least 16 characters; leave it out to have one generated"
        )
    sub = Subscription(
        id="sub_" + secrets.token_hex(8),
        owner=owner.user,
        condition=condition,
        delivery=delivery,
        metric_id=metric_id,
        grain=grain,
        by=by,
        filters=filters,
        principal={
            "role": owner.role,
            "scopes": sorted(owner.scopes),
            "departments": sorted(owner.departments),
            "businesses": sorted(owner.businesses),
        },
        name=str(spec.get("name") or "")[:200],
        created_at=ts(now),
        since=ts(_floor(now, grain)),
    )
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
    rows = reader.query(
        "SELECT grains, dimensions FROM catalog_metrics WHERE metric_id = ?", [metric_id]
    ).to_pylist()
    if not rows:
        raise NotFoundError(
            f"no metric {metric_id!r} in the catalog; list them with GET /v1/catalog/metrics"
        )
    if grain not in (rows[0]["grains"] or []):
        raise InputError(f"{metric_id} is computed at {', '.join(rows[0]['grains'])}, not {grain}")
    if by not in [*(rows[0]["dimensions"] or []), "all"]:
        raise InputError(
            f"{metric_id} can be broken down by all, "
            f"{', '.join(rows[0]['dimensions'] or [])}, not {by!r}"
        )
