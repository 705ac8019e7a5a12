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
from dataclasses import dataclass

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from opslake.errors import ConfigError, InputError, NotFoundError, OpsLakeError, StorageError
from opslake.security.audit import AuditLog
from opslake.security.identity import AuthError, Forbidden, IdentityStore, QuotaExceeded
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
    """What the request path needs: identities and the audit log."""

    identity: IdentityStore
    audit: AuditLog

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
        if principal.key_id:
            await run_in_threadpool(request.app.state.security.identity.check_quota,
                                    principal.key_id)
        return principal

    return dependency


def install(app, security: Security) -> None:
    """Attach the security state, the error handlers and the audit middleware to ``app``."""
    app.state.security = security

    @app.exception_handler(OpsLakeError)
    async def _opslake_error(_request: Request, exc: OpsLakeError) -> JSONResponse:
        return error_response(exc)

    @app.middleware("http")
    async def audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                    ) -> Response:
        request.state.rows = 0
        try:
            request.state.principal = await run_in_threadpool(security.principal, request)
        except OpsLakeError as exc:
            request.state.principal = ANONYMOUS
            response: Response = error_response(exc)
        else:
            response = await call_next(request)
        principal: Principal = request.state.principal
        route = request.scope.get("route")
        action = f"{request.method} {getattr(route, 'path', request.url.path)}"
        entry = {"who": principal.user, "role": principal.role, "key_id": principal.key_id,
                 "action": action,
                 "params": {**request.path_params, **dict(request.query_params)},
                 "status": response.status_code, "rows": int(request.state.rows),
                 "client": request.client.host if request.client else None}
        await run_in_threadpool(_record, security, entry, principal)
        return response


def _record(security: Security, entry: dict, principal: Principal) -> None:
    security.audit.append(**entry)
    if principal.key_id:
        security.identity.record_use(principal.key_id, entry["action"], entry["rows"],
                                     entry["status"])
