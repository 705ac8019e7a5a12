"""One evaluation pass: queue what each subscription's condition yields, deliver what is due."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx

from opslake.delivery import Engine, RetryPolicy
from opslake.errors import NotFoundError
from opslake.security.roles import ROLES, Principal
from opslake.subscriptions.channels import Sender
from opslake.subscriptions.conditions import conditions
from opslake.subscriptions.model import NEEDS, Reader, Subscription, parse_ts, ts
from opslake.subscriptions.store import DeliveryRecord, SubscriptionStore

#: In-pass retry pauses (seconds) before a delivery is left for a later pass.
RETRY_PAUSES = (0.5, 1.0)
#: A delivery still failing this long after it was queued is given up (``expired``).
GIVE_UP_AFTER = timedelta(days=7)
RETRY = RetryPolicy(RETRY_PAUSES, give_up_after=GIVE_UP_AFTER)


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
        return Principal(
            user.name, user.role, scopes, frozenset(user.departments), frozenset(user.businesses)
        )

    return resolve


def evaluate(
    reader: Reader,
    store: SubscriptionStore,
    log: SubscriptionStore | None = None,
    now: datetime | None = None,
    *,
    sender: Sender | None = None,
    owners: Callable[[Subscription], Principal | None] | None = None,
    broker: tuple[str, int] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PassResult:
    """One pass: queue what each subscription's condition yields, then deliver what is due.

    ``log`` is the delivery log (the store's own by default); ``owners`` resolves a
    subscription's owner now (default: the owner as it subscribed); ``broker`` the MQTT
    broker (``Settings.mqtt_broker``) of the default sender.
    """
    log = log or store
    now = now or datetime.now(UTC)
    sender = sender or Sender(store.egress, broker)
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


def _deliver(
    log: SubscriptionStore,
    store: SubscriptionStore,
    sender: Sender,
    now: datetime,
    sleep: Callable[[float], None],
    result: PassResult,
) -> None:
    engine = Engine(RETRY, sleep)
    subs: dict[str, Subscription] = {}
    for latest, queued in log.due(now):
        sub = subs.get(latest.sub_id) or subs.setdefault(latest.sub_id, store.get(latest.sub_id))
        if latest.channel == "sse":
            log.append(
                DeliveryRecord(
                    0,
                    sub.id,
                    latest.event_key,
                    latest.channel,
                    "buffered",
                    0,
                    ts(now),
                    "streamed by GET /v1/subscriptions/{id}/events",
                )
            )
            result.buffered += 1
            continue
        send = partial(
            sender.send, sub, store.secret(sub.id), latest.event_key, queued.payload or "{}"
        )
        outcome = engine.deliver(
            _target(sub),
            send,
            now=now,
            attempts=latest.attempts,
            failures=log.failures(sub.id, latest.event_key),
            queued_at=parse_ts(queued.at),
        )
        log.append(
            DeliveryRecord(
                0,
                sub.id,
                latest.event_key,
                latest.channel,
                outcome.status,
                outcome.attempts,
                ts(now),
                outcome.detail,
                ts(outcome.next_attempt_at) if outcome.next_attempt_at else None,
            )
        )
        # PassResult counts each outcome under its status's name (sent, failed, expired).
        setattr(result, outcome.status, getattr(result, outcome.status) + 1)
