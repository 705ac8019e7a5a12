"""Atomic quotas on a real ``opslake serve``: 50 concurrent clients never overshoot a quota,
a request the service fails (503) is refunded, and sessions count against their user's quota.

The warehouse file is damaged on purpose, so data endpoints answer 503 (the service cannot
read it: not the caller's fault), while subscriptions, kept in their own store, answer 200.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from opslake.security.identity import IdentityStore
from opslake.settings import Settings
from tests.integration.services import free_port, running
from tests.keys import PASSWORD, bearer

SESSION_QUOTA = 5
ANSWERED = "/v1/subscriptions"
FAILED = "/v1/incidents"


@dataclass
class Served:
    base: str
    settings: Settings
    store: IdentityStore

    def key(self, quota: int) -> tuple[str, str]:
        """A new key of ``alice`` with ``quota`` requests a day: (key id, raw key)."""
        return self.store.create_key("alice", quota_per_day=quota)

    def audited(self, key_id: str) -> list[dict]:
        """The audit entries of requests made with ``key_id``."""
        return [
            entry
            for f in sorted((self.settings.state_dir / "audit").glob("*.jsonl"))
            for entry in map(json.loads, f.read_text().splitlines())
            if entry.get("key_id") == key_id
        ]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("quota-served")
    env = {
        **os.environ,
        "OPSLAKE_HOME": str(home / "lake"),
        "OPSLAKE_SESSION_QUOTA": str(SESSION_QUOTA),
    }
    env.pop("OPSLAKE_STATE_DIR", None)
    settings = Settings.from_env(env)
    store = IdentityStore.sealed(settings)
    store.add_user("alice", "ops_engineer", PASSWORD)
    store.add_user("sam", "ops_engineer", PASSWORD)
    settings.warehouse_path.write_bytes(b"not a DuckDB file" * 1024)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running(
        [sys.executable, "-m", "opslake", "serve", "--port", str(port)],
        f"{base}/healthz",
        home / "serve.log",
        env=env,
    ):
        yield Served(base, settings, store)


def _get(base: str, path: str, credential: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=60, trust_env=False) as http:
        return http.get(path, headers=bearer(credential))


def test_fifty_concurrent_clients_never_overshoot_a_quota_of_twenty(served: Served) -> None:
    key_id, key = served.key(20)
    start = threading.Barrier(50)

    def client() -> httpx.Response:
        # Its own connection, opened before the others send: 50 requests in flight at once.
        with httpx.Client(base_url=served.base, timeout=60, trust_env=False) as http:
            http.get("/healthz")
            start.wait()
            return http.get(ANSWERED, headers=bearer(key))

    with ThreadPoolExecutor(50) as pool:
        answers = [f.result() for f in [pool.submit(client) for _ in range(50)]]
    assert Counter(a.status_code for a in answers) == {200: 20, 429: 30}
    refused = next(a for a in answers if a.status_code == 429).json()
    assert f"API key {key_id} used all 20 requests" in refused["error"]
    assert "the quota resets at" in refused["fix"]
    assert _get(served.base, ANSWERED, key).status_code == 429
    assert Counter(e["status"] for e in served.audited(key_id)) == {200: 20, 429: 31}
    deadline = time.monotonic() + 30  # written within a second
    while sum(u.requests for u in served.store.usage(key_id)) < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sum(u.requests for u in served.store.usage(key_id)) == 20


def test_a_request_the_service_fails_is_refunded(served: Served) -> None:
    key_id, key = served.key(3)
    failed = [_get(served.base, FAILED, key) for _ in range(4)]
    assert [a.status_code for a in failed] == [503] * 4  # more than the quota
    assert "cannot open the warehouse" in failed[0].json()["error"]
    assert [_get(served.base, ANSWERED, key).status_code for _ in range(4)] == [200, 200, 200, 429]
    assert Counter(e["status"] for e in served.audited(key_id)) == {503: 4, 200: 3, 429: 1}


def test_sessions_count_against_their_users_quota(served: Served) -> None:
    def login() -> str:
        with httpx.Client(base_url=served.base, timeout=60, trust_env=False) as http:
            answer = http.post("/v1/auth/login", json={"user": "sam", "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        return answer.json()["token"]

    first, second = login(), login()
    assert _get(served.base, FAILED, first).status_code == 503  # refunded, like a key's
    statuses = [
        _get(served.base, ANSWERED, token).status_code
        for token in (first, second, first, second, first, second)
    ]
    assert statuses == [200] * SESSION_QUOTA + [429]  # both sessions, one quota
    refused = _get(served.base, ANSWERED, first)
    assert refused.status_code == 429
    assert f"the sessions of user 'sam' used all {SESSION_QUOTA}" in refused.json()["error"]
    _, key = served.store.create_key("sam", quota_per_day=1)  # a key has its own quota
    assert _get(served.base, ANSWERED, key).status_code == 200
