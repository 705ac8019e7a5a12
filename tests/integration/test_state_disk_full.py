"""A full state disk: the real service answers 503 (never 500 or a dropped connection), writes
nothing by halves, and once space returns the audit chain verifies and re-pushes land once.

The state directory (identity and subscriptions stores, audit log) is a small tmpfs mounted
by the test (as root); the lake stays on the normal disk. ``opslake serve`` runs in its own
process on loopback, as in production.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opslake.lake.landing import LandingZone
from opslake.settings import Settings
from tests.integration.services import fill, free_port, running, tmpfs
from tests.integration.test_push_api import AM, _body, _today, _webhook
from tests.keys import bearer, ingest_key

LIST = "/v1/subscriptions"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs for OPSLAKE_STATE_DIR, unmounted afterwards."""
    with tmpfs(tmp_path / "state", "4m") as path:
        yield path


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 503, (answer.status_code, answer.text)
    assert set(answer.json()) == {"error", "fix"} and "free space" in answer.json()["fix"]
    assert int(answer.headers["Retry-After"]) > 0


def test_a_full_state_disk_answers_503_and_recovers(tmp_path: Path, state_dir: Path) -> None:
    env = {
        **os.environ,
        "OPSLAKE_HOME": str(tmp_path / "lake"),
        "OPSLAKE_STATE_DIR": str(state_dir),
    }
    settings = Settings.from_env(env)
    pusher = bearer(ingest_key(settings))
    reader = bearer(ingest_key(settings, "alice", "ops_engineer"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "opslake", "serve", "--port", str(port)]
    sent = {f"full-{i}": _body(_webhook(i)) for i in range(4)}

    def push(http: httpx.Client, batch_id: str) -> httpx.Response:
        return http.post(
            AM, content=sent[batch_id], headers={**pusher, "X-OpsLake-Batch-Id": batch_id}
        )

    with (
        running(serve, f"{base}/healthz", tmp_path / "serve.log", env=env),
        httpx.Client(base_url=base, timeout=10, trust_env=False) as http,
    ):
        assert push(http, "full-0").status_code == 200
        assert http.get(LIST, headers=reader).status_code == 200
        filler = fill(state_dir)
        # The audit day file's last page may hold a few more entries: until it is used up the
        # answers are 200, then 503; never anything else.
        statuses = []
        while 503 not in statuses and len(statuses) < 100:
            statuses.append(http.get("/healthz").status_code)
        assert set(statuses) == {200, 503} or statuses == [503], statuses
        # Past the key cache's seconds, so key checks read the full store too.
        for pause in (0, 2.5):
            time.sleep(pause)
            for batch_id in ("full-1", "full-2"):
                _refused(push(http, batch_id))
            _refused(http.get(LIST, headers=reader))
            _refused(http.get("/healthz"))
        filler.unlink()
        answers = {b: push(http, b) for b in sent}
        assert {b: a.status_code for b, a in answers.items()} == dict.fromkeys(sent, 200)
        assert http.get(LIST, headers=reader).status_code == 200

    # What landed while the answers were 503 is recognised: every batch is there once.
    landed = [
        b.batch_id for b in LandingZone.from_settings(settings).batches("alertmanager", _today())
    ]
    assert sorted(landed) == sorted(sent)
    check = subprocess.run(
        [sys.executable, "-m", "opslake", "audit", "verify"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    assert '"ok": true' in check.stdout and not check.stderr
