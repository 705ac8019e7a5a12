"""Push ingestion: Prometheus remote write and Alertmanager webhooks, landed before acknowledging.

A push is acknowledged only after ``LandingZone.write`` returned, i.e. once its bytes and
manifest row are durable; a sender that sees no acknowledgement retries, and the batch id
(``X-OpsLake-Batch-Id`` or the content hash) makes the retry a recognised duplicate. Bodies
that are refused are kept as quarantine rows (``opslake.api.rejects``) with the reason.

Every push needs ``Authorization: Bearer <API key>`` with the scope ``ingest:write`` (role
``ingest`` for machine senders; see ``opslake.security.roles``). The credential is checked
before the body is read: a push without one (401) or with a key lacking the scope (403) is
neither landed nor quarantined, and, like every request, it is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from opslake.api import rejects
from opslake.api.auth import GUARDED, error_responses, requires
from opslake.errors import InputError, OpsLakeError
from opslake.ingest.parsers import remote_write
from opslake.ingest.parsers._text import RecordError, parse_timestamp
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.security.roles import Principal

log = logging.getLogger(__name__)

BATCH_HEADER = "X-OpsLake-Batch-Id"
#: Default largest accepted push body (``OPSLAKE_MAX_PUSH_BYTES``).
DEFAULT_MAX_PUSH_BYTES = 16 * 2**20
PROMETHEUS, ALERTMANAGER = "prometheus", "alertmanager"
_BATCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_VERSION_RE = re.compile(r"^[0-9][0-9.]{0,15}$")

router = APIRouter(prefix="/v1/ingest", tags=["ingest"])
#: The scope every push endpoint requires.
INGEST_SCOPE = "ingest:write"
#: The caller of a push: holds ``ingest:write`` (and is within its key's daily quota).
Pusher = Annotated[Principal, Depends(requires(INGEST_SCOPE))]
#: OpenAPI responses for the credential errors of a push (401, 403, 429; 503 is the lake's).
PUSH_AUTH_RESPONSES = {code: spec for code, spec in error_responses(*GUARDED).items()
                       if code != 503}


class PushRefused(InputError):
    """A pushed body (or its headers) that cannot be accepted; answered with ``status``."""

    def __init__(self, status: int, error: str, fix: str) -> None:
        super().__init__(f"{error}; {fix}")
        self.status, self.error, self.fix = status, error, fix


@dataclass
class PushService:
    """What the push endpoints share: the landing zone, the size limit, per-batch locks."""

    landing: LandingZone
    max_bytes: int = DEFAULT_MAX_PUSH_BYTES
    _locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def _batch_lock(self, key: tuple[str, str]) -> AsyncIterator[None]:
        # Landing's duplicate check is read-then-write; two concurrent deliveries of one
        # batch must not both land it, so they queue on a per-batch lock (one process).
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def land(self, source: str, body: bytes, *, fmt: str, batch_id: str,
                   connector: str) -> LandedBatch:
        """Land ``body`` off the event loop; returns once bytes and manifest are durable."""
        async with self._batch_lock((source, batch_id)):
            return await run_in_threadpool(
                self.landing.write, source, body, fmt=fmt, batch_id=batch_id,
                received_at=datetime.now(UTC), connector=connector)

    async def accept(self, request: Request, source: str, *, fmt: str, connector: str,
                     status: int, validate: Callable[[bytes], object],
                     errors: tuple[type[Exception], ...], what: str,
                     fix: str) -> LandedBatch | JSONResponse:
        """The whole push: read (413 over the limit), validate, land durably, or refuse.

        ``validate`` runs off the event loop; one of ``errors`` refuses the body with
        ``status``, ``what`` and ``fix``, and the body is kept in quarantine. A lake that
        cannot be written answers 503 so the sender retries.
        """
        try:
            body = await self.read_body(request)
            batch_id = _batch_id(request, body, status)
            try:
                await run_in_threadpool(validate, body)
            except errors as exc:
                raise _Refused(body, PushRefused(status, f"{what}: {exc}", fix)) from None
            return await self.land(source, body, fmt=fmt, batch_id=batch_id,
                                   connector=connector)
        except _Refused as refused:
            return await self.refuse(source, refused)
        except (OpsLakeError, OSError) as exc:
            return _unavailable(exc)

    async def read_body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it exceeds ``max_bytes``."""
        declared = request.headers.get("content-length", "")
        limit = self.max_bytes
        chunks: list[bytes] = []
        size = 0
        too_large = declared.isdigit() and int(declared) > limit
        async for chunk in request.stream():
            chunks.append(chunk)
            size += len(chunk)
            # Past the limit, keep only what the quarantine row stores and stop reading.
            if size > limit or (too_large and size >= rejects.MAX_RAW_CHARS):
                too_large = True
                break
        body = b"".join(chunks)
        if too_large:
            raise _Refused(body, PushRefused(
                413, f"body{f' of {int(declared):,} bytes' if declared.isdigit() else ''} "
                f"is larger than the {limit:,} bytes accepted",
                "send smaller batches (Prometheus: lower queue_config.max_samples_per_send) "
                "or raise OPSLAKE_MAX_PUSH_BYTES"))
        return body

    async def refuse(self, source: str, refused: _Refused) -> JSONResponse:
        """Keep the refused body as a quarantine row and answer with the error and its fix."""
        exc = refused.reason
        try:
            await run_in_threadpool(rejects.append_push_reject, self.landing.lake, source,
                                    refused.body, f"HTTP {exc.status}: {exc.error}")
        except (OpsLakeError, OSError):
            # The sender's request is wrong either way; failing to keep it must not turn
            # the answer into a 5xx that Prometheus would retry forever.
            log.exception("could not quarantine a refused %s push", source)
        return JSONResponse({"error": exc.error, "fix": exc.fix}, status_code=exc.status)


class _Refused(Exception):
    """Carries the refused body to the handler that quarantines it."""

    def __init__(self, body: bytes, reason: PushRefused) -> None:
        super().__init__(str(reason))
        self.body, self.reason = body, reason


def _batch_id(request: Request, body: bytes, status: int) -> str:
    """The sender's ``X-OpsLake-Batch-Id``, or the content hash (as landing would choose)."""
    given = request.headers.get(BATCH_HEADER)
    if given is None:
        return hashlib.sha256(body).hexdigest()[:32]
    if not _BATCH_RE.match(given):
        raise _Refused(body, PushRefused(
            status, f"{BATCH_HEADER} {given[:140]!r} is not a valid batch id",
            "use letters, digits, '.', '-' and '_' (at most 128), or omit the header to "
            "use the content hash"))
    return given


def _unavailable(exc: Exception) -> JSONResponse:
    """503 for a lake that cannot be written: the sender keeps the batch and retries."""
    log.error("landing failed: %s", exc)
    return JSONResponse({"error": f"the lake cannot be written: {exc}",
                         "fix": "retry later; the operator should check OPSLAKE_HOME"},
                        status_code=503)


_REMOTE_WRITE_BODY = {"requestBody": {"required": True, "content": {"application/x-protobuf": {
    "schema": {"type": "string", "format": "binary",
               "description": "prometheus.WriteRequest, snappy block format"}}}}}
_WEBHOOK_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "description": "Alertmanager webhook payload, version 4",
               "required": ["version", "alerts"]}}}}}


@router.post(
    "/prometheus/remote_write", status_code=204, response_class=Response,
    summary="Prometheus remote write 1.0 (snappy + protobuf WriteRequest)",
    openapi_extra=_REMOTE_WRITE_BODY,
    responses={204: {"description": "landed durably (or already landed)"},
               400: {"description": "not a snappy-compressed WriteRequest; not retried"},
               413: {"description": "body over OPSLAKE_MAX_PUSH_BYTES"},
               415: {"description": "an encoding or protocol version not supported"},
               503: {"description": "the lake cannot be written; retry"},
               **PUSH_AUTH_RESPONSES},
)
async def prometheus_remote_write(request: Request, _p: Pusher) -> Response:
    """Validate a remote-write request by decoding it, land it, then answer 204."""
    service: PushService = request.app.state.push
    version = request.headers.get("X-Prometheus-Remote-Write-Version", "0.1.0")

    def validate(body: bytes) -> None:
        _check_remote_write_headers(request, body)
        remote_write.decode(body)

    result = await service.accept(
        request, PROMETHEUS, fmt="pb",
        connector=f"prometheus-remote-write/{version if _VERSION_RE.match(version) else '?'}",
        status=400, validate=validate, errors=(remote_write.RemoteWriteError,),
        what="not a Prometheus remote-write request",
        fix="send a snappy (block format) compressed prometheus.WriteRequest, as Prometheus "
            "remote_write does")
    return result if isinstance(result, JSONResponse) else Response(status_code=204)


def _check_remote_write_headers(request: Request, body: bytes) -> None:
    encoding = request.headers.get("content-encoding", "snappy").strip().lower()
    if encoding != "snappy":
        raise _Refused(body, PushRefused(
            415, f"Content-Encoding {encoding!r} is not supported",
            "send the body snappy-compressed with 'Content-Encoding: snappy'"))
    content_type = request.headers.get("content-type", "application/x-protobuf").lower()
    if "io.prometheus.write.v2" in content_type:
        raise _Refused(body, PushRefused(
            415, "remote write 2.0 (io.prometheus.write.v2.Request) is not supported",
            "configure remote_write with protobuf_message: prometheus.WriteRequest"))


@router.post(
    "/alertmanager",
    summary="Alertmanager webhook (payload version 4)",
    openapi_extra=_WEBHOOK_BODY,
    responses={200: {"description": "landed durably: {batch_id, duplicate}"},
               413: {"description": "body over OPSLAKE_MAX_PUSH_BYTES"},
               422: {"description": "not a version 4 webhook payload"},
               503: {"description": "the lake cannot be written; retry"},
               **PUSH_AUTH_RESPONSES},
)
async def alertmanager_webhook(request: Request, _p: Pusher) -> Any:
    """Validate an Alertmanager notification, land it exactly as sent, answer with its batch."""
    service: PushService = request.app.state.push
    result = await service.accept(
        request, ALERTMANAGER, fmt="json", connector="alertmanager-webhook/4", status=422,
        validate=check_webhook, errors=(RecordError,),
        what="not an Alertmanager webhook payload",
        fix="send the JSON body Alertmanager's webhook_config posts (version \"4\", alerts "
            "with labels and startsAt)")
    return pushed(result)


def pushed(result: LandedBatch | JSONResponse) -> Any:
    """The answer to an accepted JSON push: its batch id and whether it was a redelivery."""
    if isinstance(result, JSONResponse):
        return result
    return {"batch_id": result.batch_id, "duplicate": result.duplicate}


def check_webhook(body: bytes) -> None:
    """Raise ``RecordError`` unless ``body`` is a version 4 webhook payload."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RecordError(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RecordError("body must be a JSON object")
    if payload.get("version") != "4":
        raise RecordError(f"version is {payload.get('version')!r}; only \"4\" is accepted")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise RecordError("field 'alerts' must be an array")
    for index, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise RecordError(f"alerts[{index}] must be an object")
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise RecordError(f"alerts[{index}].labels must be an object of strings")
        starts = alert.get("startsAt")
        if not isinstance(starts, str):
            raise RecordError(f"alerts[{index}].startsAt must be an RFC 3339 timestamp")
        try:
            parse_timestamp(starts)
        except RecordError as exc:
            raise RecordError(f"alerts[{index}].startsAt: {exc}") from None
