"""Faults survived (S6.10e): a warehouse build killed mid-way, a lake disk that fills up.

- SIGKILL during ``warehouse build``: readers go on answering from the old file, never an
  error; the killed builder's half-built file is removed by the next build.
- ENOSPC during landing (the lake on a small tmpfs): the push is answered 503 with the fix,
  nothing partial is left (no data object, no manifest row, no staged bytes), and once space
  returns the redelivery lands once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.lake.landing import LandingZone
from opslake.lake.storage import STAGING, Lake
from opslake.lake.warehouse import build_warehouse, open_read_only
from opslake.settings import Settings
from tests.integration.services import fill, tmpfs
from tests.integration.test_push_api import AM, _body, _today, _webhook
from tests.keys import bearer, ingest_key

BUILD = ("import sys; from pathlib import Path; from opslake.lake.storage import Lake; "
         "from opslake.lake.warehouse import build_warehouse; from opslake.settings import "
         "Settings; build_warehouse(Lake.from_settings(Settings.from_env()), Path(sys.argv[1]))")


def _gold(lake: Lake, dt: str, rows: int) -> None:
    lake.write_table(pa.table({"entity_id": pa.array([f"e{i % 5000}" for i in range(rows)]),
                               "score": pa.array([float(i) for i in range(rows)])}),
                     "gold", "entity_health", {"dt": dt})


def test_a_warehouse_build_killed_midway_leaves_readers_on_the_old_file(
        settings: Settings, lake: Lake) -> None:
    target = settings.warehouse_path
    _gold(lake, "2026-03-02", 1000)
    build_warehouse(lake, target)
    for dt in ("2026-03-03", "2026-03-04", "2026-03-05"):  # enough for a build of seconds
        _gold(lake, dt, 1_500_000)

    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:  # what the API does: a fresh read-only attach per snapshot
        while not stop.is_set():
            try:
                con = open_read_only(target)
                seen.append(con.execute("SELECT count(*) FROM entity_health").fetchone()[0])
                con.close()
            except BaseException as exc:  # noqa: BLE001 - every failure is the finding
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        builder = subprocess.Popen([sys.executable, "-c", BUILD, str(target)],
                                   env={**os.environ, "OPSLAKE_HOME": settings.home})
        building = target.with_name(f".{target.name}.{builder.pid}.building")
        deadline = time.monotonic() + 60
        while not building.exists():
            assert builder.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build never started writing"
            time.sleep(0.01)
        time.sleep(0.5)
        assert builder.poll() is None, "the build ended before it could be killed"
        builder.send_signal(signal.SIGKILL)
        builder.wait(timeout=30)
        time.sleep(0.3)
    finally:
        stop.set()
        reader.join(timeout=30)
    assert errors == []
    assert seen and set(seen) == {1000}, "every reader answered from the old file"
    assert building.exists(), "the killed builder left its half-built file"

    objects = build_warehouse(lake, target)
    assert [o.rows for o in objects if o.name == "entity_health"] == [4_501_000]
    assert not list(target.parent.glob(f".{target.name}.*")), "the next build swept it"


def test_a_full_lake_disk_answers_503_and_the_redelivery_lands_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with tmpfs(tmp_path / "lake", "2m") as home:
        monkeypatch.setenv("OPSLAKE_HOME", str(home))
        monkeypatch.setenv("OPSLAKE_STATE_DIR", str(tmp_path / "state"))
        settings = Settings.from_env()
        zone = LandingZone.from_settings(settings)
        body = _body(_webhook(7))
        headers = {**bearer(ingest_key(settings)), "X-OpsLake-Batch-Id": "am-full-1"}
        with TestClient(create_app(settings)) as client:
            filler = fill(home)
            answer = client.post(AM, content=body, headers=headers)
            assert answer.status_code == 503, (answer.status_code, answer.text)
            assert "OPSLAKE_HOME" in answer.json()["fix"]
            assert zone.batches("alertmanager", _today()) == []
            left = [p for p in home.rglob("*") if p.is_file() and p != filler]
            assert left == [], f"nothing partial may stay: {left}"
            assert not (home / STAGING).exists() or not any((home / STAGING).iterdir())

            filler.unlink()
            for _ in range(2):
                assert client.post(AM, content=body, headers=headers).status_code == 200
        [batch] = zone.batches("alertmanager", _today())
        assert batch.batch_id == "am-full-1" and zone.read(batch) == body
