"""The sign-in page of the data service: cookie, lockout, TOTP, logout, CSRF rules, audit;
a door over TLS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.api.signin import SESSION_COOKIE
from opslake.security import tls
from opslake.security.audit import AuditLog
from opslake.security.identity import MAX_FAILURES, IdentityStore
from opslake.settings import Settings
from tests.integration.services import free_port, running

PASSWORD = "Sign-in-page-42"
SAME = {"Origin": "http://testserver"}


@pytest.fixture
def service(tmp_path: Path) -> tuple[Settings, IdentityStore, str]:
    settings = Settings.from_env(
        {"OPSLAKE_HOME": str(tmp_path), "OPSLAKE_DAGSTER_DOOR_PORT": "3000"}
    )
    store = IdentityStore.sealed(settings)
    store.add_user("dan", "data_engineer", PASSWORD)
    secret, _ = store.enrol_totp("dan")
    return settings, store, secret


def _sign_in(client: TestClient, secret: str, **form: str) -> object:
    data = {"user": "dan", "password": PASSWORD, "totp": pyotp.TOTP(secret).now(), **form}
    return client.post("/login", data=data, headers=SAME, follow_redirects=False)


def test_sign_in_sets_a_strict_cookie_the_api_takes_for_reads_only(service) -> None:
    settings, _store, secret = service
    with TestClient(create_app(settings)) as client:
        form = client.get("/login?next=//evil.example/")
        assert form.status_code == 200 and 'name="totp"' in form.text
        assert 'name="next" value="/login"' in form.text  # the foreign target is dropped
        # The form may post here and be redirected to a door, nowhere else.
        assert (
            "form-action 'self' http://testserver:3000;" in form.headers["content-security-policy"]
        )
        r = _sign_in(client, secret, next="http://testserver:3000/runs")
        assert r.status_code == 303 and r.headers["location"] == "http://testserver:3000/runs"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie
        assert "SameSite=lax" in cookie and "Secure" not in cookie
        token = r.cookies[SESSION_COOKIE]
        assert client.get("/v1/subscriptions").status_code == 200  # the cookie, on a GET
        assert "dan (data_engineer)" in client.get("/login").text
        # A write with the cookie alone is anonymous (CSRF); with the token as Bearer it is not.
        body = {"name": "x", "metric": "m", "channel": {"kind": "sse"}}
        assert client.post("/v1/subscriptions", json=body).status_code == 401
        bearer = client.post(
            "/v1/subscriptions", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert bearer.status_code not in (401, 403)
        out = client.post("/logout", headers=SAME, follow_redirects=False)
        assert out.status_code == 303 and f'{SESSION_COOKIE}=""' in out.headers["set-cookie"]
        client.cookies.set(SESSION_COOKIE, token)
        assert client.get("/v1/subscriptions").status_code == 401  # the session is over
    entries = list(AuditLog(settings.state_dir / "audit").read())
    assert any(
        e["action"] == "POST /login"
        and e["params"] == {"user": "dan", "via": "sign-in page"}
        and e["status"] == 303
        for e in entries
    )
    assert any(e["action"] == "GET /v1/subscriptions" and e["who"] == "dan" for e in entries)


def test_sign_in_from_another_site_is_refused(service) -> None:
    settings, _store, secret = service
    with TestClient(create_app(settings)) as client:
        r = client.post(
            "/login",
            data={"user": "dan", "password": PASSWORD, "totp": pyotp.TOTP(secret).now()},
            headers={"Origin": "http://evil.example"},
            follow_redirects=False,
        )
        assert r.status_code == 403 and SESSION_COOKIE not in r.cookies


def test_totp_is_required_and_wrong_passwords_lock_the_account(service) -> None:
    settings, _store, secret = service
    with TestClient(create_app(settings)) as client:
        r = client.post("/login", data={"user": "dan", "password": PASSWORD}, headers=SAME)
        assert r.status_code == 401 and "TOTP authenticator" in r.text
        for _ in range(MAX_FAILURES):
            r = client.post(
                "/login", data={"user": "dan", "password": "Wrong-pass-123"}, headers=SAME
            )
            assert r.status_code == 401
        assert "locked" in r.text
        r = _sign_in(client, secret)
        assert r.status_code == 401 and "is locked" in r.text and SESSION_COOKIE not in r.cookies
    refused = [
        e["params"]["refused"]
        for e in AuditLog(settings.state_dir / "audit").read()
        if e["action"] == "POST /login"
    ]
    assert refused[0].startswith("user 'dan' has a TOTP authenticator")
    assert all(
        r.startswith("wrong user name, password or TOTP code") for r in refused[1:MAX_FAILURES]
    )
    assert "is now locked until" in refused[MAX_FAILURES]
    assert "is locked after 5 failed attempts" in refused[-1]


def test_the_cookie_is_secure_when_the_service_speaks_tls(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "OPSLAKE_HOME": str(tmp_path),
            "OPSLAKE_TLS_CERT": str(tmp_path / "c.pem"),
            "OPSLAKE_TLS_KEY": str(tmp_path / "k.pem"),
        }
    )
    store = IdentityStore.sealed(settings)
    store.add_user("lee", "leadership", PASSWORD)
    with TestClient(create_app(settings), base_url="https://testserver") as client:
        r = client.post(
            "/login",
            data={"user": "lee", "password": PASSWORD},
            headers={"Origin": "https://testserver"},
            follow_redirects=False,
        )
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]


def test_a_door_speaks_https_like_the_service(tmp_path: Path) -> None:
    """A real `opslake serve` with TLS: the door is HTTPS too, the cookie Secure."""
    made = subprocess.run(
        [sys.executable, "-m", "opslake", "tls", "self-signed", "--out", str(tmp_path / "pki")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    cert = tmp_path / "pki" / "opslake.crt"
    api, door, upstream = free_port(), free_port(), free_port()
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "index.html").write_text("the Dagster UI stands here")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLAKE_", "DAGSTER_"))}
    env |= {
        "OPSLAKE_HOME": str(tmp_path / "lake"),
        "OPSLAKE_TLS_CERT": str(cert),
        "OPSLAKE_TLS_KEY": str(tmp_path / "pki" / "opslake.key"),
        "OPSLAKE_DAGSTER_DOOR_PORT": str(door),
        "OPSLAKE_DAGSTER_UPSTREAM": f"http://127.0.0.1:{upstream}",
    }
    IdentityStore.sealed(Settings.from_env(env)).add_user("dan", "data_engineer", PASSWORD)
    ui = [
        sys.executable,
        "-m",
        "http.server",
        str(upstream),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(tmp_path / "ui"),
    ]
    serve = [sys.executable, "-m", "opslake", "serve", "--port", str(api)]
    with (
        running(ui, upstream, tmp_path / "ui.log"),
        running(serve, door, tmp_path / "serve.log", env),
        httpx.Client(verify=tls.client_context(cert)) as client,
    ):
        page = client.get(f"https://127.0.0.1:{door}/", headers={"Accept": "text/html"})
        assert page.status_code == 302
        assert page.headers["location"] == (
            f"https://127.0.0.1:{api}/login?next=https%3A%2F%2F127.0.0.1%3A{door}%2F"
        )
        signed = client.post(
            f"https://127.0.0.1:{api}/login",
            data={"user": "dan", "password": PASSWORD, "next": f"https://127.0.0.1:{door}/"},
            headers={"Origin": f"https://127.0.0.1:{api}"},
        )
        assert signed.status_code == 303 and "Secure" in signed.headers["set-cookie"]
        assert signed.headers["location"] == f"https://127.0.0.1:{door}/"
        through = client.get(f"https://127.0.0.1:{door}/")
        assert through.status_code == 200 and "the Dagster UI stands here" in through.text
