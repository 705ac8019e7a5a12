"""One sign-in for every door, in a real headless Chromium (issue 19, must show 2).

A real ``opslake serve`` opens the Dagster UI's door and Superset's door in front of a real
``dagster-webserver`` and a real Superset 6.1 (remote-user mode, its own venv), each on
loopback; the lake is empty (no screen needs data to prove who gets in). Chromium (Debian's,
driven by Playwright through ``executable_path``) signs in once on the data service's page with
password and TOTP and is then let through both doors; a user locked out by wrong passwords is
let through none of the three (API, Superset, Dagster UI); an operations engineer is refused by
the Dagster UI's door and admitted to Superset with the mapped role.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest
import websockets
from websockets.sync.client import connect

from opslake.api.signin import SESSION_CACHE_SECONDS, SESSION_COOKIE
from opslake.screens import browser, service
from opslake.screens.access import OPS_ROLE, SQL_LAB_BASE, Access, AccessReport
from opslake.screens.server import SupersetConfig, start_server, stop_server
from opslake.security.audit import AuditLog
from opslake.security.identity import MAX_FAILURES, IdentityStore
from opslake.settings import Settings
from tests.integration.services import (
    Background,
    free_port,
    headless_chromium,
    install_services,
    install_superset,
    running,
)

PASSWORD = "Doors-test-pass-1"


@dataclass
class Doors:
    """The running service, its doors and the users' TOTP secrets."""

    api: str
    dagster: str
    superset: str
    superset_config: SupersetConfig
    settings: Settings
    totp: dict[str, str]


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    """Superset, the Dagster webserver and ``opslake serve`` with both doors, on loopback."""
    install_superset()
    install_services()  # Chromium
    root = tmp_path_factory.mktemp("doors")
    api, dagster_door, superset_door = free_port(), free_port(), free_port()
    dagster_port, superset_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLAKE_", "DAGSTER_"))} | {
        "OPSLAKE_HOME": str(root / "lake"),
        "OPSLAKE_SUPERSET_PORT": str(superset_port),
        "OPSLAKE_SUPERSET_WORKERS": "1",
        "OPSLAKE_DAGSTER_DOOR_PORT": str(dagster_door),
        "OPSLAKE_SUPERSET_DOOR_PORT": str(superset_door),
        "OPSLAKE_DAGSTER_UPSTREAM": f"http://127.0.0.1:{dagster_port}",
    }
    settings = Settings.from_env(env)
    config = SupersetConfig.from_settings(settings, env)
    assert config.door
    started = time.perf_counter()
    # Superset's first start takes longest: the rest is set up meanwhile.
    booting = Background(lambda: start_server(config, say=lambda _: None))
    try:
        store = IdentityStore.sealed(settings)
        store.bootstrap_admin("root", PASSWORD)
        secrets = {"root": store.enrol_totp("root")[0]}
        for user, role in (
            ("dan", "data_engineer"),
            ("lena", "data_engineer"),
            ("olga", "ops_engineer"),
        ):
            store.add_user(user, role, PASSWORD)
            secrets[user] = store.enrol_totp(user)[0]
        settings.dagster_home.mkdir(parents=True)
        webserver = [
            str(Path(sys.executable).with_name("dagster-webserver")),
            "-h",
            "127.0.0.1",
            "-p",
            str(dagster_port),
            "-m",
            "opslake.orchestration.definitions",
        ]
        with running(
            webserver,
            f"http://127.0.0.1:{dagster_port}/server_info",
            root / "dagster.log",
            env | {"DAGSTER_HOME": str(settings.dagster_home)},
            timeout=240,
        ):
            booting.join()
            # The role the door maps operations engineers to, as `opslake screens start`
            # provisions it (here without datasets: the lake is empty). This REST login with
            # a JWT is what screens import and provisioning use: it works in remote-user mode.
            with service.admin_client(config) as admin:
                access = Access(admin)
                access.ensure_role(
                    OPS_ROLE,
                    access.role_permissions("Gamma") | access.role_permissions(SQL_LAB_BASE),
                    AccessReport(),
                )
            serve = [str(Path(sys.executable).with_name("opslake")), "serve", "--port", str(api)]
            with running(serve, f"http://127.0.0.1:{api}/healthz", root / "serve.log", env):
                print(
                    f"\nsuperset, dagster-webserver and opslake serve up in "
                    f"{time.perf_counter() - started:.0f}s"
                )
                yield Doors(
                    f"http://127.0.0.1:{api}",
                    f"http://127.0.0.1:{dagster_door}",
                    f"http://127.0.0.1:{superset_door}",
                    config,
                    settings,
                    secrets,
                )
    finally:
        booting.thread.join()
        stop_server(config, say=lambda _: None)


@pytest.fixture(scope="module")
def chromium(doors: Doors) -> Iterator[object]:
    """Debian's Chromium, headless, each test in a fresh context (no cookies)."""
    with headless_chromium() as launched:
        yield launched


def _sign_in(
    page, doors: Doors, user: str, password: str = PASSWORD, code: str | None = None
) -> None:
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.fill("input[name=totp]", code if code is not None else pyotp.TOTP(doors.totp[user]).now())
    page.click("button[type=submit]")
    page.wait_for_load_state()


def _on_sign_in_page(page, doors: Doors) -> bool:
    return (
        page.url.startswith(f"{doors.api}/login") and page.locator("input[name=totp]").count() == 1
    )


def _door_entries(doors: Doors) -> list[tuple[str, str, str, int]]:
    log = AuditLog(doors.settings.state_dir / "audit")
    return [
        (e["who"], e["params"]["door"], e["params"]["path"], e["status"])
        for e in log.read()
        if e["action"].startswith("door ")
    ]


def test_one_sign_in_with_totp_opens_superset_and_the_dagster_ui(doors: Doors, chromium) -> None:
    context = chromium.new_context()
    page = context.new_page()
    for door in (doors.dagster, doors.superset):
        page.goto(f"{door}/")
        assert _on_sign_in_page(page, doors), page.url  # no session: sent to sign in
    assert context.request.get(f"{doors.api}/v1/subscriptions").status == 401
    started = time.perf_counter()
    page.goto(f"{doors.dagster}/runs")
    assert _on_sign_in_page(page, doors)
    # Back where it was going, and the Dagster UI works: its GraphQL POSTs pass the door.
    with page.expect_response(
        lambda r: r.url.startswith(f"{doors.dagster}/graphql?op=") and r.request.method == "POST",
        timeout=90_000,
    ) as graphql:
        _sign_in(page, doors, "dan")
    assert graphql.value.status == 200 and "data" in graphql.value.json()
    assert page.url == f"{doors.dagster}/runs"
    assert page.title().startswith("Runs")  # drawn by the UI's own script
    # The same sign-in opens Superset, as the mapped user.
    page.goto(f"{doors.superset}/superset/welcome/")
    assert page.url.startswith(doors.superset) and not _on_sign_in_page(page, doors)
    me = context.request.get(f"{doors.superset}/api/v1/me/").json()["result"]
    assert me["username"] == "dan"
    roles = context.request.get(f"{doors.superset}/api/v1/me/roles/").json()["result"]
    assert list(roles["roles"]) == [OPS_ROLE]
    # …and the API (the cookie, on a GET).
    assert context.request.get(f"{doors.api}/v1/subscriptions").status == 200
    print(f"signed in and through both doors in {time.perf_counter() - started:.1f}s")

    # The Dagster UI's websocket (GraphQL subscriptions) is relayed both ways.
    cookie = next(c["value"] for c in context.cookies() if c["name"] == SESSION_COOKIE)
    ws_url = doors.dagster.replace("http", "ws", 1) + "/graphql"

    # (the sync client: Playwright's loop runs in this thread)
    def subscribe(headers: dict[str, str]) -> str:
        with connect(
            ws_url,
            subprotocols=["graphql-ws"],
            additional_headers=headers,
            proxy=None,
            open_timeout=20,
        ) as socket:
            assert socket.subprotocol == "graphql-ws"
            socket.send(json.dumps({"type": "connection_init", "payload": {}}))
            return json.loads(socket.recv(timeout=20))["type"]

    origin = {"Origin": doors.dagster}
    assert subscribe(origin | {"Cookie": f"{SESSION_COOKIE}={cookie}"}) == "connection_ack"
    for refused in (
        origin,
        {"Origin": "http://evil.example", "Cookie": f"{SESSION_COOKIE}={cookie}"},
    ):
        with pytest.raises(websockets.exceptions.InvalidStatus, match="403"):
            subscribe(refused)

    # Signing out at the data service closes every door at once.
    page.goto(f"{doors.api}/login")
    page.click("button[type=submit]")  # the signed-in page's sign-out button
    page.wait_for_load_state()
    page.goto(f"{doors.dagster}/runs")
    assert _on_sign_in_page(page, doors)
    context.close()
    entries = _door_entries(doors)
    assert ("anonymous", "dagster", "/", 302) in entries
    assert ("anonymous", "superset", "/", 302) in entries
    assert ("dan", "dagster", "/runs", 200) in entries
    assert ("dan", "dagster", "/graphql", 101) in entries
    assert ("dan", "superset", "/api/v1/me/", 200) in entries


def test_a_locked_out_user_gets_through_no_door(doors: Doors, chromium) -> None:
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{doors.superset}/")
    _sign_in(page, doors, "lena")
    assert page.url.startswith(doors.superset)  # lena was in, with a session
    assert context.request.get(f"{doors.api}/v1/subscriptions").status == 200
    guesser = chromium.new_context().new_page()
    for _ in range(MAX_FAILURES):  # someone guesses her password
        guesser.goto(f"{doors.api}/login")
        _sign_in(guesser, doors, "lena", password="Wrong-guess-123", code="000000")
    assert "now locked" in guesser.inner_text("[role=alert]")
    # The right password and code are refused now, on the page and at the API.
    guesser.goto(f"{doors.api}/login")
    _sign_in(guesser, doors, "lena")
    assert _on_sign_in_page(guesser, doors)
    assert "is locked" in guesser.inner_text("[role=alert]")
    guesser.context.close()
    code = pyotp.TOTP(doors.totp["lena"]).now()
    r = httpx.post(
        f"{doors.api}/v1/auth/login", json={"user": "lena", "password": PASSWORD, "totp": code}
    )
    assert r.status_code == 401 and "is locked" in r.json()["error"]
    # Her session ended with the lockout: no door and no API read lets her through.
    time.sleep(SESSION_CACHE_SECONDS)
    assert context.request.get(f"{doors.api}/v1/subscriptions").status == 401
    for door in (doors.dagster, doors.superset):
        page.goto(f"{door}/")
        assert _on_sign_in_page(page, doors), page.url
    context.close()


def test_an_ops_engineer_is_refused_by_dagster_and_admitted_to_superset(
    doors: Doors, chromium
) -> None:
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{doors.superset}/superset/welcome/")
    _sign_in(page, doors, "olga")
    assert page.url == f"{doors.superset}/superset/welcome/"
    roles = context.request.get(f"{doors.superset}/api/v1/me/roles/").json()["result"]
    assert roles["username"] == "olga" and list(roles["roles"]) == [OPS_ROLE]
    refused = page.goto(f"{doors.dagster}/")
    assert refused is not None and refused.status == 403
    assert "may not use the Dagster UI" in page.inner_text("body")

    # An identity claimed by the client is not passed on: the door states its own.
    forged = context.request.get(
        f"{doors.superset}/api/v1/me/", headers={"X-OpsLake-User": "root", "Remote-User": "root"}
    )
    assert forged.json()["result"]["username"] == "olga"
    # Around the door, Superset's own cookie (the door's visit left it: cookies are per host)
    # signs nobody in, nor do the door's headers without its secret.
    upstream = doors.superset_config.url
    cookies = {c["name"]: c["value"] for c in context.cookies() if c["name"] != SESSION_COOKIE}
    assert cookies, "Superset set no session cookie through the door"
    assert httpx.get(f"{upstream}/api/v1/me/", cookies=cookies).status_code == 401
    guessed = httpx.get(
        f"{upstream}/api/v1/me/",
        headers={
            "X-OpsLake-User": "olga",
            "X-OpsLake-Roles": "Admin",
            "X-OpsLake-Gateway-Secret": "a-guess",
        },
    )
    assert guessed.status_code == 401
    context.close()
    # The report renderer holds the secret: it signs in as Superset's service administrator.
    renderer = chromium.new_context().new_page()
    config = doors.superset_config
    browser.log_in(renderer, config, config.admin_username, config.password())
    renderer.goto(f"{config.url}/api/v1/me/")
    assert json.loads(renderer.inner_text("body"))["result"]["username"] == config.admin_username
    renderer.context.close()
    entries = _door_entries(doors)
    assert ("olga", "dagster", "/", 403) in entries
    assert ("olga", "superset", "/superset/welcome/", 200) in entries
    assert AuditLog.from_settings(doors.settings, create_key=False).verify().ok
