"""Faults survived (S6.10e): a warehouse build killed mid-way, a lake disk that fills up, the
object store down during a materialization.

- SIGKILL during ``warehouse build``: readers go on answering from the old file, never an
  error; the killed builder's half-built file is removed by the next build.
- ENOSPC during landing (the lake on a small tmpfs): the push is answered 503 with the fix,
  nothing partial is left (no data object, no manifest row, no staged bytes), and once space
  returns the redelivery lands once.
- The S3 endpoint unreachable (a forwarder in front of moto is cut): a step is retried and
  the run completes when it comes back within the retries; down for longer, the run fails
  loudly (its steps retried first), nothing is half-written, and a rerun lands each row once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.lake.landing import LandingZone
from opslake.lake.storage import STAGING, Lake
from opslake.lake.warehouse import build_warehouse, open_read_only
from opslake.orchestration import runner
from opslake.settings import Settings
from tests.integration.services import Gate, fill, moto_s3, tmpfs
from tests.integration.test_push_api import AM, _body, _today, _webhook
from tests.keys import bearer, ingest_key

DAY = "2026-03-02"
BUILD = (
    "import sys; from pathlib import Path; from opslake.lake.storage import Lake; "
    "from opslake.lake.warehouse import build_warehouse; from opslake.settings import "
    "Settings; build_warehouse(Lake.from_settings(Settings.from_env()), Path(sys.argv[1]))"
)


def _gold(lake: Lake, dt: str, rows: int) -> None:
    lake.write_table(
        pa.table(
            {
                "entity_id": pa.array([f"e{i % 5000}" for i in range(rows)]),
                "score": pa.array([float(i) for i in range(rows)]),
            }
        ),
        "gold",
        "entity_health",
        {"dt": dt},
    )


def test_a_warehouse_build_killed_midway_leaves_readers_on_the_old_file(
    settings: Settings, lake: Lake
) -> None:
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
        builder = subprocess.Popen(
            [sys.executable, "-c", BUILD, str(target)],
            env={**os.environ, "OPSLAKE_HOME": settings.home},
        )
        building = target.with_name(f".{target.name}.{builder.pid}.building")
        deadline = time.monotonic() + 60
        while not building.exists():
            assert builder.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build never started writing"
            time.sleep(0.01)
        # Frozen first, then checked: a fast machine may finish the whole build within a
        # fixed sleep, so the kill lands while the half-built file is known to be there.
        time.sleep(0.05)
        builder.send_signal(signal.SIGSTOP)
        assert building.exists(), "the build finished before it could be stopped"
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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


SYSLOG = [
    b"<13>1 2026-03-02T23:59:0%dZ web-01 nginx - - - upstream timed out %d\n" % (i, i)
    for i in range(3)
]
STEPS = ["landing/syslog", "bronze/syslog_lines", "silver/logs"]


def _retries(settings: Settings) -> int:
    inst = runner.instance(settings)
    return sum(
        len(
            inst.get_records_for_run(
                r.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
            ).records
        )
        for r in inst.get_runs()
    )


def test_the_object_store_down_mid_run_is_retried_or_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    with moto_s3(tmp_path / "moto.log") as endpoint:
        gate = Gate(int(endpoint.rsplit(":", 1)[1]))
        gate.up()
        settings = Settings.from_env(
            {
                **os.environ,
                "OPSLAKE_HOME": "s3://opslake/lake",
                "OPSLAKE_S3_ENDPOINT": f"http://127.0.0.1:{gate.port}",
                "OPSLAKE_STATE_DIR": str(tmp_path / "state"),
            }
        )
        for name, value in (
            ("OPSLAKE_HOME", settings.home),
            ("OPSLAKE_S3_ENDPOINT", settings.s3_endpoint),
        ):
            monkeypatch.setenv(name, value)
        zone = LandingZone.from_settings(settings)
        zone.write("syslog", SYSLOG[0], fmt="log", dt=DAY, batch_id="sys-1")

        # Down until a step has failed and waits for its retry: the retry completes the run.
        runner.instance(settings)  # created here: two threads creating it race its schema
        gate.down()
        run = threading.Thread(target=runner.materialize, args=(settings, [DAY], STEPS))
        run.start()
        deadline = time.monotonic() + 120
        while _retries(settings) == 0:
            assert run.is_alive(), "the run ended without retrying a step"
            assert time.monotonic() < deadline, "no step was retried"
            time.sleep(0.2)
        gate.up()
        run.join(timeout=180)
        assert not run.is_alive()
        logs = zone.lake.read_table("silver", "logs", dts=[DAY]).to_pylist()
        assert len(logs) == 1

        # Down for good: every step's retries are spent, then the run fails loudly.
        zone.write("syslog", b"".join(SYSLOG[1:]), fmt="log", dt=DAY, batch_id="sys-2")
        before = _retries(settings)
        gate.down()
        with pytest.raises(runner.PipelineError, match="failed at"):
            runner.materialize(settings, [DAY], STEPS)
        assert _retries(settings) - before >= 2, "each failing step is retried twice"
        gate.up()
        lake = Lake.from_settings(settings)
        assert (
            lake.list_files(lake.path(STAGING)) == [] if lake.exists(lake.path(STAGING)) else True
        ), "no staged object is left behind"
        assert len(lake.read_table("silver", "logs", dts=[DAY]).to_pylist()) == 1, (
            "silver is as the last good run left it"
        )
        runner.materialize(settings, [DAY], STEPS)
        rows = lake.read_table("silver", "logs", dts=[DAY]).to_pylist()
        assert sorted(r["message"] for r in rows) == sorted(
            f"upstream timed out {i}" for i in range(3)
        )
        gate.down()
