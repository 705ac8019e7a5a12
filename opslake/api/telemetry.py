"""The data service's own metrics, in Prometheus exposition at ``GET /metrics`` (S6.10a).

Every HTTP request is counted and timed by its route template (``/v1/incidents/{incident_id}``,
never the concrete path, so the series stay few), its method and its status class (``2xx`` …
``5xx``); requests no route matched count under ``(unmatched)``. Refused sign-ins are the
``4xx`` of ``/login`` and ``/v1/auth/login`` (why each was refused, a lockout included, is in the
audit log). The figures live in a registry of the app's own (not the process-wide default), so
two services in one process do not mix.

Who may read them: a caller holding the scope ``platform:read`` (administrators, operations and
data engineers, leadership, or a key made with that scope for a scraper such as the
``opslake-self`` collection task); like every request, each scrape is audited.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opslake.api.auth import GUARDED, Principal, error_responses, requires

#: Latency buckets (seconds): cached answers take about a millisecond, sign-in (argon2id)
#: a few hundred, a cold warehouse query seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "(unmatched)"

router = APIRouter(tags=["service"])


class Telemetry:
    """The service's request counters and latency histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("route", "method", "status_class")
        self.requests = Counter(
            "opslake_http_requests",
            "HTTP requests answered, by route template, method and status class.",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "opslake_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer.",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        labels = (route, method, f"{status // 100}xx")
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def exposition(self) -> bytes:
        """Everything, as Prometheus text exposition 0.0.4."""
        return generate_latest(self.registry)


class TelemetryMiddleware:
    """Times every HTTP request, outermost, so refusals and audit failures count too."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes is answered 500 by the server

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.telemetry.observe(route, scope["method"], status, time.perf_counter() - started)


@router.get(
    "/metrics",
    summary="The service's own metrics (Prometheus exposition)",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text exposition 0.0.4."},
        **error_responses(*GUARDED),
    },
)
def metrics(
    request: Request, _principal: Annotated[Principal, Depends(requires("platform:read"))]
) -> Response:
    """Requests and latency by route template, method and status class."""
    telemetry: Telemetry = request.app.state.telemetry
    return Response(telemetry.exposition(), media_type=CONTENT_TYPE_LATEST)
