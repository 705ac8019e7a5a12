"""Subscriptions: a client is told when a metric gets new data, crosses a threshold, turns
anomalous, when a quality check fails or an asset nears expiry (S6.2f).

A subscription names what to watch (a catalog metric at a grain and breakdown with dimension
filters, the anomalies of a raw metric, failing quality checks, expiring assets), a condition
and a delivery:

- **webhook**: the event JSON POSTed with ``X-OpsLake-Timestamp: <unix seconds>`` and
  ``X-OpsLake-Signature: sm3=<hex HMAC-SM3(secret, "timestamp.body")>`` (the ``sm3`` scheme
  of the delivery engine, :mod:`opslake.delivery`; plus
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
condition yields; then deliver what is due through the delivery engine. A delivery that fails
is tried again in the same pass after short pauses, then on later passes at
``next_attempt_at`` with exponential backoff (30 s doubling, at most 10 min); a receiver
that failed every try of a pass is not tried again in it; after ``GIVE_UP_AFTER`` (7 days)
it is ``expired``. Delivery is at least once: a receiver de-duplicates on the event key.

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

The package follows these seams: :mod:`~opslake.subscriptions.model` (the subscription and
its validation), :mod:`~opslake.subscriptions.store` (the SQLite store and delivery log),
:mod:`~opslake.subscriptions.conditions`, :mod:`~opslake.subscriptions.channels` (webhook and
MQTT sending) and :mod:`~opslake.subscriptions.evaluate` (the pass).
"""

from opslake.subscriptions.channels import SIGNING_SCHEME, Sender
from opslake.subscriptions.conditions import conditions
from opslake.subscriptions.evaluate import (
    GIVE_UP_AFTER,
    RETRY,
    RETRY_PAUSES,
    PassResult,
    evaluate,
    owners_from,
)
from opslake.subscriptions.model import (
    Reader,
    Subscription,
    canonical,
    new_subscription,
    parse_ts,
    ts,
)
from opslake.subscriptions.store import DeliveryRecord, SubscriptionStore

__all__ = [
    "GIVE_UP_AFTER",
    "RETRY",
    "RETRY_PAUSES",
    "SIGNING_SCHEME",
    "DeliveryRecord",
    "PassResult",
    "Reader",
    "Sender",
    "Subscription",
    "SubscriptionStore",
    "canonical",
    "conditions",
    "evaluate",
    "new_subscription",
    "owners_from",
    "parse_ts",
    "ts",
]
