"""Who is calling, what they may do, and the audit record of every request (S6.6a-c, S6.8b).

A request carries ``Authorization: Bearer <credential>``: an API key (``olk_…``, stored only
as a salted hash) or a session token from ``POST /v1/auth/login`` (password plus, for
administrators, a TOTP code); a GET or HEAD may instead carry the session cookie of the sign-in
page (``opslake.api.signin``). No credential is the anonymous principal, which may reach only
the health check and the API description. Each endpoint requires one scope; a request allowed
to reach it first reserves one unit of the daily quota of its key (a session's: of its user),
kept as usage once answered and refunded when it fails through no fault of the caller. Every
request, allowed or not, is appended to the SM3-chained audit log with who, what, the
parameters, the status and the rows returned (``opslake audit verify`` checks the chain).

The credential comes before the body: the audit middleware authenticates every request and,
for an endpoint that needs a scope, refuses a caller without it (401/403) before the body is
read or parsed, closing the connection rather than reading what was sent. The audit entry is
on disk before the status line leaves, so a log that cannot be written (a full disk) answers
503 with ``Retry-After`` instead of an answer that was never recorded. Malformed parameters
or bodies answer 422 ``{"error", "fix"}`` naming the fields at fault, never echoing what was
sent (a password).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opslake.api.answers import Answer, AnswerCache
from opslake.api.signin import SAFE_METHODS, SESSION_COOKIE
from opslake.errors import (
    AuthError,
    ConfigError,
    Forbidden,
    InputError,
    NotFoundError,
    OpsLakeError,
    QuotaExceeded,
    SecurityError,
    StorageError,
)
from opslake.security.audit import AuditLog
from opslake.security.identity import Holder, IdentityStore
from opslake.security.metering import UsageMeter
from opslake.security.roles import ANONYMOUS, Principal

log = logging.getLogger(__name__)

KEY_PREFIX = "olk_"
TOTP_HEADER = "X-OpsLake-TOTP"
#: Seconds a 503 asks the caller to wait before retrying (a disk being freed, a rebuild).
RETRY_AFTER_S = 30
#: Error class → HTTP status and what the caller should do.
STATUS: tuple[tuple[type[OpsLakeError], int], ...] = (
    (AuthError, 401),
    (Forbidden, 403),
    (QuotaExceeded, 429),
    (NotFoundError, 404),
    (ConfigError, 400),
    (InputError, 400),
    (StorageError, 503),
)


#: What each error status means, for the API description.
_MEANING = {
    400: "The request is well-formed but cannot be answered as asked (a range, grain or "
    "breakdown the metric does not have); 'fix' says what to change.",
    401: "No credential, or a wrong, expired or revoked one (or, for administrative "
    "actions, a missing or wrong TOTP code).",
    403: "The caller is known but its role or key lacks the scope, or the rows asked for "
    "belong to other departments.",
    404: "What was asked for by name does not exist (yet): the metric, or the warehouse "
    "table, or any rows of it.",
    422: "The parameters or the body do not match this description; 'error' names the "
    "fields at fault (never what was sent).",
    429: "The API key (or, for a session, its user) used up its daily quota; 'error' says "
    "when it resets.",
    503: "The serving warehouse, the audit log or the state directory cannot be read or "
    "written right now (a full disk); retry after 'Retry-After' seconds.",
}


class ErrorBody(BaseModel):
    """Every OpsLake error: what went wrong and what to do about it."""

    error: str
    fix: str


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` for the error statuses an endpoint can answer with."""
    return {code: {"model": ErrorBody, "description": _MEANING[code]} for code in codes}


#: Errors every endpoint behind :func:`requires` may answer with.
GUARDED = (401, 403, 429, 503)


@dataclass
class Security:
    """What the request path needs: identities, key metering and the audit log."""

    identity: IdentityStore
    audit: AuditLog
    meter: UsageMeter = field(init=False)

    def __post_init__(self) -> None:
        self.meter = UsageMeter(self.identity)

    def principal(self, request: Request) -> Principal:
        """The principal of a request's credential (anonymous without one)."""
        header = request.headers.get("Authorization", "")
        if not header:
            return self._cookie_principal(request)
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise AuthError("the Authorization header must be 'Bearer <API key or session token>'")
        if credential.startswith(KEY_PREFIX):
            return self.identity.authenticate_key(credential)
        return self.identity.session(credential)

    def _cookie_principal(self, request: Request) -> Principal:
        """The session of the sign-in page's cookie, for GET and HEAD only (CSRF: a forged
        cross-site request may carry the cookie, never a Bearer header); a stale cookie is
        anonymous, so the sign-in page still opens for it."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token or request.method not in SAFE_METHODS:
            return ANONYMOUS
        try:
            return self.identity.session(token)
        except AuthError:
            return ANONYMOUS


def error_response(exc: OpsLakeError) -> JSONResponse:
    """The JSON error for an OpsLake error: ``{"error", "fix"}`` with its status."""
    status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
    text = str(exc)
    error, _, fix = text.partition("; ")
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": error, "fix": fix or text}, status_code=status, headers=headers)


def refusal(request: Request, exc: OpsLakeError) -> JSONResponse:
    """The error for a refused caller, whose body may be unread: the connection closes."""
    response = error_response(exc)
    headers = request.headers
    if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
        # Otherwise the server reads (and drops) all of the body to keep the connection
        # open: an anonymous caller could make it read any amount.
        response.headers["Connection"] = "close"
    return response


# An HTTPException because FastAPI passes those on from reading a body (others become 400).
class _Refused(HTTPException):
    """Raised from ``receive`` when a body is about to be read for a caller who may not send it."""

    def __init__(self, error: OpsLakeError) -> None:
        super().__init__(401 if isinstance(error, AuthError) else 403, str(error))
        self.error = error


def invalid_response(exc: RequestValidationError) -> JSONResponse:
    """422 ``{"error", "fix"}`` naming each field at fault and why, without what was sent."""
    faults = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return JSONResponse(
        {
            "error": f"the request does not match the API description ({faults})",
            "fix": "correct the fields named, as /openapi.json describes them, "
            "and send the request again",
        },
        status_code=422,
    )


def authorize(principal: Principal, scope: str) -> None:
    """Raise AuthError (anonymous) or Forbidden unless ``principal`` holds ``scope``."""
    if principal.allows(scope):
        return
    if principal is ANONYMOUS:
        raise AuthError(
            f"this endpoint needs the scope {scope}; send 'Authorization: Bearer <API key>'"
        )
    raise Forbidden(
        f"role {principal.role} (or this key) lacks the scope {scope}; "
        "ask an administrator for a key or role that has it"
    )


async def reserve_quota(security: Security, request: Request) -> None:
    """Reserve one unit of the caller's daily quota for ``request`` (QuotaExceeded when none
    is left); the audit middleware keeps or refunds it once the answer's status is known."""
    state = request.scope["state"]
    if "reservation" in state:
        return
    holder = Holder.of(state["principal"])
    # From memory, but for one read of the store per holder and second.
    reservation = security.meter.try_reserve(holder)
    if reservation is None:
        await run_in_threadpool(_reserve_into, security.meter, holder, state)
    else:
        state["reservation"] = reservation


def _reserve_into(meter: UsageMeter, holder: Holder, state: dict) -> None:
    # Stored by the thread itself: a request cancelled while it waits still has its unit
    # where the audit middleware refunds it.
    state["reservation"] = meter.reserve(holder)


def _charged(status: int) -> bool:
    """Whether an answer with ``status`` keeps its reserved unit: the request was answered
    (2xx, 4xx) and not refused for its credential (401, 403); a 5xx is refunded."""
    return status < 500 and status not in (401, 403)


def requires(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller, who must hold ``scope`` (and a unit of its quota)."""

    async def dependency(request: Request) -> Principal:
        principal: Principal = request.state.principal
        authorize(principal, scope)
        await reserve_quota(request.app.state.security, request)
        return principal

    # The audit middleware reads it to refuse callers before the body is read.
    dependency.required_scope = scope  # type: ignore[attr-defined]
    return dependency


def _required_scope(dependant: Dependant | None) -> str | None:
    """The scope a :func:`requires` dependency of ``dependant`` (at any depth) asks for."""
    for sub in dependant.dependencies if dependant is not None else ():
        scope = getattr(sub.call, "required_scope", None) or _required_scope(sub)
        if scope:
            return scope
    return None


def _describe_422(app: FastAPI) -> None:
    """Document 422 answers as ``{"error", "fix"}``, which :func:`invalid_response` sends."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for operation in (op for ops in schema["paths"].values() for op in ops.values()):
                answer = operation.get("responses", {}).get("422")
                if answer is not None and "content" in answer:
                    operation["responses"]["422"] = {
                        "description": _MEANING[422],
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorBody"}
                            }
                        },
                    }
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI, security: Security, answers: AnswerCache | None = None) -> None:
    """Attach the security state, the error handlers and the audit middleware to ``app``
    (serving repeated requests from ``answers`` when given)."""
    app.state.security = security

    @app.exception_handler(OpsLakeError)
    async def _opslake_error(request: Request, exc: OpsLakeError) -> JSONResponse:
        # A refused caller's body is mostly not read (the endpoints' scope checks come first).
        return refusal(request, exc) if isinstance(exc, SecurityError) else error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_response(exc)

    @app.exception_handler(_Refused)
    async def _refused(request: Request, exc: _Refused) -> JSONResponse:
        return refusal(request, exc.error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # FastAPI's own: a body that does not parse
            return JSONResponse(
                {
                    "error": "the body is not JSON this endpoint can read",
                    "fix": "send a JSON object as /openapi.json describes it",
                },
                status_code=400,
            )
        return await http_exception_handler(request, exc)

    _describe_422(app)
    app.add_middleware(AuditMiddleware, security=security, answers=answers)


class AuditMiddleware:
    """Authenticates every HTTP request and audits it before its answer leaves.

    A plain ASGI middleware (not ``@app.middleware``, whose per-request task and streams cost
    more than the rest of a cached answer): the principal goes to ``scope["state"]`` for the
    endpoints. A caller without the scope its endpoint needs is refused when the body is
    first asked for (FastAPI reads it before it runs the endpoint's dependencies), so no byte
    of it is read. A GET whose answer is kept in the :class:`AnswerCache` is answered here, after
    a unit of the caller's quota is reserved, without routing it. The response's status line
    is held until its audit entry is on disk (for a stream, before the stream starts); when
    the entry cannot be written the caller gets a 503 instead and the endpoint's answer is
    dropped. A reserved unit is kept or refunded by the status audited, and refunded when the
    request is never audited.
    """

    def __init__(
        self, app: ASGIApp, security: Security, answers: AnswerCache | None = None
    ) -> None:
        self.app = app
        self.security = security
        self.answers = answers
        # id of a route (which cannot be hashed; routes live as long as the app) -> its scope
        self._scopes: dict[int, str | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["rows"] = 0
        state["principal"] = ANONYMOUS
        request = Request(scope)
        audited = self._audited(request, send)
        try:
            await self._serve(request, receive, audited)
        except Exception:
            if state.get("_unaudited"):
                return  # answered 503 in place of what the app was sending
            if not state.get("_audited"):
                await self._record(request, 500)
            raise
        finally:
            # Still open when the request was never audited (its entry could not be written,
            # or it was cancelled): no answer got through, so the unit goes back.
            if (reservation := state.get("reservation")) is not None:
                self.security.meter.refund(reservation)

    async def _serve(self, request: Request, receive: Receive, send: Send) -> None:
        scope, state = request.scope, request.scope["state"]
        try:
            state["principal"] = principal = await self._principal(request)
        except OpsLakeError as exc:
            await refusal(request, exc)(scope, receive, send)
            return
        if self.answers is not None and principal is not ANONYMOUS and scope["method"] == "GET":
            key = AnswerCache.key(principal, scope["path"], scope["query_string"])
            kept = self.answers.get(key)
            if kept is not None:
                await self._replay(request, kept, receive, send)
                return
            state["answer_key"] = key
        await self.app(scope, self._guarded(request, receive), send)

    def _guarded(self, request: Request, receive: Receive) -> Receive:
        """``receive`` that first checks the caller holds the routed endpoint's scope."""
        checked = False

        async def guarded_receive() -> Message:
            nonlocal checked
            if not checked:
                checked = True
                route = request.scope.get("route")
                if id(route) not in self._scopes:
                    self._scopes[id(route)] = _required_scope(getattr(route, "dependant", None))
                needed = self._scopes[id(route)]
                if needed is not None:
                    try:
                        authorize(request.scope["state"]["principal"], needed)
                    except OpsLakeError as exc:
                        raise _Refused(exc) from None
            return await receive()

        return guarded_receive

    async def _principal(self, request: Request) -> Principal:
        header = request.headers.get("Authorization", "")
        if header[7:].startswith(KEY_PREFIX):
            # Keys are verified from memory but for one store read per key and few seconds.
            return self.security.principal(request)
        return await run_in_threadpool(self.security.principal, request)

    async def _replay(self, request: Request, kept: Answer, receive: Receive, send: Send) -> None:
        state = request.scope["state"]
        state["action"], state["params"] = kept.action, kept.params
        response: Response
        try:
            await reserve_quota(self.security, request)
        except OpsLakeError as exc:
            response = error_response(exc)
        else:
            state["rows"] = kept.rows
            response = Response(kept.body, media_type=kept.media_type)
        await response(request.scope, receive, send)

    def _audited(self, request: Request, send: Send) -> Send:
        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                try:
                    await self._record(request, message["status"])
                except StorageError as exc:
                    # Nothing has left yet: answer 503, and stop the app (a stream would
                    # otherwise run on) by raising into it; __call__ swallows what comes back.
                    log.error("answering 503 to %s %s: %s", request.method, request.url.path, exc)
                    request.scope["state"]["_unaudited"] = True
                    await error_response(exc)(request.scope, _no_body, send)
                    raise
            await send(message)

        return audited_send

    async def _record(self, request: Request, status: int) -> None:
        state = request.scope["state"]
        state["_audited"] = True
        principal: Principal = state["principal"]
        route = request.scope.get("route")
        # Not getattr(route, "path", request.url.path): its default would build the URL on
        # every request, routed or not.
        action = (
            state.get("action")
            or f"{request.method} {route.path if route is not None else request.url.path}"
        )
        params = state.get("params") or {**request.path_params, **dict(request.query_params)}
        rows = int(state.get("rows", 0))
        await self.security.audit.append_async(
            who=principal.user,
            role=principal.role,
            key_id=principal.key_id,
            action=action,
            params=params,
            status=status,
            rows=rows,
            client=request.client.host if request.client else None,
        )
        if (reservation := state.get("reservation")) is not None:
            if _charged(status):
                self.security.meter.keep(reservation, action, rows, status)
            else:
                self.security.meter.refund(reservation)
        if status == 200 and "answer_key" in state and "answer" in state:
            body, media_type, generation = state["answer"]
            self.answers.put(
                state["answer_key"], generation, Answer(body, media_type, action, params, rows)
            )


async def _no_body() -> Message:
    """``receive`` for an answer that reads nothing of the request."""
    return {"type": "http.request", "body": b"", "more_body": False}
