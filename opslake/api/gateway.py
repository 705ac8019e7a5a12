"""The doors: authenticating reverse proxies in front of the Dagster UI and Superset (S6.6a).

``opslake serve --dagster-door PORT --superset-door PORT`` opens each door on a port of its
own beside the data service, in the same process: one identity store, one session check that
forgets a signed-out session at once, one audit writer. Each UI stays on loopback (its
upstream) and is reached only through its door, at the root of its own port, so neither UI
needs a path prefix. The sign-in page's cookie belongs to the host, not the port, so one
sign-in at the data service opens every door.

A request without a live session is sent (302) to the sign-in page with ``next`` pointing back
when it asks for HTML, and answered 401 otherwise. A door admits only some roles (the Dagster
UI: ``admin`` and ``data_engineer``; Superset: any role that maps to a Superset role), 403 for
the rest. A state-changing request or a websocket from another origin is refused (403): the
cookie is ``SameSite=Lax``, which other ports of the same host still receive. Bodies stream
both ways (httpx), websockets are relayed (``websockets``). What goes upstream never carries
the OpsLake cookie, an ``Authorization`` header or any identity header the client sent
(``X-OpsLake-*``, ``X-Forwarded-*``, ``X-Remote-*``, ``Remote-User``, ``Forwarded``); the
door sets its own. Every request, admitted or refused, is one audit entry (who, door, method,
path, status) written before the answer's status line leaves, as the API's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx
import uvicorn
import websockets
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect

from opslake.api.signin import (
    SAFE_METHODS,
    SESSION_COOKIE,
    SessionCheck,
    login_location,
    origin,
    same_origin,
)
from opslake.errors import ConfigError, DoorError, StorageError
from opslake.screens.access import superset_roles
from opslake.screens.server import SupersetConfig, gateway_secret
from opslake.security.audit import AuditLog
from opslake.security.roles import ANONYMOUS, Principal
from opslake.settings import Settings

#: Headers that describe one connection, not the message (RFC 9110 7.6.1), and ``host``
#: (the upstream's own is sent).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
#: Request headers a client may not pass upstream: they would state who it is.
IDENTITY_PREFIXES = (
    "x-opslake-",
    "x-forwarded-",
    "x-remote-",
    "remote-user",
    "forwarded",
    "x-real-ip",
)
#: A websocket handshake's own headers, which the upstream connection makes afresh.
HANDSHAKE = ("sec-websocket-",)
#: The roles the Dagster UI's door admits.
DAGSTER_ROLES = frozenset({"admin", "data_engineer"})


@dataclass(frozen=True)
class Door:
    """One door: its port, the UI behind it, who it admits and what it tells the UI."""

    name: str
    port: int
    upstream: str
    #: Why ``principal`` may not pass (None: it may).
    gate: Callable[[Principal], str | None]
    #: Headers telling the UI who the request is from.
    identity: Callable[[Principal], dict[str, str]] = field(default=lambda _p: {})
    #: Paths the door answers itself by sending the browser to the sign-out page.
    logout_paths: frozenset[str] = frozenset()
    #: How to start the UI behind the door when it does not answer.
    start_hint: str = ""
    #: Paths of the UI's own static files (scripts, styles, icons): an admitted GET of one
    #: answered below 400 is not audited (the page that loads it and every API call are).
    static: tuple[str, ...] = ()


def dagster_gate(principal: Principal) -> str | None:
    """Only administrators and data engineers use the Dagster UI."""
    if principal.role in DAGSTER_ROLES:
        return None
    return (
        f"role {principal.role} may not use the Dagster UI (data engineers and "
        "administrators only); ask an administrator for the data_engineer role"
    )


def superset_door(settings: Settings, port: int) -> Door:
    """Superset's door: users signed in by headers its hook trusts with the shared secret."""
    config = SupersetConfig.from_settings(settings)
    secret = gateway_secret(config)

    def gate(principal: Principal) -> str | None:
        if principal.user == config.admin_username:
            return (
                f"the user name {principal.user!r} is Superset's service administrator "
                "(OPSLAKE_SUPERSET_ADMIN_USER); sign in as a user of another name"
            )
        if not superset_roles(principal):
            return (
                f"role {principal.role} has no Superset role (a department viewer needs a "
                "department); ask an administrator for a role with screens"
            )
        return None

    def identity(principal: Principal) -> dict[str, str]:
        return {
            "X-OpsLake-Gateway-Secret": secret,
            "X-OpsLake-User": quote(principal.user),
            "X-OpsLake-Roles": ",".join(quote(r, safe="") for r in superset_roles(principal)),
        }

    return Door(
        "superset",
        port,
        settings.superset_upstream,
        gate,
        identity,
        frozenset({"/logout", "/logout/"}),
        "start it with `opslake screens start` (OPSLAKE_SUPERSET_DOOR_PORT set, so it "
        "trusts the door) or set OPSLAKE_SUPERSET_UPSTREAM",
        ("/static/",),
    )


def doors(settings: Settings) -> list[Door]:
    """The doors ``settings`` opens (a door port unset: that door stays shut)."""
    out = []
    if settings.dagster_door_port:
        out.append(
            Door(
                "dagster",
                settings.dagster_door_port,
                settings.dagster_upstream,
                dagster_gate,
                start_hint="start it with `opslake ui --port PORT` "
                "on the upstream's port, or set OPSLAKE_DAGSTER_UPSTREAM",
                static=("/_next/static/", "/favicon."),
            )
        )
    if settings.superset_door_port:
        out.append(superset_door(settings, settings.superset_door_port))
    return out


def check_ports(api_port: int, door_list: Iterable[Door]) -> None:
    """Refuse doors sharing a port with the data service or with each other."""
    taken = {api_port: "the data service"}
    for door in door_list:
        if door.port in taken:
            raise ConfigError(
                f"the {door.name} door's port {door.port} is already "
                f"{taken[door.port]}'s; give each door a port of its own "
                "(--dagster-door, --superset-door)"
            )
        upstream = urlsplit(door.upstream)
        if upstream.hostname in ("127.0.0.1", "localhost", "::1") and upstream.port == door.port:
            raise ConfigError(
                f"the {door.name} door's port {door.port} is its own upstream "
                f"({door.upstream}); move the UI to another port"
            )
        taken[door.port] = f"the {door.name} door"


def strip_cookie(header: str, name: str) -> str:
    """A ``Cookie`` header without the cookie ``name`` (the others kept as sent)."""
    kept = [
        part.strip()
        for part in header.split(";")
        if part.strip() and part.strip().partition("=")[0].strip() != name
    ]
    return "; ".join(kept)


def upstream_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    identity: Mapping[str, str],
    client: str,
    proto: str,
    host: str,
    websocket: bool = False,
) -> list[tuple[str, str]]:
    """The request headers a door sends upstream: the client's, less its OpsLake credential
    (cookie, ``Authorization``), hop-by-hop headers and any identity it claims; then the
    door's own forwarding and identity headers."""
    out = []
    for key, value in raw:
        name = key.decode("latin-1").lower()
        if (
            name in HOP_BY_HOP
            or name == "authorization"
            or name.startswith(IDENTITY_PREFIXES)
            or (websocket and (name.startswith(HANDSHAKE) or name == "user-agent"))
        ):
            continue
        text = value.decode("latin-1")
        if name == "cookie":
            text = strip_cookie(text, SESSION_COOKIE)
            if not text:
                continue
        out.append((name, text))
    out += [("x-forwarded-for", client), ("x-forwarded-proto", proto), ("x-forwarded-host", host)]
    out += [(k.lower(), v) for k, v in identity.items()]
    return out


def downstream_headers(
    headers: httpx.Headers, upstream: str, origin: str
) -> list[tuple[bytes, bytes]]:
    """The response headers a door passes back: hop-by-hop ones dropped, redirects to the
    upstream pointed at the door, and no cookie of the upstream's named like OpsLake's."""
    out = []
    for name, value in headers.multi_items():
        low = name.lower()
        if low in HOP_BY_HOP:
            continue
        if low == "location" and value.startswith(upstream):
            value = origin + value[len(upstream) :]
        if low == "set-cookie" and value.partition("=")[0].strip() == SESSION_COOKIE:
            continue
        out.append((low.encode("latin-1"), value.encode("latin-1")))
    return out


def wants_page(method: str, headers: Headers) -> bool:
    """Whether a refused request is a browser's page load (redirect it to sign in)."""
    return method in SAFE_METHODS and "text/html" in headers.get("accept", "")


class DoorApp:
    """The ASGI application of one door (HTTP and websockets)."""

    def __init__(
        self, door: Door, sessions: SessionCheck, audit: AuditLog, *, login_port: int, scheme: str
    ) -> None:
        self.door = door
        self.sessions = sessions
        self.audit = audit
        self.login_port = login_port
        self.scheme = scheme
        self.client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Read timeout off: a UI may hold a request open (long polls, streams).
                self.client = httpx.AsyncClient(
                    timeout=httpx.Timeout(10.0, read=None),
                    follow_redirects=False,
                    limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- checks shared by HTTP and websockets ----------------------------------------------

    async def _admit(self, headers: Headers, method: str) -> tuple[Principal, int, str]:
        """Who the request is from, and the status and reason (``error; fix``) it is refused
        with (status 0: admitted)."""
        token = _cookie(headers.get("cookie", ""))
        principal = await self.sessions.principal(token) if token else None
        if principal is None:
            return ANONYMOUS, 401, "no live OpsLake session; sign in"
        if reason := self.door.gate(principal):
            return principal, 403, reason
        if method not in SAFE_METHODS and not same_origin(
            headers.get("origin"), self.scheme, headers.get("host", "")
        ):
            return (
                principal,
                403,
                (
                    "a state-changing request from another site; open the page "
                    "through this door and send it from there"
                ),
            )
        return principal, 0, ""

    async def _record(
        self, principal: Principal, method: str, path: str, status: int, client: str
    ) -> None:
        await self.audit.append_async(
            who=principal.user,
            role=principal.role,
            key_id=principal.key_id,
            action=f"door {self.door.name} {method} {path}",
            params={"door": self.door.name, "path": path},
            status=status,
            client=client,
        )

    def _host(self, headers: Headers) -> str:
        return headers.get("host") or f"127.0.0.1:{self.door.port}"

    def _sign_in(self, headers: Headers, scope: Scope) -> str:
        host = self._host(headers)
        target = f"{self.scheme}://{host}{_target(scope)}"
        return login_location(
            self.scheme, urlsplit(f"//{host}").hostname or "127.0.0.1", self.login_port, target
        )

    # -- HTTP -------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        method, path = scope["method"], scope["path"]
        client = scope["client"][0] if scope.get("client") else ""
        principal, status, reason = await self._admit(headers, method)
        if status == 0 and path in self.door.logout_paths:
            host = urlsplit(f"//{self._host(headers)}").hostname or "127.0.0.1"
            out = f"{origin(self.scheme, host, self.login_port)}/logout"
            await self._answer(
                send, principal, method, path, client, 302, b"", [(b"location", out.encode())]
            )
            return
        if status:
            if status == 401 and wants_page(method, headers):
                await self._answer(
                    send,
                    principal,
                    method,
                    path,
                    client,
                    302,
                    b"",
                    [(b"location", self._sign_in(headers, scope).encode())],
                )
            else:
                error, _, fix = reason.partition("; ")
                if status == 401:
                    fix = f"sign in at {self._sign_in(headers, scope)}"
                await self._answer(
                    send,
                    principal,
                    method,
                    path,
                    client,
                    status,
                    json.dumps({"error": error, "fix": fix}).encode(),
                    [(b"content-type", b"application/json")],
                )
            return
        await self._forward(scope, receive, send, principal, headers, client)

    async def _answer(
        self,
        send: Send,
        principal: Principal,
        method: str,
        path: str,
        client: str,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Send the door's own answer, audited first (503 when the audit cannot be written)."""
        try:
            await self._record(principal, method, path, status, client)
        except StorageError as exc:
            status, body = 503, json.dumps({"error": str(exc), "fix": "retry later"}).encode()
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"30")]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *headers,
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        principal: Principal,
        headers: Headers,
        client: str,
    ) -> None:
        assert self.client is not None, "the door's lifespan did not start"
        method, path = scope["method"], scope["path"]
        host = self._host(headers)
        sent = upstream_headers(
            scope["headers"],
            identity=self.door.identity(principal),
            client=client,
            proto=self.scheme,
            host=host,
        )
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        url = httpx.URL(self.door.upstream).copy_with(raw_path=_target(scope).encode("latin-1"))
        request = self.client.build_request(
            method, url, headers=sent, content=_body(receive) if has_body else None
        )
        try:
            upstream = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = DoorError(
                f"the {self.door.name} UI at {self.door.upstream} does not answer "
                f"({type(exc).__name__}); {self.door.start_hint}"
            )
            await self._answer(
                send,
                principal,
                method,
                path,
                client,
                502,
                json.dumps(
                    {"error": str(error).partition("; ")[0], "fix": self.door.start_hint}
                ).encode(),
                [(b"content-type", b"application/json")],
            )
            return
        try:
            try:
                if not (
                    method in SAFE_METHODS
                    and path.startswith(self.door.static)
                    and upstream.status_code < 400
                ):
                    await self._record(principal, method, path, upstream.status_code, client)
            except StorageError as exc:
                body = json.dumps({"error": str(exc), "fix": "retry later"}).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"retry-after", b"30"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": upstream.status_code,
                    "headers": downstream_headers(
                        upstream.headers, self.door.upstream, f"{self.scheme}://{host}"
                    ),
                }
            )
            async for chunk in upstream.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await upstream.aclose()

    # -- websockets -------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        socket = WebSocket(scope, receive, send)
        headers = socket.headers
        path = scope["path"]
        client = scope["client"][0] if scope.get("client") else ""
        # A websocket handshake is a GET, but it acts like a POST: its origin must be ours.
        principal, status, _reason = await self._admit(headers, "WEBSOCKET")
        if status:
            await self._record(principal, "WEBSOCKET", path, status, client)
            await socket.close(code=1008)  # before accept: the client gets 403
            return
        base = self.door.upstream.replace("http", "ws", 1)
        sent = upstream_headers(
            scope["headers"],
            identity=self.door.identity(principal),
            client=client,
            proto=self.scheme,
            host=self._host(headers),
            websocket=True,
        )
        try:
            upstream = await connect(
                f"{base}{_target(scope)}",
                additional_headers=sent,
                subprotocols=scope.get("subprotocols") or None,
                compression=None,
                proxy=None,
                max_size=None,
                user_agent_header=None,
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException):
            await self._record(principal, "WEBSOCKET", path, 502, client)
            await socket.close(code=1011)
            return
        async with upstream:
            await self._record(principal, "WEBSOCKET", path, 101, client)
            await socket.accept(subprotocol=upstream.subprotocol)
            await _relay(socket, upstream)


async def _relay(socket: WebSocket, upstream: websockets.asyncio.client.ClientConnection) -> None:
    """Pass messages both ways until either side closes, then close the other."""

    async def inbound() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await socket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("text")
                await upstream.send(data if data is not None else message.get("bytes", b""))

    async def outbound() -> None:
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            async for data in upstream:
                if isinstance(data, str):
                    await socket.send_text(data)
                else:
                    await socket.send_bytes(data)

    tasks = [asyncio.create_task(inbound()), asyncio.create_task(outbound())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # the client may be gone already
            await socket.close(code=upstream.close_code or 1000)


def _cookie(header: str) -> str | None:
    """The OpsLake session token in a ``Cookie`` header, if any."""
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return value
    return None


def _target(scope: Scope) -> str:
    """The request target as sent: raw path and query."""
    raw = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return (raw + (b"?" + query if query else b"")).decode("latin-1")


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return
        if chunk := message.get("body", b""):
            yield chunk
        if not message.get("more_body"):
            return


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to :func:`run_servers` (one handler for all)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run_servers(apps: Iterable[tuple[ASGIApp, int]], host: str, tls: ssl.SSLContext | None) -> None:
    """Serve each app on its port in one event loop until SIGINT or SIGTERM, then stop them
    all gracefully (requests in flight finish, for up to 10 s)."""
    # No access log: the audit log already records every request, and printing each one
    # costs as much as answering a cached query. With TLS, only our context (TLS 1.2+) serves.
    servers = [
        _Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="info",
                access_log=False,
                timeout_graceful_shutdown=10,
                ssl_context_factory=(lambda _config, _default: tls) if tls else None,
            )
        )
        for app, port in apps
    ]

    def stop() -> None:
        for server in servers:
            server.force_exit = server.should_exit  # a second Ctrl-C does not wait
            server.should_exit = True

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(main())
