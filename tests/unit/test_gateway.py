"""The sign-in page's redirect rules and the doors' header filtering, role gates and audit."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from opslake.api.gateway import (
    Door,
    DoorApp,
    check_ports,
    dagster_gate,
    doors,
    downstream_headers,
    strip_cookie,
    upstream_headers,
)
from opslake.api.signin import HOME, SESSION_COOKIE, login_location, safe_next
from opslake.errors import ConfigError
from opslake.screens.access import LEADERSHIP_ROLE, OPS_ROLE, department_role, superset_roles
from opslake.security.audit import AuditLog
from opslake.security.roles import ROLES, Principal
from opslake.settings import Settings


def _principal(user: str, role: str, departments: tuple[str, ...] = ()) -> Principal:
    return Principal(user, role, ROLES[role].scopes, frozenset(departments))


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/login",
        "/v1/catalog/metrics?q=1",
        "http://127.0.0.1:3000/",
        "http://127.0.0.1:8090/superset/welcome/?a=b",
    ],
)
def test_next_keeps_paths_here_and_door_urls_on_this_host(target: str) -> None:
    assert safe_next(target, scheme="http", host="127.0.0.1", ports=(3000, 8090)) == target


@pytest.mark.parametrize(
    "target",
    [
        "",
        "//evil.example/",
        "/\\evil.example",
        "http://evil.example:3000/",
        "http://127.0.0.1:9999/",
        "https://127.0.0.1:3000/",
        "http://u@127.0.0.1:3000/",
        "http://127.0.0.1@evil.example:3000/",
        "javascript:alert(1)",
        "/ok\r\nSet-Cookie: x=1",
        "http://127.0.0.1:99999/",
        "evil.example",
    ],
)
def test_next_refuses_everything_else(target: str) -> None:
    assert safe_next(target, scheme="http", host="127.0.0.1", ports=(3000, 8090)) == HOME


def test_login_location_sends_the_target_back_encoded() -> None:
    assert (
        login_location("https", "::1", 8700, "https://[::1]:3000/a?b=c")
        == "https://[::1]:8700/login?next=https%3A%2F%2F%5B%3A%3A1%5D%3A3000%2Fa%3Fb%3Dc"
    )


def test_upstream_headers_drop_credentials_and_claimed_identities() -> None:
    raw = [
        (k.encode(), v.encode())
        for k, v in [
            ("Host", "127.0.0.1:3000"),
            ("Cookie", f"session=ss; {SESSION_COOKIE}=tok; csrf=c"),
            ("Authorization", "Bearer olk_x_y"),
            ("X-OpsLake-User", "root"),
            ("X-OpsLake-Gateway-Secret", "guess"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("Remote-User", "admin"),
            ("X-Remote-User", "admin"),
            ("Forwarded", "for=1.2.3.4"),
            ("Connection", "keep-alive"),
            ("Accept", "text/html"),
            ("Content-Length", "3"),
        ]
    ]
    out = upstream_headers(
        raw,
        identity={"X-OpsLake-User": "dan"},
        client="127.0.0.5",
        proto="http",
        host="127.0.0.1:3000",
    )
    assert out == [
        ("cookie", "session=ss; csrf=c"),
        ("accept", "text/html"),
        ("content-length", "3"),
        ("x-forwarded-for", "127.0.0.5"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "127.0.0.1:3000"),
        ("x-opslake-user", "dan"),
    ]


def test_a_cookie_header_holding_only_the_session_is_dropped() -> None:
    assert strip_cookie(f"{SESSION_COOKIE}=tok", SESSION_COOKIE) == ""
    out = upstream_headers(
        [(b"cookie", f"{SESSION_COOKIE}=tok".encode())],
        identity={},
        client="c",
        proto="http",
        host="h",
    )
    assert all(name != "cookie" for name, _ in out)


def test_websocket_handshake_headers_are_made_afresh() -> None:
    raw = [
        (b"sec-websocket-key", b"k"),
        (b"sec-websocket-protocol", b"graphql-ws"),
        (b"user-agent", b"chrome"),
        (b"origin", b"http://127.0.0.1:3000"),
    ]
    out = upstream_headers(raw, identity={}, client="c", proto="http", host="h", websocket=True)
    assert [name for name, _ in out] == [
        "origin",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ]


def test_downstream_headers_point_redirects_at_the_door() -> None:
    headers = httpx.Headers(
        [
            ("Location", "http://127.0.0.1:8088/login/?next=x"),
            ("Set-Cookie", "session=abc; HttpOnly"),
            ("Set-Cookie", f"{SESSION_COOKIE}=forged"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "text/html"),
        ]
    )
    assert downstream_headers(headers, "http://127.0.0.1:8088", "http://h:8090") == [
        (b"location", b"http://h:8090/login/?next=x"),
        (b"set-cookie", b"session=abc; HttpOnly"),
        (b"content-type", b"text/html"),
    ]


@pytest.mark.parametrize(
    ("role", "admitted"),
    [
        ("admin", True),
        ("data_engineer", True),
        ("ops_engineer", False),
        ("leadership", False),
        ("dept_viewer", False),
        ("ingest", False),
    ],
)
def test_the_dagster_door_admits_data_engineers_and_admins(role: str, admitted: bool) -> None:
    assert (dagster_gate(_principal("u", role, ("d",))) is None) is admitted


def test_opslake_roles_map_to_the_provisioned_superset_roles() -> None:
    assert superset_roles(_principal("a", "admin")) == ["Admin"]
    assert superset_roles(_principal("o", "ops_engineer")) == [OPS_ROLE]
    assert superset_roles(_principal("e", "data_engineer")) == [OPS_ROLE]
    assert superset_roles(_principal("l", "leadership")) == [LEADERSHIP_ROLE]
    assert superset_roles(_principal("d", "dept_viewer", ("卫健委", "税务局"))) == [
        department_role("卫健委"),
        department_role("税务局"),
    ]
    assert superset_roles(_principal("i", "ingest")) == []


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"OPSLAKE_HOME": str(tmp_path), **env})


def test_superset_door_refuses_unmapped_roles_and_the_service_admin(tmp_path: Path) -> None:
    (door,) = doors(_settings(tmp_path, OPSLAKE_SUPERSET_DOOR_PORT="8090"))
    assert door.gate(_principal("olga", "ops_engineer")) is None
    assert "no Superset role" in door.gate(_principal("pusher", "ingest"))
    assert "service administrator" in door.gate(_principal("admin", "admin"))
    told = door.identity(_principal("dora", "dept_viewer", ("卫健委",)))
    assert told["X-OpsLake-User"] == "dora"
    assert (
        told["X-OpsLake-Roles"] == "OpsLake%20%E9%83%A8%E9%97%A8%C2%B7%E5%8D%AB%E5%81%A5%E5%A7%94"
    )
    secret = tmp_path / "superset" / "gateway-secret"
    assert told["X-OpsLake-Gateway-Secret"] == secret.read_text().strip()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_door_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a TCP port"):
        _settings(tmp_path, OPSLAKE_DAGSTER_DOOR_PORT="http")
    with pytest.raises(ConfigError, match="no path"):
        _settings(tmp_path, OPSLAKE_DAGSTER_UPSTREAM="http://127.0.0.1:3001/ui")
    with pytest.raises(ConfigError, match="upstream base URL"):
        _settings(tmp_path, OPSLAKE_SUPERSET_UPSTREAM="ftp://127.0.0.1")
    settings = _settings(tmp_path, OPSLAKE_SUPERSET_PORT="8123")
    assert settings.superset_upstream == "http://127.0.0.1:8123"
    assert doors(settings) == []
    shared = _settings(tmp_path, OPSLAKE_DAGSTER_DOOR_PORT="8700")
    with pytest.raises(ConfigError, match="port of its own"):
        check_ports(8700, doors(shared))
    itself = _settings(tmp_path, OPSLAKE_DAGSTER_DOOR_PORT="3001")
    with pytest.raises(ConfigError, match="its own upstream"):
        check_ports(8700, doors(itself))


class _Sessions:
    """Stands for the identity store's session check: one known token."""

    def __init__(self, principal: Principal) -> None:
        self.known = principal

    async def principal(self, token: str) -> Principal | None:
        return self.known if token == "good" else None


def _echo() -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "headers": dict(request.headers),
                "body": (await request.body()).decode(),
                "path": request.url.path,
                "query": request.url.query,
            }
        )

    async def moved(_request: Request) -> RedirectResponse:
        return RedirectResponse("http://upstream.test/elsewhere", status_code=302)

    return Starlette(
        routes=[Route("/moved", moved), Route("/{rest:path}", echo, methods=["GET", "POST"])]
    )


def _door_client(tmp_path: Path, principal: Principal) -> tuple[httpx.AsyncClient, AuditLog]:
    audit = AuditLog(tmp_path / "audit")
    door = Door(
        "dagster",
        3000,
        "http://upstream.test",
        dagster_gate,
        lambda p: {"X-OpsLake-User": p.user},
        static=("/_next/static/",),
    )
    app = DoorApp(door, _Sessions(principal), audit, login_port=8700, scheme="http")  # type: ignore[arg-type]
    app.client = httpx.AsyncClient(transport=httpx.ASGITransport(_echo()))
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=("127.0.0.9", 5000)),
        base_url="http://127.0.0.1:3000",
    ), audit


def test_door_forwards_a_signed_in_engineer_without_credentials(tmp_path: Path) -> None:
    async def scenario() -> AuditLog:
        client, audit = _door_client(tmp_path, _principal("dan", "data_engineer"))
        async with client:
            r = await client.post(
                "/graphql?x=1",
                content=b"{}",
                headers={
                    "Cookie": f"{SESSION_COOKIE}=good; other=1",
                    "X-OpsLake-User": "root",
                    "Authorization": "Bearer olk_a_b",
                    "Origin": "http://127.0.0.1:3000",
                },
            )
            assert r.status_code == 200
            seen = r.json()
            assert seen["path"] == "/graphql" and seen["query"] == "x=1" and seen["body"] == "{}"
            assert seen["headers"]["x-opslake-user"] == "dan"
            assert seen["headers"]["cookie"] == "other=1"
            assert "authorization" not in seen["headers"]
            assert seen["headers"]["x-forwarded-for"] == "127.0.0.9"
            moved = await client.get("/moved", headers={"Cookie": f"{SESSION_COOKIE}=good"})
            assert moved.headers["location"] == "http://127.0.0.1:3000/elsewhere"
            forged = await client.post(
                "/graphql",
                content=b"{}",
                headers={"Cookie": f"{SESSION_COOKIE}=good", "Origin": "http://127.0.0.1:9999"},
            )
            assert forged.status_code == 403 and "another site" in forged.json()["error"]
            script = await client.get(
                "/_next/static/app.js", headers={"Cookie": f"{SESSION_COOKIE}=good"}
            )
            assert script.status_code == 200
        return audit

    audit = asyncio.run(scenario())
    # Every request but the admitted static file: the page and API calls carry the record.
    assert [(e["who"], e["action"], e["status"]) for e in audit.read()] == [
        ("dan", "door dagster POST /graphql", 200),
        ("dan", "door dagster GET /moved", 302),
        ("dan", "door dagster POST /graphql", 403),
    ]


def test_door_refuses_and_audits_who_may_not_pass(tmp_path: Path) -> None:
    async def scenario() -> AuditLog:
        client, audit = _door_client(tmp_path, _principal("olga", "ops_engineer"))
        async with client:
            page = await client.get("/runs?tab=1", headers={"Accept": "text/html"})
            assert page.status_code == 302
            assert page.headers["location"] == (
                "http://127.0.0.1:8700/login?next=http%3A%2F%2F127.0.0.1%3A3000%2Fruns%3Ftab%3D1"
            )
            api = await client.get("/graphql", headers={"Cookie": f"{SESSION_COOKIE}=stale"})
            assert (
                api.status_code == 401
                and "sign in at http://127.0.0.1:8700/login" in api.json()["fix"]
            )
            refused = await client.get("/", headers={"Cookie": f"{SESSION_COOKIE}=good"})
            assert refused.status_code == 403
            assert "data engineers and administrators" in refused.json()["error"]
        return audit

    audit = asyncio.run(scenario())
    entries = [(e["who"], e["params"], e["status"]) for e in audit.read()]
    assert entries == [
        ("anonymous", {"door": "dagster", "path": "/runs"}, 302),
        ("anonymous", {"door": "dagster", "path": "/graphql"}, 401),
        ("olga", {"door": "dagster", "path": "/"}, 403),
    ]
    assert audit.verify().ok


def test_a_superset_started_without_the_door_is_told_to_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opslake.screens import server

    config = server.SupersetConfig.from_settings(
        _settings(tmp_path, OPSLAKE_SUPERSET_DOOR_PORT="8090"), {}
    )
    config.state.mkdir(parents=True)
    plain = server.SupersetConfig.from_settings(_settings(tmp_path), {})
    config.config_file.write_text(server._config_text(plain))  # as started before the door
    monkeypatch.setattr(server, "running_pid", lambda _config: 4242)
    said: list[str] = []
    assert server.start_server(config, say=said.append) == 4242
    assert "started with other settings" in said[0]
    assert "AUTH_REMOTE_USER" in server._config_text(config)
    config.config_file.write_text(server._config_text(config))
    server.start_server(config, say=said.append)
    assert said[1] == f"superset already running (pid 4242) at {config.url}"
