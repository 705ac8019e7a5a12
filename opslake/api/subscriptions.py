"""Subscriptions over the API (``/v1/subscriptions``, S6.2f) and the evaluator's loop.

A caller manages its own subscriptions (administrators see everyone's); another caller's
subscription answers 404 as if it did not exist. The secret that signs deliveries is
returned once, by the POST that creates the subscription, and never again. SSE deliveries
stream from ``GET /v1/subscriptions/{id}/events`` (``text/event-stream``; ``id:`` is the
log sequence, so a client resumes with ``Last-Event-ID``).

:func:`start_evaluator` runs :func:`opslake.subscriptions.evaluate` every
``OPSLAKE_SUBSCRIPTION_INTERVAL_S`` seconds (default 10; 0 turns the loop off) for as long
as the service runs; the pass itself runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from opslake import subscriptions as subs
from opslake.api.auth import requires
from opslake.errors import ConfigError, NotFoundError
from opslake.security.roles import Principal

router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
SSE_POLL_S = 1.0
SSE_KEEPALIVE_S = 15.0
SubId = Annotated[str, Path(pattern=r"^sub_[0-9a-f]{16}$")]
log = logging.getLogger(__name__)


class Condition(BaseModel):
    type: Literal["new_data", "threshold", "anomaly", "quality_failed", "asset_expiry"]
    op: Literal[">", "<", ">=", "<="] | None = None
    value: float | None = None
    min_score: float | None = None
    within_days: int | None = Field(default=None, ge=0, le=3650)


class DeliverySpec(BaseModel):
    type: Literal["webhook", "mqtt", "sse"]
    url: str | None = Field(default=None, max_length=2000)


class SubscriptionIn(BaseModel):
    """What to watch, when to tell, where to deliver."""

    condition: Condition
    delivery: DeliverySpec
    metric_id: str | None = Field(default=None, max_length=128)
    grain: str = Field(default="1h", max_length=8)
    by: str = Field(default="all", max_length=40)
    filters: dict[str, str] = Field(default_factory=dict)
    name: str = Field(default="", max_length=200)
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=200,
        description="Signing secret; generated when left out",
    )


def store(app: FastAPI) -> subs.SubscriptionStore:
    """The app's subscription store (opened on first use)."""
    found = getattr(app.state, "subscriptions", None)
    if found is None:
        found = app.state.subscriptions = subs.SubscriptionStore.from_settings(
            app.state.settings, getattr(app.state, "cipher", None)
        )
    return found


def _owners(app: FastAPI) -> Callable[[subs.Subscription], Principal | None] | None:
    security = getattr(app.state, "security", None)
    return subs.owners_from(security.identity.users()) if security is not None else None


def run_once(app: FastAPI, now: datetime | None = None) -> subs.PassResult:
    """One evaluator pass with the app's warehouse, store and users (blocking)."""
    return subs.evaluate(
        app.state.warehouse,
        store(app),
        now=now or datetime.now(UTC),
        owners=_owners(app),
        broker=app.state.settings.mqtt_broker,
    )


def start_evaluator(app: FastAPI) -> Callable[[], Awaitable[None]]:
    """Start the evaluator loop; returns the coroutine function that stops it."""
    every = app.state.settings.subscription_interval_s
    if every <= 0:

        async def nothing() -> None:
            return None

        return nothing

    async def loop() -> None:
        while True:
            try:
                result = await asyncio.to_thread(run_once, app)
                if result.queued or result.sent or result.failed:
                    log.info(
                        "subscriptions: %d queued, %d sent, %d failed",
                        result.queued,
                        result.sent,
                        result.failed,
                    )
                for error in result.errors:
                    log.warning("subscriptions: %s", error)
            except Exception:  # the loop must outlive one bad pass
                log.exception("subscription evaluation failed")
            await asyncio.sleep(every)

    task = asyncio.get_running_loop().create_task(loop(), name="opslake-subscriptions")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


def _own(request: Request, principal: Principal, sub_id: str) -> subs.Subscription:
    sub = store(request.app).get(sub_id)
    if sub.owner != principal.user and principal.role != "admin":
        raise NotFoundError(f"no subscription {sub_id!r}; list yours with GET /v1/subscriptions")
    return sub


def _json(doc: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(doc, ensure_ascii=False, default=str),
        status_code=status,
        media_type="application/json",
    )


@router.post("", summary="Subscribe", status_code=201)
async def create(
    request: Request,
    body: SubscriptionIn,
    principal: Annotated[Principal, Depends(requires("subscriptions:write"))],
) -> Response:
    """Create a subscription for the caller; the answer shows the signing secret once."""
    spec = body.model_dump()
    spec["condition"] = {k: v for k, v in spec["condition"].items() if v is not None}

    def work() -> tuple[subs.Subscription, str]:
        sub, secret = subs.new_subscription(
            principal,
            spec,
            datetime.now(UTC),
            request.app.state.warehouse,
            egress=store(request.app).egress,
        )
        return store(request.app).add(sub, secret), secret

    sub, secret = await run_in_threadpool(work)
    request.state.rows = 1
    return _json({**sub.public(), "secret": secret}, 201)


@router.get("", summary="List subscriptions")
async def list_(
    request: Request, principal: Annotated[Principal, Depends(requires("subscriptions:read"))]
) -> Response:
    """The caller's subscriptions (an administrator's: everyone's); no secrets."""
    owner = None if principal.role == "admin" else principal.user
    found = await run_in_threadpool(store(request.app).list, owner)
    request.state.rows = len(found)
    return _json({"count": len(found), "rows": [s.public() for s in found]})


@router.get("/{sub_id}", summary="One subscription")
async def one(
    request: Request,
    sub_id: SubId,
    principal: Annotated[Principal, Depends(requires("subscriptions:read"))],
) -> Response:
    """The subscription, its cursor state excluded; no secret."""
    sub = await run_in_threadpool(_own, request, principal, sub_id)
    request.state.rows = 1
    return _json(sub.public())


@router.delete("/{sub_id}", summary="Unsubscribe", status_code=204)
async def delete(
    request: Request,
    sub_id: SubId,
    principal: Annotated[Principal, Depends(requires("subscriptions:write"))],
) -> Response:
    """Stop evaluating and delivering; the delivery log is kept."""
    await run_in_threadpool(_own, request, principal, sub_id)
    await run_in_threadpool(store(request.app).remove, sub_id, datetime.now(UTC))
    return Response(status_code=204)


@router.get("/{sub_id}/deliveries", summary="A subscription's delivery log")
async def deliveries(
    request: Request,
    sub_id: SubId,
    principal: Annotated[Principal, Depends(requires("subscriptions:read"))],
    after: Annotated[int, Query(ge=0, description="Records after this sequence number")] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
) -> Response:
    """Every record of the log: queued, sent, failed (with the next attempt), buffered."""
    await run_in_threadpool(_own, request, principal, sub_id)
    records = await run_in_threadpool(store(request.app).records, sub_id, after=after, limit=limit)
    request.state.rows = len(records)
    rows = [
        {**r.__dict__, "payload": json.loads(r.payload) if r.payload else None} for r in records
    ]
    return _json({"count": len(rows), "rows": rows})


def _sse(record: subs.DeliveryRecord) -> str:
    return (
        f"id: {record.seq}\nevent: {record.event_key.split(':', 1)[0]}\ndata: {record.payload}\n\n"
    )


@router.get(
    "/{sub_id}/events",
    summary="Server-sent events of an SSE subscription",
    response_class=StreamingResponse,
)
async def events(
    request: Request,
    sub_id: SubId,
    principal: Annotated[Principal, Depends(requires("subscriptions:read"))],
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
    after: Annotated[int | None, Query(ge=0, description="Resume after this id")] = None,
    follow: Annotated[bool, Query(description="Keep the stream open for new events")] = True,
) -> StreamingResponse:
    """``text/event-stream`` of the subscription's events, oldest first, then live."""
    sub = await run_in_threadpool(_own, request, principal, sub_id)
    if sub.delivery["type"] != "sse":
        raise ConfigError(
            f"{sub_id} delivers by {sub.delivery['type']}, not sse; subscribe "
            "with delivery.type=sse to stream events"
        )
    the_store = store(request.app)
    start = after if after is not None else (last_event_id or 0)
    first = await run_in_threadpool(the_store.records, sub_id, after=start, status="queued")
    request.state.rows = len(first)

    async def stream() -> AsyncIterator[str]:
        cursor = start
        batch = first
        idle = 0.0
        while True:
            for record in batch:
                cursor = record.seq
                yield _sse(record)
            if batch:
                idle = 0.0
            if not follow or await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_S)
            idle += SSE_POLL_S
            if idle >= SSE_KEEPALIVE_S:
                idle = 0.0
                yield ": keepalive\n\n"
            batch = await run_in_threadpool(
                the_store.records, sub_id, after=cursor, status="queued"
            )

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
