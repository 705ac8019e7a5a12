"""Sign-in and administration: sessions, API keys, usage, the audit chain, the webhook
egress allow-list (S6.6a, S6.8b, issue 16).

Administrative actions (keys, users, audit verification, egress) need the ``admin:*`` scope
and a current TOTP code in ``X-OpsLake-TOTP`` (two-factor authentication, MLPS level 3).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from opslake.api.auth import GUARDED, TOTP_HEADER, error_responses, requires
from opslake.api.data import IsoDate
from opslake.errors import AuthError
from opslake.security.egress import EgressPolicy
from opslake.security.roles import SCOPES, Principal

router = APIRouter(prefix="/v1", tags=["security"])
TotpCode = Annotated[str | None, Header(alias=TOTP_HEADER, pattern=r"^[0-9]{6}$")]
KeysAdmin = Annotated[Principal, Depends(requires("admin:keys"))]
AuditAdmin = Annotated[Principal, Depends(requires("admin:audit"))]
EgressAdmin = Annotated[Principal, Depends(requires("admin:egress"))]


class Login(BaseModel):
    """Credentials for a session."""

    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    totp: str | None = Field(default=None, pattern=r"^[0-9]{6}$")


class NewKey(BaseModel):
    """An API key to create."""

    user: str = Field(min_length=1, max_length=64)
    scopes: list[str] | None = Field(default=None, max_length=len(SCOPES))
    quota_per_day: int = Field(default=10_000, ge=1, le=10_000_000)
    expires_days: int = Field(default=365, ge=1, le=3650)


class SessionOut(BaseModel):
    """A new session."""

    token: str
    expires_at: str


class Ended(BaseModel):
    """A session ended."""

    ended: bool


class CreatedKey(BaseModel):
    """A new key; ``key`` is the secret, shown only here."""

    key_id: str
    key: str


class Revoked(BaseModel):
    """A key revoked."""

    revoked: str


class Listing(BaseModel):
    """Keys or usage counters."""

    count: int
    rows: list[dict[str, Any]]


class EgressIn(BaseModel):
    """A webhook destination to allow-list."""

    entry: str = Field(
        min_length=1,
        max_length=300,
        description=(
            "A host (hooks.example.gov.cn), *.suffix, an address or a CIDR (10.20.0.0/16, "
            "fd00::/8), optionally with :port (IPv6 in brackets: [fd00::/8]:8443). An internal "
            "address (loopback, private, link-local, CGNAT) needs an address or CIDR entry."
        ),
    )
    note: str = Field(default="", max_length=200, description="Why, for the next admin")


class EgressEntry(BaseModel):
    """An allow-list entry; ``origin`` is config (the egress file) or api."""

    entry: str
    origin: str
    source: str | None = None
    added_by: str | None = None
    added_at: str | None = None
    note: str | None = None


class EgressRemoved(BaseModel):
    """An entry taken off the allow-list."""

    removed: str


class AuditCheck(BaseModel):
    """The outcome of checking the audit log: chain, HMACs and signed checkpoints."""

    ok: bool
    entries: int
    problems: list[str]
    last_seq: int
    head: str
    #: Of ``problems``, lines a crash mid-append tore (no entry missing).
    torn: list[str]
    #: Entries without a MAC before the first keyed one (written before keys existed).
    legacy: int
    #: Signed checkpoints held against the log, and the latest one's ``seq``.
    checkpoints: int
    checkpoint_seq: int


def _doc(model: type[BaseModel], *codes: int, status: int = 200) -> dict[int | str, dict]:
    return {
        status: {"model": model, "description": model.__doc__ or "OK"},
        **error_responses(*codes),
    }


def _json(request: Request, doc: object, rows: int = 1, status: int = 200) -> Response:
    request.state.rows = rows
    return Response(
        json.dumps(doc, ensure_ascii=False, default=str),
        status_code=status,
        media_type="application/json",
    )


def _identity(request: Request):
    return request.app.state.security.identity


async def _second_factor(request: Request, principal: Principal, code: str | None) -> None:
    await run_in_threadpool(_identity(request).require_second_factor, principal, code)


@router.post(
    "/auth/login",
    summary="Open a session (password, and TOTP once enrolled)",
    responses=_doc(SessionOut, 401, 503),
)
async def login(request: Request, body: Login) -> Response:
    """A session token for ``Authorization: Bearer``; idle 30 min, at most 8 h."""
    request.state.params = {"user": body.user}  # audited: who tried (never the password)
    try:
        session = await run_in_threadpool(
            _identity(request).login, body.user, body.password, body.totp
        )
    except AuthError as exc:
        # Audited: why (a lockout reads "… is now locked until …").
        request.state.params["refused"] = str(exc)
        # A lockout ends the user's sessions: the doors stop trusting them now, not in 2 s.
        request.app.state.sessions.forget_user(body.user)
        raise
    return _json(request, {"token": session.token, "expires_at": session.expires_at})


@router.post("/auth/logout", summary="End the current session", responses=_doc(Ended, 401, 503))
async def logout(request: Request, authorization: Annotated[str, Header()]) -> Response:
    """The session token stops working at once."""
    await run_in_threadpool(_identity(request).logout, authorization.partition(" ")[2])
    return _json(request, {"ended": True}, rows=0)


@router.post(
    "/admin/keys",
    summary="Create an API key (shown once)",
    status_code=201,
    responses=_doc(CreatedKey, 400, *GUARDED, 404, status=201),
)
async def create_key(
    request: Request, body: NewKey, principal: KeysAdmin, totp: TotpCode = None
) -> Response:
    """A key for ``user`` with scopes narrowed from its role; the secret is shown only here."""
    await _second_factor(request, principal, totp)
    key_id, raw = await run_in_threadpool(
        _identity(request).create_key, body.user, body.scopes, body.quota_per_day, body.expires_days
    )
    return _json(request, {"key_id": key_id, "key": raw}, status=201)


@router.get(
    "/admin/keys", summary="List API keys (never their secrets)", responses=_doc(Listing, *GUARDED)
)
async def list_keys(request: Request, principal: KeysAdmin, totp: TotpCode = None) -> Response:
    """Every key: owner, scopes, quota, expiry, revocation, last use."""
    await _second_factor(request, principal, totp)
    keys = [dataclasses.asdict(k) for k in await run_in_threadpool(_identity(request).list_keys)]
    return _json(request, {"count": len(keys), "rows": keys}, rows=len(keys))


@router.delete(
    "/admin/keys/{key_id}", summary="Revoke an API key", responses=_doc(Revoked, *GUARDED, 404)
)
async def revoke_key(
    request: Request,
    key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")],
    principal: KeysAdmin,
    totp: TotpCode = None,
) -> Response:
    """The key stops working at once."""
    await _second_factor(request, principal, totp)
    await run_in_threadpool(_identity(request).revoke_key, key_id)
    return _json(request, {"revoked": key_id})


@router.get(
    "/admin/usage", summary="API usage per key, endpoint and day", responses=_doc(Listing, *GUARDED)
)
async def usage(
    request: Request, principal: KeysAdmin, day: IsoDate | None = None, totp: TotpCode = None
) -> Response:
    """Requests, rows and errors per key and endpoint (API management)."""
    await _second_factor(request, principal, totp)
    await run_in_threadpool(request.app.state.security.meter.flush)  # counters still in memory
    rows = [
        dataclasses.asdict(u) for u in await run_in_threadpool(_identity(request).usage, None, day)
    ]
    return _json(request, {"count": len(rows), "rows": rows}, rows=len(rows))


@router.get(
    "/admin/audit/verify",
    summary="Check the audit log's SM3 chain, HMACs and checkpoints",
    responses=_doc(AuditCheck, *GUARDED),
)
async def audit_verify(request: Request, principal: AuditAdmin, totp: TotpCode = None) -> Response:
    """Whether any audit entry was modified, deleted, inserted or reordered, the log cut or
    rolled back to an older checkpoint, or rewritten without the key."""
    await _second_factor(request, principal, totp)
    result = await run_in_threadpool(request.app.state.security.audit.verify)
    return _json(request, dataclasses.asdict(result))


def _egress(request: Request) -> EgressPolicy:
    return EgressPolicy.from_settings(request.app.state.settings)


@router.get(
    "/admin/egress",
    summary="List the webhook egress allow-list",
    responses=_doc(Listing, 400, *GUARDED),
)
async def list_egress(request: Request, principal: EgressAdmin, totp: TotpCode = None) -> Response:
    """Where webhook deliveries may go: entries of the egress file and of this API."""
    await _second_factor(request, principal, totp)
    rows = await run_in_threadpool(_egress(request).listed)
    return _json(request, {"count": len(rows), "rows": rows}, rows=len(rows))


@router.post(
    "/admin/egress",
    summary="Allow-list a webhook destination",
    status_code=201,
    responses={
        **_doc(EgressEntry, 400, *GUARDED, status=201),
        200: {"model": EgressEntry, "description": "Already listed"},
    },
)
async def add_egress(
    request: Request, body: EgressIn, principal: EgressAdmin, totp: TotpCode = None
) -> Response:
    """Webhooks may go to ``entry`` from now on (checked again at each delivery)."""
    await _second_factor(request, principal, totp)
    request.state.params = {"entry": body.entry, "note": body.note}  # audited: what was opened
    row, added = await run_in_threadpool(
        _egress(request).add, body.entry, principal.user, body.note
    )
    return _json(request, row, status=201 if added else 200)


@router.delete(
    "/admin/egress/{entry:path}",
    summary="Take a webhook destination off the allow-list",
    responses=_doc(EgressRemoved, 400, *GUARDED, 404),
)
async def remove_egress(
    request: Request, entry: str, principal: EgressAdmin, totp: TotpCode = None
) -> Response:
    """Deliveries to ``entry`` (as listed; a CIDR's slash may stay unescaped) are refused from
    the next one on; entries of the egress file are removed from that file."""
    await _second_factor(request, principal, totp)
    removed = await run_in_threadpool(_egress(request).remove, entry)
    return _json(request, {"removed": removed})
