"""Who is calling, what they may do, and the audit record of every request (S6.6a-c, S6.8b).

A request carries ``Authorization: Bearer <credential>``: an API key (``olk_…``, stored only
as a salted hash) or a session token from ``POST /v1/auth/login`` (password plus, for
administrators, a TOTP code). No credential is the anonymous principal, which may reach only
the health check and the API description. Each endpoint requires one scope; an API key's
calls also count against its daily quota and its usage statistics. Every request, allowed or
not, is appended to the SM3-chained audit log with who, what, the parameters, the status and
the rows returned (``opslake audit verify`` checks the chain).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opslake.api.answers import Answer, AnswerCache
from opslake.errors import ConfigError, InputError, NotFoundError, OpsLakeError, StorageError
from opslake.security.audit import AuditLog
from opslake.security.identity import AuthError, Forbidden, IdentityStore, QuotaExceeded
from opslake.security.metering import UsageMeter
from opslake.security.roles import ANONYMOUS, Principal

log = logging.getLogger(__name__)

KEY_PREFIX = "olk_"
TOTP_HEADER = "X-OpsLake-TOTP"
#: Error class → HTTP status and what the caller should do.
STATUS: tuple[tuple[type[OpsLakeError], int], ...] = (
    (AuthError, 401), (Forbidden, 403), (QuotaExceeded, 429), (NotFoundError, 404),
    (ConfigError, 400), (InputError, 400), (StorageError, 503),
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
    429: "The API key used up its daily quota; 'error' says when it resets.",
    503: "The serving warehouse or the audit log cannot be read or written right now.",
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
            return ANONYMOUS
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise AuthError("the Authorization header must be 'Bearer <API key or session "
                            "token>'")
        if credential.startswith(KEY_PREFIX):
            return self.identity.authenticate_key(credential)
        return self.identity.session(credential)


def error_response(exc: OpsLakeError) -> JSONResponse:
    """The JSON error for an OpsLake error: ``{"error", "fix"}`` with its status."""
    status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
    text = str(exc)
    error, _, fix = text.partition("; ")
    return JSONResponse({"error": error, "fix": fix or text}, status_code=status)


async def check_quota(security: Security, principal: Principal) -> None:
    """Raise QuotaExceeded when the caller's key has no requests left today."""
    # From memory, but for one read of the store per key and second.
    if principal.key_id and security.meter.remaining(principal.key_id) is None:
        await run_in_threadpool(security.meter.check, principal.key_id)


def requires(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller, who must hold ``scope`` (and be within quota)."""

    async def dependency(request: Request) -> Principal:
        principal: Principal = request.state.principal
        if not principal.allows(scope):
            if principal is ANONYMOUS:
                raise AuthError(f"this endpoint needs the scope {scope}; send "
                                "'Authorization: Bearer <API key>'")
            raise Forbidden(f"role {principal.role} (or this key) lacks the scope {scope}; "
                            "ask an administrator for a key or role that has it")
        await check_quota(request.app.state.security, principal)
        return principal

    return dependency


def install(app, security: Security, answers: AnswerCache | None = None) -> None:
    """Attach the security state, the error handlers and the audit middleware to ``app``
    (serving repeated requests from ``answers`` when given)."""
    app.state.security = security

    @app.exception_handler(OpsLakeError)
    async def _opslake_error(_request: Request, exc: OpsLakeError) -> JSONResponse:
        return error_response(exc)

    app.add_middleware(AuditMiddleware, security=security, answers=answers)


class AuditMiddleware:
    """Authenticates every HTTP request and audits it before its answer leaves.

    A plain ASGI middleware (not ``@app.middleware``, whose per-request task and streams cost
    more than the rest of a cached answer): the principal goes to ``scope["state"]`` for the
    endpoints, and the response's first message is held until the audit entry is on disk. A
    GET whose answer is kept in the :class:`AnswerCache` is answered here, after the caller's
    quota is checked, without routing it.
    """

    def __init__(self, app: ASGIApp, security: Security,
                 answers: AnswerCache | None = None) -> None:
        self.app = app
        self.security = security
        self.answers = answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["rows"] = 0
        request = Request(scope)
        try:
            principal = await self._principal(request)
        except OpsLakeError as exc:
            state["principal"] = ANONYMOUS
            await error_response(exc)(scope, receive, self._audited(request, send))
            return
        state["principal"] = principal
        if self.answers is not None and principal is not ANONYMOUS and scope["method"] == "GET":
            key = AnswerCache.key(principal, scope["path"], scope["query_string"])
            kept = self.answers.get(key)
            if kept is not None:
                await self._replay(request, kept, receive, send)
                return
            state["answer_key"] = key
        try:
            await self.app(scope, receive, self._audited(request, send))
        except Exception:
            if not state.get("_audited"):
                await self._record(request, 500)
            raise

    async def _principal(self, request: Request) -> Principal:
        header = request.headers.get("Authorization", "")
        if header[7:].startswith(KEY_PREFIX):
            # Keys are verified from memory but for one store read per key and few seconds.
            return self.security.principal(request)
        return await run_in_threadpool(self.security.principal, request)

    async def _replay(self, request: Request, kept: Answer, receive: Receive, send: Send
                      ) -> None:
        state = request.scope["state"]
        state["action"], state["params"] = kept.action, kept.params
        response: Response
        try:
            await check_quota(self.security, state["principal"])
        except OpsLakeError as exc:
            response = error_response(exc)
        else:
            state["rows"] = kept.rows
            response = Response(kept.body, media_type=kept.media_type)
        await response(request.scope, receive, self._audited(request, send))

    def _audited(self, request: Request, send: Send) -> Send:
        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await self._record(request, message["status"])
            await send(message)

        return audited_send

    async def _record(self, request: Request, status: int) -> None:
        state = request.scope["state"]
        state["_audited"] = True
        principal: Principal = state["principal"]
        route = request.scope.get("route")
        action = state.get("action") or \
            f"{request.method} {getattr(route, 'path', request.url.path)}"
        params = state.get("params") or {**request.path_params, **dict(request.query_params)}
        rows = int(state.get("rows", 0))
        await self.security.audit.append_async(
            who=principal.user, role=principal.role, key_id=principal.key_id, action=action,
            params=params, status=status, rows=rows,
            client=request.client.host if request.client else None)
        if principal.key_id:
            self.security.meter.count(principal.key_id, action, rows, status)
        if status == 200 and "answer_key" in state and "answer" in state:
            body, media_type, generation = state["answer"]
            self.answers.put(state["answer_key"], generation,
                             Answer(body, media_type, action, params, rows))
