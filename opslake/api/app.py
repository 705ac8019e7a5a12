"""The OpsLake data service (FastAPI): push ingestion, the read API and its security."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata

from fastapi import FastAPI

from opslake.alerting.handling import HandlingLog
from opslake.alerting.notices import Notifier
from opslake.api import (
    admin,
    alert_webhooks,
    data,
    handling,
    ingest,
    portal,
    signin,
    subscriptions,
    telemetry,
    topology,
)
from opslake.api.answers import AnswerCache
from opslake.api.auth import Security, install
from opslake.api.warehouse import WarehouseReader
from opslake.errors import ConfigError
from opslake.ingest.listeners import mqtt as mqtt_listener
from opslake.ingest.listeners import syslog
from opslake.ingest.parsers import remote_write
from opslake.lake.landing import LandingZone
from opslake.security.audit import AuditLog
from opslake.security.crypto import FieldCipher
from opslake.security.identity import IdentityStore
from opslake.settings import Settings

log = logging.getLogger(__name__)


def version() -> str:
    """The installed package's version."""
    try:
        return metadata.version("opslake")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def max_decoded_bytes(settings: Settings) -> int:
    """``settings.max_decoded_bytes``, refused if bronze could not decode that much."""
    limit = settings.max_decoded_bytes
    if limit > remote_write.MAX_DECODED_BYTES:  # bronze must decode what the edge accepts
        raise ConfigError(
            f"OPSLAKE_MAX_DECODED_BYTES={limit} is more than the "
            f"{remote_write.MAX_DECODED_BYTES} bronze decodes; use at most that"
        )
    return limit


@dataclass(frozen=True)
class Listeners:
    """The receivers that live as long as the service (all off by default).

    ``syslog_port`` receives syslog on UDP and TCP, ``syslog_tls_port`` over TLS (RFC 5425)
    with the server context ``tls``; with ``mqtt`` (host, port) the service subscribes to
    ``mqtt_topics`` on that broker (QoS 1) as ``mqtt_auth`` says. Each lands what arrives
    at least once a second; MQTT messages are acknowledged once landed.
    """

    host: str = "127.0.0.1"
    syslog_port: int | None = None
    syslog_tls_port: int | None = None
    tls: ssl.SSLContext | None = None
    mqtt: tuple[str, int] | None = None
    mqtt_topics: Sequence[str] = ("opslake/#",)
    mqtt_auth: mqtt_listener.MqttAuth = field(default_factory=mqtt_listener.MqttAuth)


def create_app(settings: Settings | None = None, listeners: Listeners = Listeners()) -> FastAPI:
    """The data service for ``settings`` (default: from the environment) and its listeners."""
    settings = settings or Settings.from_env()
    landing = LandingZone.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # Bytes staged by a write that was killed (this service's previous life) go now.
            if swept := await asyncio.to_thread(landing.lake.sweep_staged):
                log.info("removed %d staged object(s) left by interrupted writes", swept)
            # Last on the way out: the audit head is checkpointed as the service stops.
            stack.push_async_callback(asyncio.to_thread, _app.state.security.audit.close)
            stack.push_async_callback(asyncio.to_thread, _app.state.notices.close)
            if listeners.syslog_port is not None or listeners.syslog_tls_port is not None:
                stack.push_async_callback(
                    await syslog.serve(
                        syslog.SyslogReceiver(landing),
                        listeners.host,
                        listeners.syslog_port,
                        listeners.syslog_port,
                        listeners.syslog_tls_port,
                        listeners.tls if listeners.syslog_tls_port is not None else None,
                    )
                )
            if listeners.mqtt is not None:
                subscriber = mqtt_listener.MqttSubscriber(
                    landing, *listeners.mqtt, list(listeners.mqtt_topics), auth=listeners.mqtt_auth
                )
                subscriber.start()
                stack.push_async_callback(asyncio.to_thread, subscriber.stop)
            stack.push_async_callback(subscriptions.start_evaluator(_app))
            meter = _app.state.security.meter
            meter.start()
            stack.push_async_callback(asyncio.to_thread, meter.stop)
            # What exists now (modules, the app) lives as long as the service: keep it out of
            # the collector's way, or full collections stall every request (p99 × 2.5 under
            # 50 concurrent clients, measured by tests/benchmarks/bench_api.py).
            gc.freeze()
            # What requests leave behind is mostly freed by reference counting: collecting
            # every 700 allocations cost 60-75 µs of CPU per new query (50 clients), every
            # 10,000 about 4 µs.
            gc.set_threshold(10_000, 10, 10)
            yield

    app = FastAPI(
        title="OpsLake data service",
        version=version(),
        docs_url="/docs",
        lifespan=lifespan,
        description="Push ingestion into the OpsLake landing zone (Prometheus remote write, "
        "Alertmanager webhooks and generic JSON alert webhooks, acknowledged once "
        "durable) and the read API over the serving warehouse: catalog, metric "
        "data, incidents, anomalies, forecasts, quality. Every endpoint but the "
        "health check and this description needs 'Authorization: Bearer <API key "
        "or session token>' (pushes: a key with the scope ingest:write); every "
        "request is audited.",
    )
    app.state.settings = settings
    app.state.push = ingest.PushService(
        landing, max_bytes=settings.max_push_bytes, max_decoded_bytes=max_decoded_bytes(settings)
    )

    @app.get("/healthz", tags=["service"], summary="Liveness")
    def healthz() -> dict[str, str]:
        """The service answers; with its version."""
        return {"status": "ok", "version": app.version}

    app.include_router(ingest.router)
    app.include_router(alert_webhooks.router)
    app.include_router(data.router)
    app.include_router(handling.router)
    app.include_router(admin.router)
    app.include_router(subscriptions.router)
    app.include_router(signin.router)
    app.include_router(portal.router)
    app.include_router(topology.router)
    app.include_router(telemetry.router)
    app.state.warehouse = WarehouseReader(settings.warehouse_path)
    app.state.cipher = FieldCipher.from_settings(settings)
    app.state.handling = HandlingLog.from_settings(settings, landing)
    app.state.notices = Notifier(app.state.handling, settings.alerting_dir)
    app.state.answers = AnswerCache(app.state.warehouse)
    app.state.portal = portal.Portal.from_settings(settings)
    security = Security(IdentityStore.sealed(settings), AuditLog.from_settings(settings))
    # The doors (opslake.api.gateway) check sessions through this too, so signing out at
    # /logout ends the session at every door at once.
    app.state.sessions = signin.SessionCheck(security.identity)
    install(app, security, app.state.answers)
    # Added last, so outermost: refused and unaudited requests are counted and timed too.
    app.state.telemetry = telemetry.Telemetry()
    app.add_middleware(telemetry.TelemetryMiddleware, telemetry=app.state.telemetry)
    return app
