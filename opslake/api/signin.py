"""The sign-in page: one session cookie for the API and every door (S6.6a, issue 19).

``GET /login`` is a plain HTML form (user, password, TOTP code); ``POST /login`` signs in
through the same :meth:`IdentityStore.login` as ``POST /v1/auth/login`` (password policy,
lockout, TOTP, expiry) and sets the session token in the cookie :data:`SESSION_COOKIE`:
``HttpOnly``, ``SameSite=Lax``, ``Secure`` when the service speaks TLS, no ``Max-Age`` (it
ends with the browser; the server ends it sooner: idle 30 min, at most 8 h). Cookies belong to
a host, not a port, so the doors (``opslake.api.gateway``) on their own ports of the same host
receive it too. ``POST /logout`` ends the session.

Forms are checked against cross-site use: a POST whose ``Origin`` is another origin is refused
(a browser always sends it on a form POST). The API accepts the cookie only for GET and HEAD;
anything that changes state needs ``Authorization: Bearer``, which a forged cross-site request
cannot carry. After signing in, ``next`` is followed only when it is a path on this service or
a URL of a door on this same host (:func:`safe_next`): never an open redirect.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable
from threading import Lock
from time import monotonic
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from opslake.errors import AuthError, OpsLakeError
from opslake.security.identity import IdentityStore
from opslake.security.roles import Principal
from opslake.settings import Settings

router = APIRouter(tags=["sign-in"], include_in_schema=False)

SESSION_COOKIE = "opslake_session"
#: Methods the cookie authenticates at the API; others need a Bearer credential (CSRF).
SAFE_METHODS = frozenset({"GET", "HEAD"})
#: Where a sign-in with a refused ``next`` lands: the signed-in page.
HOME = "/login"
#: Where a sign-in without ``next`` lands: the portal (``opslake.api.portal``).
PORTAL = "/"
#: The largest sign-in form accepted (three short fields).
MAX_FORM_BYTES = 4096
#: Seconds a checked session is trusted by the doors before the store is asked again (a
#: Dagster UI page is dozens of requests); signing out here forgets it at once.
SESSION_CACHE_SECONDS = 2.0


def door_ports(settings: Settings) -> tuple[int, ...]:
    """The ports of the doors that are open."""
    return tuple(p for p in (settings.dagster_door_port, settings.superset_door_port) if p)


def same_origin(origin: str | None, scheme: str, host_header: str) -> bool:
    """Whether a request's ``Origin`` (None: not sent, not a browser form) is its own."""
    return origin is None or origin.lower() == f"{scheme}://{host_header.lower()}"


def safe_next(target: str, *, scheme: str, host: str, ports: Iterable[int]) -> str:
    """``target`` when it is a path here or a door's URL on ``host``, else :data:`HOME`.

    A path must start with one ``/`` (``//evil`` and ``/\\evil`` are other hosts to a
    browser); a URL must have this scheme, this host name, no user part and a door's port.
    """
    if not target or "\\" in target or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return HOME
    if target.startswith("/") and not target.startswith("//"):
        return target
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        return HOME
    if (
        parts.scheme == scheme
        and parts.hostname == host.lower()
        and parts.username is None
        and port in set(ports)
    ):
        return target
    return HOME


def origin(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port`` (an IPv6 host in brackets)."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def login_location(scheme: str, host: str, port: int, target: str) -> str:
    """The sign-in page on ``host``:``port`` that comes back to ``target`` afterwards."""
    return f"{origin(scheme, host, port)}/login?{urlencode({'next': target})}"


class SessionCheck:
    """Session tokens checked against the identity store, trusted for a moment after.

    The doors ask for every proxied request; the store's answer (which also extends the
    session's idle timeout) is kept :data:`SESSION_CACHE_SECONDS`.
    """

    def __init__(self, identity: IdentityStore, ttl: float = SESSION_CACHE_SECONDS) -> None:
        self.identity = identity
        self.ttl = ttl
        self._known: dict[bytes, tuple[Principal, float]] = {}
        self._lock = Lock()

    @staticmethod
    def _digest(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    async def principal(self, token: str) -> Principal | None:
        """The principal of a live session, or None when it is unknown, ended or expired."""
        digest = self._digest(token)
        with self._lock:
            known = self._known.get(digest)
        if known is not None and monotonic() - known[1] < self.ttl:
            return known[0]
        try:
            principal = await run_in_threadpool(self.identity.session, token)
        except AuthError:
            self.forget(token)
            return None
        with self._lock:
            if len(self._known) > 10_000:  # bounded: expired entries are dropped wholesale
                self._known.clear()
            self._known[digest] = (principal, monotonic())
        return principal

    def forget(self, token: str) -> None:
        """Stop trusting ``token`` at once (signed out)."""
        with self._lock:
            self._known.pop(self._digest(token), None)

    def forget_user(self, user: str) -> None:
        """Stop trusting every session of ``user`` at once (a failed sign-in may have locked
        the account, which ends its sessions in the store)."""
        with self._lock:
            self._known = {k: v for k, v in self._known.items() if v[0].user != user}


def _scheme(request: Request) -> str:
    return "https" if request.app.state.settings.tls_cert else "http"


def _door_origins(request: Request) -> list[str]:
    """The origins of the doors on the host the page was asked for."""
    host = request.url.hostname or "127.0.0.1"
    return [origin(_scheme(request), host, port) for port in door_ports(request.app.state.settings)]


def _page(title: str, body: str, status: int = 200, doors: Iterable[str] = ()) -> HTMLResponse:
    # A form's redirect counts as its target for form-action: the doors are allowed too.
    targets = " ".join(["'self'", *doors])
    return HTMLResponse(
        f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)} · OpsLake</title><style>body{{font:16px system-ui;max-width:"
        f"26em;margin:4em auto}}label,input,button{{display:block;width:100%;margin:.3em 0}}"
        f".error{{color:#b00}}</style></head><body><h1>{html.escape(title)}</h1>{body}"
        "</body></html>",
        status_code=status,
        # The page holds a password form: never cached, never framed.
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            f"form-action {targets}; frame-ancestors 'none'",
        },
    )


def _form(next_url: str, error: str | None = None, user: str = "") -> str:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return (
        f'{shown}<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{html.escape(next_url)}">'
        f'<label>用户 User <input name="user" autocomplete="username" required '
        f'value="{html.escape(user)}"></label>'
        '<label>密码 Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<label>动态口令 TOTP code <input name="totp" inputmode="numeric" '
        'autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6"></label>'
        '<button type="submit">登录 Sign in</button></form>'
    )


def _signed_in(request: Request, principal: Principal) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    scheme, host = _scheme(request), request.url.hostname or "127.0.0.1"
    doors = [
        (name, port)
        for name, port in (
            ("Dagster UI", settings.dagster_door_port),
            ("Superset", settings.superset_door_port),
        )
        if port
    ]
    links = "".join(
        f'<li><a href="{html.escape(origin(scheme, host, port))}/">{name}</a></li>'
        for name, port in doors
    )
    return _page(
        "已登录 Signed in",
        f"<p>{html.escape(principal.user)} "
        f'({html.escape(principal.role)})</p><ul><li><a href="{PORTAL}">门户 Portal'
        f"</a></li>{links}</ul>"
        '<form method="post" action="/logout"><button type="submit">退出 Sign out'
        "</button></form>",
    )


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    """The sign-in form, or who is signed in."""
    principal: Principal = request.state.principal
    settings: Settings = request.app.state.settings
    target = (
        safe_next(
            next,
            scheme=_scheme(request),
            host=request.url.hostname or "",
            ports=door_ports(settings),
        )
        if next
        else PORTAL
    )
    if principal.role != "anonymous" and principal.key_id is None:
        if next and target != HOME:
            return RedirectResponse(target, status_code=303)
        return _signed_in(request, principal)
    return _page("OpsLake 登录 Sign in", _form(target), doors=_door_origins(request))


@router.post("/login")
async def login_submit(request: Request) -> Response:
    """Sign in with the form; the session cookie and a redirect to ``next`` on success."""
    scheme = _scheme(request)
    if not same_origin(request.headers.get("origin"), scheme, request.headers.get("host", "")):
        return _page("拒绝 Refused", "<p>This form was sent from another site.</p>", 403)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return _page("拒绝 Refused", "<p>The form is too large.</p>", 413)
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    user, password, code = form.get("user", ""), form.get("password", ""), form.get("totp")
    target = safe_next(
        form.get("next", ""),
        scheme=scheme,
        host=request.url.hostname or "",
        ports=door_ports(request.app.state.settings),
    )
    # Audited with the name tried (never the password or the code).
    request.state.params = {"user": user[:64], "via": "sign-in page"}
    identity: IdentityStore = request.app.state.security.identity
    try:
        if not user or not password:
            raise AuthError("give a user name and a password")
        session = await run_in_threadpool(identity.login, user, password, code or None)
    except OpsLakeError as exc:
        status = 503 if not isinstance(exc, AuthError) else 401
        # Audited: why it was refused (a lockout reads "… is now locked until …").
        request.state.params["refused"] = str(exc)
        request.app.state.sessions.forget_user(user)
        return _page(
            "OpsLake 登录 Sign in", _form(target, str(exc), user), status, _door_origins(request)
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session.token,
        httponly=True,
        samesite="lax",
        secure=scheme == "https",
        path="/",
    )
    return response


@router.get("/logout")
async def logout_page(request: Request) -> Response:
    """A button that signs out (signing out is a POST, so a link elsewhere cannot do it)."""
    return _page(
        "退出 Sign out",
        '<form method="post" action="/logout"><button type="submit">退出 Sign out</button></form>',
    )


@router.post("/logout")
async def logout_submit(request: Request) -> Response:
    """End the cookie's session (here and at every door) and clear the cookie."""
    scheme = _scheme(request)
    if not same_origin(request.headers.get("origin"), scheme, request.headers.get("host", "")):
        return _page("拒绝 Refused", "<p>This form was sent from another site.</p>", 403)
    if token := request.cookies.get(SESSION_COOKIE):
        await run_in_threadpool(request.app.state.security.identity.logout, token)
        request.app.state.sessions.forget(token)
    response = RedirectResponse(HOME, status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=scheme == "https"
    )
    return response
