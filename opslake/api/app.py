"""The OpsLake data service (FastAPI): health and push ingestion; later issues add the read API."""

from __future__ import annotations

import os
from importlib import metadata

from fastapi import FastAPI

from opslake.api import ingest
from opslake.errors import ConfigError
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.settings import Settings


def version() -> str:
    """The installed package's version."""
    try:
        return metadata.version("opslake")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def max_push_bytes(environ: dict[str, str] | None = None) -> int:
    """``OPSLAKE_MAX_PUSH_BYTES``: the largest push body accepted (default 16 MiB)."""
    env = os.environ if environ is None else environ
    raw = env.get("OPSLAKE_MAX_PUSH_BYTES", "")
    if not raw:
        return ingest.DEFAULT_MAX_PUSH_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"OPSLAKE_MAX_PUSH_BYTES={raw!r} is not a positive number of bytes; "
                          f"use e.g. {ingest.DEFAULT_MAX_PUSH_BYTES}")
    return int(raw)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The data service for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    app = FastAPI(
        title="OpsLake data service", version=version(), docs_url="/docs",
        description="Push ingestion into the OpsLake landing zone: Prometheus remote write "
                    "and Alertmanager webhooks, acknowledged once durable.",
    )
    app.state.settings = settings
    app.state.push = ingest.PushService(LandingZone(Lake.from_settings(settings)),
                                        max_bytes=max_push_bytes())

    @app.get("/healthz", tags=["service"], summary="Liveness")
    def healthz() -> dict[str, str]:
        """The service answers; with its version."""
        return {"status": "ok", "version": app.version}

    app.include_router(ingest.router)
    return app
