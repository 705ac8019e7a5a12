"""``opslake subscriptions …``: list, add and remove subscriptions, read the delivery log, run
one evaluator pass. The logic lives in :mod:`opslake.subscriptions`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from opslake.cli._common import stdout
from opslake.settings import Settings

app = typer.Typer(
    help="Subscriptions: metric, anomaly, quality and asset-expiry conditions "
    "delivered by signed webhook, MQTT or server-sent events.",
    no_args_is_help=True,
)


def _store(settings: Settings):
    from opslake.security.crypto import FieldCipher
    from opslake.subscriptions import SubscriptionStore

    return SubscriptionStore.from_settings(settings, FieldCipher.from_settings(settings))


def _identity(settings: Settings):
    from opslake.security.identity import IdentityStore

    return IdentityStore(settings)


@app.command("list")
def list_(
    owner: Annotated[str | None, typer.Option(help="Only this user's subscriptions.")] = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Include removed ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Subscriptions (no secrets)."""
    found = _store(Settings.from_env()).list(owner, deleted=deleted)
    if as_json:
        typer.echo(json.dumps([s.public() for s in found], ensure_ascii=False, indent=1))
        return
    table = Table(title="subscriptions")
    for col in ("id", "owner", "watch", "condition", "delivery", "created", "deleted"):
        table.add_column(col)
    for s in found:
        watch = f"{s.metric_id or s.kind} {s.grain} by {s.by}" if s.metric_id else s.kind
        if s.filters:
            watch += " " + ",".join(f"{k}={v}" for k, v in s.filters.items())
        cond = " ".join(str(v) for v in s.condition.values())
        where = s.delivery.get("url") or (s.topic if s.delivery["type"] == "mqtt" else "")
        table.add_row(
            s.id,
            s.owner,
            watch,
            cond,
            f"{s.delivery['type']} {where}".strip(),
            s.created_at[:19],
            (s.deleted_at or "")[:19],
        )
    stdout.print(table)


@app.command("add")
def add(
    owner: Annotated[
        str,
        typer.Option(
            help="The user the subscription acts for (its role and departments limit what it sees)."
        ),
    ],
    condition: Annotated[
        str, typer.Option(help="new_data, threshold, anomaly, quality_failed or asset_expiry.")
    ],
    delivery: Annotated[str, typer.Option(help="webhook, mqtt or sse.")],
    metric: Annotated[
        str | None, typer.Option(help="Catalog metric id (anomaly: the raw metric name).")
    ] = None,
    grain: Annotated[str, typer.Option(help="1h or 1d.")] = "1h",
    by: Annotated[
        str,
        typer.Option(
            help="Breakdown: all, entity, business, department, region, object_kind, object_type."
        ),
    ] = "all",
    filter_: Annotated[
        list[str] | None,
        typer.Option("--filter", help="Dimension filter COLUMN=VALUE (repeatable)."),
    ] = None,
    op: Annotated[str | None, typer.Option(help="Threshold comparison: > < >= <=.")] = None,
    value: Annotated[float | None, typer.Option(help="Threshold value.")] = None,
    min_score: Annotated[float, typer.Option(help="Anomaly: lowest score.")] = 0.0,
    within_days: Annotated[int, typer.Option(help="Asset expiry: days ahead.")] = 30,
    url: Annotated[str | None, typer.Option(help="Webhook URL.")] = None,
    name: Annotated[str, typer.Option(help="A label.")] = "",
) -> None:
    """Subscribe for a user; prints the subscription and its signing secret (shown once)."""
    from opslake.api.warehouse import WarehouseReader
    from opslake.errors import InputError, NotFoundError
    from opslake.security.roles import ROLES, Principal
    from opslake.subscriptions import new_subscription

    settings = Settings.from_env()
    users = {u.name: u for u in _identity(settings).users()}
    user = users.get(owner)
    if user is None or user.disabled:
        raise NotFoundError(
            f"no active user {owner!r}; add it with `opslake security user-add` first"
        )
    principal = Principal(
        user.name,
        user.role,
        ROLES[user.role].scopes,
        frozenset(user.departments),
        frozenset(user.businesses),
    )
    cond: dict[str, object] = {"type": condition}
    if condition == "threshold":
        cond.update(op=op, value=value)
    elif condition == "anomaly":
        cond["min_score"] = min_score
    elif condition == "asset_expiry":
        cond["within_days"] = within_days
    filters = {}
    for item in filter_ or []:
        column, sep, text = item.partition("=")
        if not sep:
            raise InputError(f"--filter {item!r} is not COLUMN=VALUE")
        filters[column] = text
    spec = {
        "condition": cond,
        "delivery": {"type": delivery, "url": url},
        "metric_id": metric,
        "grain": grain,
        "by": by,
        "filters": filters,
        "name": name,
    }
    sub, secret = new_subscription(
        principal, spec, datetime.now(UTC), WarehouseReader(settings.warehouse_path)
    )
    _store(settings).add(sub, secret)
    typer.echo(json.dumps({**sub.public(), "secret": secret}, ensure_ascii=False, indent=1))


@app.command("remove")
def remove(sub_id: Annotated[str, typer.Argument(help="sub_… as listed.")]) -> None:
    """Stop a subscription (its delivery log is kept)."""
    _store(Settings.from_env()).remove(sub_id, datetime.now(UTC))
    stdout.print(f"[green]removed[/] {sub_id}")


@app.command("deliveries")
def deliveries(
    sub_id: Annotated[str | None, typer.Argument(help="One subscription (default: all).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many records.")] = 200,
) -> None:
    """The delivery log: every record, oldest first."""
    records = _store(Settings.from_env()).records(sub_id, limit=limit)
    table = Table(title="subscription deliveries")
    for col in (
        "seq",
        "at",
        "subscription",
        "event",
        "channel",
        "status",
        "attempts",
        "next",
        "detail",
    ):
        table.add_column(col)
    for r in records:
        table.add_row(
            str(r.seq),
            r.at[:19],
            r.sub_id,
            r.event_key[:60],
            r.channel,
            r.status,
            str(r.attempts),
            (r.next_attempt_at or "")[:19],
            r.detail[:60],
        )
    stdout.print(table)


@app.command("run-once")
def run_once() -> None:
    """Evaluate every subscription once and deliver what is due."""
    from opslake.api.warehouse import WarehouseReader
    from opslake.subscriptions import evaluate, owners_from

    settings = Settings.from_env()
    result = evaluate(
        WarehouseReader(settings.warehouse_path),
        _store(settings),
        owners=owners_from(_identity(settings).users()),
        broker=settings.mqtt_broker,
    )
    for error in result.errors:
        stdout.print(f"[yellow]{error}[/]")
    stdout.print(
        f"queued {result.queued}, sent {result.sent}, failed {result.failed}, "
        f"buffered {result.buffered}, expired {result.expired}"
    )
