"""Push ingestion: Prometheus remote write and Alertmanager webhooks, landed before acknowledging.

A push is acknowledged only after ``LandingZone.write`` returned, i.e. once its bytes and
manifest row are durable; a sender that sees no acknowledgement retries, and the batch id
(``X-OpsLake-Batch-Id`` or the content hash) makes the retry a recognised duplicate. Before
landing, a body is validated by the bronze parser of its source, so what is acknowledged
parses whole; compressed bodies are bounded in size and ratio before they expand. Bodies
that are refused are kept as quarantine rows (``opslake.api.rejects``) with the reason.

Every push needs ``Authorization: Bearer <API key>`` with the scope ``ingest:write`` (role
``ingest`` for machine senders; see ``opslake.security.roles``). The credential is checked
before the body is read: a push without one (401) or with a key lacking the scope (403) is
neither landed nor quarantined, and, like every request, it is audited. The key's id is
recorded as the ``sender`` of the landed batch or quarantined body, so the quality contracts
can judge (and name) each sender on its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from opslake.api import rejects
from opslake.api.auth import GUARDED, error_responses, requires
from opslake.errors import OpsLakeError, PushRefused
from opslake.ingest.parsers import ParseResult, alertmanager, remote_write
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.security.roles import Principal
from opslake.settings import Settings

log = logging.getLogger(__name__)

BATCH_HEADER = "X-OpsLake-Batch-Id"
#: Most a gzip body may expand to, in times its size. Alertmanager payloads of 100 and
#: 10,000 distinct alerts gzip 27 and 42 times, 1,000 identical Zabbix alerts 196 times;
#: gzip itself reaches 1,030 on a run of one byte (a bomb).
MAX_GZIP_RATIO = 400
#: A push endpoint's validator: the bronze parser of its source.
Parser = Callable[[bytes, LandedBatch], ParseResult]
PROMETHEUS, ALERTMANAGER = "prometheus", "alertmanager"
_BATCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_VERSION_RE = re.compile(r"^[0-9][0-9.]{0,15}$")

router = APIRouter(prefix="/v1/ingest", tags=["ingest"])
#: The scope every push endpoint requires.
INGEST_SCOPE = "ingest:write"
#: The caller of a push: holds ``ingest:write`` (and is within its key's daily quota).
Pusher = Annotated[Principal, Depends(requires(INGEST_SCOPE))]
#: OpenAPI responses for the credential errors of a push (401, 403, 429; 503 is the lake's).
PUSH_AUTH_RESPONSES = {
    code: spec for code, spec in error_responses(*GUARDED).items() if code != 503
}


@dataclass
class PushService:
    """What the push endpoints share: the landing zone, the size limits, per-batch locks."""

    landing: LandingZone
    max_bytes: int = Settings.max_push_bytes
    max_decoded_bytes: int = Settings.max_decoded_bytes
    _locks: dict[tuple[str, str], tuple[threading.Lock, int]] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    @contextlib.contextmanager
    def _batch_lock(self, key: tuple[str, str]) -> Iterator[None]:
        # Landing's duplicate check is read-then-write; two concurrent deliveries of one
        # batch must not both land it, so they queue on a per-batch lock (one process).
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def land_now(
        self, source: str, body: bytes, *, fmt: str, batch_id: str, connector: str, sender: str
    ) -> LandedBatch:
        """Land ``body`` (in a worker thread); returns once bytes and manifest are durable."""
        with self._batch_lock((source, batch_id)):
            return self.landing.write(
                source,
                body,
                fmt=fmt,
                batch_id=batch_id,
                received_at=datetime.now(UTC),
                connector=connector,
                sender=sender,
            )

    async def land(
        self, source: str, body: bytes, *, fmt: str, batch_id: str, connector: str, sender: str
    ) -> LandedBatch:
        """Land ``body`` off the event loop; returns once bytes and manifest are durable."""
        return await run_in_threadpool(
            self.land_now,
            source,
            body,
            fmt=fmt,
            batch_id=batch_id,
            connector=connector,
            sender=sender,
        )

    async def accept(
        self,
        request: Request,
        source: str,
        *,
        fmt: str,
        connector: str,
        status: int,
        parse: Parser,
        what: str,
        fix: str,
        sender: str,
    ) -> LandedBatch | JSONResponse:
        """The whole push: check headers, read, decode, validate, land durably, or refuse.

        Content type and encoding are checked before the body is read (415); a body over
        ``max_bytes``, or expanding past ``max_decoded_bytes``, is 413. ``parse`` (the
        bronze parser of ``source``) validates the body off the event loop on a provisional
        batch: any reject refuses the whole body with ``status``, ``what`` and ``fix``, so
        what is acknowledged parses in bronze. Refused bodies are kept in quarantine. A lake
        that cannot be written answers 503 so the sender retries. ``sender``
        (``push_sender``) is recorded with the landed batch or the quarantined body.
        """
        try:
            if refusal := _header_refusal(request, fmt):
                raise _Refused((await _read_upto(request, rejects.MAX_RAW_CHARS))[0], refusal)
            body = await self.read_body(request)
            batch_id = _batch_id(request, body, status)  # a bad id is refused before decoding

            def check_and_land() -> LandedBatch:
                # One trip to a worker thread for decoding, validating and landing: each
                # trip costs the event loop about as much as a small body's checks.
                decoded, checked_id = self.decoded(request, body, fmt, status), batch_id
                if decoded is not body:  # gzip: the content hash is of what lands
                    checked_id = _batch_id(request, decoded, status)
                _validate(
                    decoded,
                    parse,
                    _provisional(source, checked_id, fmt=fmt, connector=connector, sender=sender),
                    status=status,
                    what=what,
                    fix=fix,
                )
                return self.land_now(
                    source,
                    decoded,
                    fmt=fmt,
                    batch_id=checked_id,
                    connector=connector,
                    sender=sender,
                )

            return await run_in_threadpool(check_and_land)
        except _Refused as refused:
            return await self.refuse(source, refused, sender)
        except (OpsLakeError, OSError) as exc:
            return _unavailable(exc)

    async def read_body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it exceeds ``max_bytes``."""
        declared = request.headers.get("content-length", "")
        limit = self.max_bytes
        too_large = declared.isdigit() and int(declared) > limit
        # Past the limit, keep only what the quarantine row stores and stop reading.
        body, over = await _read_upto(request, rejects.MAX_RAW_CHARS if too_large else limit)
        if too_large or over:
            raise _Refused(
                body,
                PushRefused(
                    413,
                    f"body{f' of {int(declared):,} bytes' if declared.isdigit() else ''} "
                    f"is larger than the {limit:,} bytes accepted",
                    "send smaller batches (Prometheus: lower queue_config.max_samples_per_send) "
                    "or raise OPSLAKE_MAX_PUSH_BYTES",
                ),
            )
        return body

    def decoded(self, request: Request, body: bytes, fmt: str, status: int) -> bytes:
        """The body as landed: gzip inflated; refused (413) when it expands past the bounds.

        A remote-write body stays snappy-compressed as Prometheus sent it; its decoded size
        is read from the snappy header, so a bomb is refused before decompressing.
        """
        if fmt == "pb":
            try:
                remote_write.decoded_size(
                    body, max_bytes=self.max_decoded_bytes, max_ratio=remote_write.MAX_RATIO
                )
            except remote_write.RemoteWriteTooLarge as exc:
                raise _Refused(body, PushRefused(413, str(exc), _DECODED_FIX)) from None
            except remote_write.RemoteWriteError as exc:
                raise _Refused(body, PushRefused(status, str(exc), _SNAPPY_FIX)) from None
            return body
        if _encoding(request, fmt) != "gzip":
            return body
        bound = min(self.max_decoded_bytes, MAX_GZIP_RATIO * len(body))
        inflater = zlib.decompressobj(wbits=31)
        try:
            # max_length stops zlib once past the bound: a bomb costs what the bound allows.
            data = inflater.decompress(body, bound + 1)
        except zlib.error as exc:
            raise _Refused(
                body, PushRefused(status, f"body is not gzip data ({exc})", _GZIP_FIX)
            ) from None
        if len(data) > bound:
            raise _Refused(
                body,
                PushRefused(
                    413,
                    f"gzip body of {len(body):,} bytes expands past {bound:,} bytes (at most "
                    f"{self.max_decoded_bytes:,} bytes and {MAX_GZIP_RATIO} times its size)",
                    _DECODED_FIX,
                ),
            )
        if not inflater.eof or inflater.unused_data:
            raise _Refused(
                body,
                PushRefused(
                    status,
                    "body is not one complete gzip stream (truncated, or data after it)",
                    _GZIP_FIX,
                ),
            )
        return data

    async def refuse(self, source: str, refused: _Refused, sender: str) -> JSONResponse:
        """Keep the refused body as a quarantine row and answer with the error and its fix."""
        exc = refused.reason
        try:
            await run_in_threadpool(
                rejects.append_push_reject,
                self.landing.lake,
                source,
                refused.body,
                f"HTTP {exc.status}: {exc.error}",
                sender=sender,
            )
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
        raise _Refused(
            body,
            PushRefused(
                status,
                f"{BATCH_HEADER} {given[:140]!r} is not a valid batch id",
                "use letters, digits, '.', '-' and '_' (at most 128), or omit the header to "
                "use the content hash",
            ),
        )
    return given


_DECODED_FIX = (
    "send smaller batches (Prometheus: lower queue_config.max_samples_per_send), "
    "or the operator raises OPSLAKE_MAX_DECODED_BYTES"
)
_SNAPPY_FIX = (
    "send a snappy (block format) compressed prometheus.WriteRequest, as "
    "Prometheus remote_write does"
)
_GZIP_FIX = "send the body plain, or gzip-compressed whole with 'Content-Encoding: gzip'"
#: Media type and content encodings of each landed format; no encoding means the first.
_MEDIA = {
    "pb": ("application/x-protobuf", ("snappy",)),
    "json": ("application/json", ("identity", "gzip", "x-gzip")),
}
#: Longest reason quoted in a refusal: a reason may quote a field, never a whole body.
_MAX_ERROR = 500


async def _read_upto(request: Request, limit: int) -> tuple[bytes, bool]:
    """The body, or its first chunks once past ``limit`` bytes; and whether it went past."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), True
    return b"".join(chunks), False


def _encoding(request: Request, fmt: str) -> str:
    """The body's Content-Encoding, lower case; the format's own when the header is absent."""
    given = request.headers.get("content-encoding", "").strip().lower()
    return given or _MEDIA[fmt][1][0]


def _header_refusal(request: Request, fmt: str) -> PushRefused | None:
    """415 for a Content-Type or Content-Encoding ``fmt`` does not take; None when fine.

    A missing Content-Type is taken as the format's own (curl and some senders omit it).
    """
    media_type, encodings = _MEDIA[fmt]
    encoding = _encoding(request, fmt)
    if encoding not in encodings:
        return PushRefused(
            415,
            f"Content-Encoding {encoding[:40]!r} is not supported",
            f"send the body with Content-Encoding {' or '.join(encodings)}",
        )
    given = request.headers.get("content-type")
    if given is None:
        return None
    media, *params = (part.strip().lower() for part in given.split(";"))
    if fmt == "pb" and any("io.prometheus.write.v2" in p for p in params):
        return PushRefused(
            415,
            "remote write 2.0 (io.prometheus.write.v2.Request) is not supported",
            "configure remote_write with protobuf_message: prometheus.WriteRequest",
        )
    charset = next(
        (p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")), "utf-8"
    )
    if media != media_type or charset not in ("utf-8", "utf8"):
        return PushRefused(
            415,
            f"Content-Type {given[:80]!r} is not supported",
            f"send the body as Content-Type: {media_type}{' (UTF-8)' if fmt == 'json' else ''}",
        )
    return None


def _provisional(
    source: str, batch_id: str, *, fmt: str, connector: str, sender: str
) -> LandedBatch:
    """The manifest row the body would get, for the bronze parser to validate it against."""
    now = datetime.now(UTC)
    return LandedBatch(
        source=source,
        batch_id=batch_id,
        dt=now.date().isoformat(),
        path="",
        sha256="",
        bytes=0,
        received_at=now.isoformat(),
        fmt=fmt,
        connector=connector,
        sender=sender,
    )


def _validate(
    body: bytes, parse: Parser, batch: LandedBatch, *, status: int, what: str, fix: str
) -> None:
    """Refuse ``body`` unless the bronze parser takes all of it: one validator, not two."""
    if not body.strip():
        raise _Refused(body, PushRefused(status, f"{what}: the body is empty", fix))
    try:
        result = parse(body, batch)
    except Exception:  # a parser bug: the sender still gets a 4xx, the operator the trace
        log.exception("validating a %s push raised instead of rejecting", batch.source)
        raise _Refused(
            body,
            PushRefused(
                422,
                "the body could not be validated",
                "check the body against docs/sources.md; if it is right, report this to the "
                "operator (the service log has the details)",
            ),
        ) from None
    if result.rejects:
        first, more = result.rejects[0], len(result.rejects) - 1
        reason = (
            first.reason if len(first.reason) <= _MAX_ERROR else f"{first.reason[:_MAX_ERROR]}…"
        )
        raise _Refused(
            body,
            PushRefused(status, f"{what}: {reason}{f' (and {more:,} more)' if more else ''}", fix),
        )


def _unavailable(exc: Exception) -> JSONResponse:
    """503 for a lake that cannot be written: the sender keeps the batch and retries."""
    log.error("landing failed: %s", exc)
    return JSONResponse(
        {
            "error": f"the lake cannot be written: {exc}",
            "fix": "retry later; the operator should check OPSLAKE_HOME",
        },
        status_code=503,
    )


def push_sender(pusher: Principal) -> str:
    """Who a push came from, as recorded with its batch: the API key id (never the secret)."""
    return pusher.key_id or f"user:{pusher.user}"


_REMOTE_WRITE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-protobuf": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "prometheus.WriteRequest, snappy block format",
                }
            }
        },
    }
}
_WEBHOOK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "Alertmanager webhook payload, version 4",
                    "required": ["version", "alerts"],
                }
            }
        },
    }
}


@router.post(
    "/prometheus/remote_write",
    status_code=204,
    response_class=Response,
    summary="Prometheus remote write 1.0 (snappy + protobuf WriteRequest)",
    openapi_extra=_REMOTE_WRITE_BODY,
    responses={
        204: {"description": "landed durably (or already landed)"},
        400: {
            "description": "not a snappy-compressed WriteRequest (of at most "
            "50,000 series and 1,000,000 series, labels and "
            "samples), or a series bronze would reject; not "
            "retried"
        },
        413: {
            "description": "body over OPSLAKE_MAX_PUSH_BYTES, or decoding past "
            "OPSLAKE_MAX_DECODED_BYTES or 18 times its size"
        },
        415: {"description": "a content type, encoding or protocol version not supported"},
        422: {"description": "the body could not be validated"},
        503: {"description": "the lake cannot be written; retry"},
        **PUSH_AUTH_RESPONSES,
    },
)
async def prometheus_remote_write(request: Request, pusher: Pusher) -> Response:
    """Validate a remote-write request with the bronze parser, land it, then answer 204."""
    service: PushService = request.app.state.push
    version = request.headers.get("X-Prometheus-Remote-Write-Version", "0.1.0")
    result = await service.accept(
        request,
        PROMETHEUS,
        fmt="pb",
        connector=f"prometheus-remote-write/{version if _VERSION_RE.match(version) else '?'}",
        status=400,
        parse=remote_write.check,
        what="not a Prometheus remote-write request",
        fix=_SNAPPY_FIX,
        sender=push_sender(pusher),
    )
    return result if isinstance(result, JSONResponse) else Response(status_code=204)


@router.post(
    "/alertmanager",
    summary="Alertmanager webhook (payload version 4)",
    openapi_extra=_WEBHOOK_BODY,
    responses={
        200: {"description": "landed durably: {batch_id, duplicate}"},
        413: {
            "description": "body over OPSLAKE_MAX_PUSH_BYTES, or gzip expanding past "
            "OPSLAKE_MAX_DECODED_BYTES or 400 times its size"
        },
        415: {"description": "not application/json, or an encoding other than gzip"},
        422: {"description": "not a version 4 webhook payload that bronze parses whole"},
        503: {"description": "the lake cannot be written; retry"},
        **PUSH_AUTH_RESPONSES,
    },
)
async def alertmanager_webhook(request: Request, pusher: Pusher) -> Any:
    """Validate an Alertmanager notification, land it as sent (gzip inflated), answer its batch."""
    service: PushService = request.app.state.push
    result = await service.accept(
        request,
        ALERTMANAGER,
        fmt="json",
        connector="alertmanager-webhook/4",
        status=422,
        parse=alertmanager.parse,
        what="not an Alertmanager webhook payload",
        fix='send the JSON body Alertmanager\'s webhook_config posts (version "4", alerts '
        "with status, labels, startsAt and fingerprint)",
        sender=push_sender(pusher),
    )
    return pushed(result)


def pushed(result: LandedBatch | JSONResponse) -> Any:
    """The answer to an accepted JSON push: its batch id and whether it was a redelivery."""
    if isinstance(result, JSONResponse):
        return result
    return {"batch_id": result.batch_id, "duplicate": result.duplicate}
