"""The credential before the body, on a real server: a caller who may not post is refused
before its body is read (401/403, never a 422 about the body, the connection closed rather
than a 100 MiB body read), and a 422 names the fields at fault without echoing them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import httpx
import pytest

from opslake.settings import Settings
from tests.integration.services import free_port, running
from tests.keys import bearer, ingest_key

SECRET = "Never-Echo-This-Password-42"
MIB = 1 << 20
JSON = {"Content-Type": "application/json"}
POSTS = ("/v1/subscriptions", "/v1/admin/keys", "/v1/ingest/alertmanager")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, str]]:
    """A running service and a push-only key (which may not subscribe or create keys)."""
    home = tmp_path_factory.mktemp("body-auth")
    env = {**os.environ, "OPSLAKE_HOME": str(home / "lake")}
    env.pop("OPSLAKE_STATE_DIR", None)
    key = ingest_key(Settings.from_env(env))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        running(
            [sys.executable, "-m", "opslake", "serve", "--port", str(port)],
            f"{base}/healthz",
            home / "serve.log",
            env=env,
        ),
        httpx.Client(base_url=base, timeout=30, trust_env=False) as http,
    ):
        yield http, key


@pytest.mark.parametrize("path", POSTS)
def test_a_malformed_body_without_a_credential_is_401(served, path: str) -> None:
    http, key = served
    answer = http.post(path, content=b'{"not json', headers=JSON)
    assert answer.status_code == 401, answer.text
    assert set(answer.json()) == {"error", "fix"}
    if path != "/v1/ingest/alertmanager":
        assert (
            http.post(path, content=b'{"not json', headers={**JSON, **bearer(key)}).status_code
            == 403
        )


@pytest.mark.parametrize("path", POSTS)
def test_a_100_mib_body_without_a_credential_is_not_read(served, path: str) -> None:
    http, _ = served
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(100):
            sent += MIB
            yield b"x" * MIB

    answer = http.post(path, content=body(), headers=JSON)
    assert answer.status_code == 401 and answer.headers["Connection"] == "close"
    # What the sockets buffer before the server closes, not the body.
    assert sent <= 32 * MIB, f"{sent // MIB} MiB of 100 were taken"


def test_a_malformed_login_is_422_without_echoing_the_password(served) -> None:
    http, _ = served
    for body in (
        {"user": "", "password": SECRET},
        {"user": "root", "password": SECRET * 10},
        {"user": "root", "password": SECRET, "totp": SECRET},
    ):
        answer = http.post("/v1/auth/login", json=body)
        assert answer.status_code == 422 and set(answer.json()) == {"error", "fix"}
        assert SECRET not in answer.text and "body." in answer.json()["error"]
    wrong = http.post("/v1/auth/login", json={"user": "root", "password": SECRET})
    assert wrong.status_code == 401 and SECRET not in wrong.text


def test_the_description_documents_422_as_error_and_fix(served) -> None:
    http, _ = served
    spec = http.get("/openapi.json").json()
    documented = [
        op["responses"]["422"]
        for ops in spec["paths"].values()
        for op in ops.values()
        if "422" in op.get("responses", {})
    ]
    assert documented and "HTTPValidationError" not in spec["components"]["schemas"]
    assert all("HTTPValidationError" not in str(response) for response in documented)
