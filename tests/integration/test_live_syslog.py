"""A line sent with `logger` through a real rsyslog reaches silver logs via `opslake serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.settings import Settings
from tests.integration.services import free_port, install_services, running, services_sh


def test_logger_via_rsyslog_reaches_silver_logs(tmp_path: Path) -> None:
    install_services()
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path / "lake")})
    api_port, syslog_port, rsyslog_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "OPSLAKE_HOME": settings.home,
        "OPSLAKE_SERVICES_DIR": str(tmp_path / "services"),
        "OPSLAKE_SYSLOG_PORT": str(rsyslog_port),
        "OPSLAKE_SYSLOG_FORWARD": f"127.0.0.1:{syslog_port}",
    }
    marker = f"opslake-{uuid.uuid4().hex[:12]}"
    zone = LandingZone.from_settings(settings)
    today = datetime.now(UTC).date().isoformat()
    serve = [
        sys.executable,
        "-m",
        "opslake",
        "serve",
        "--port",
        str(api_port),
        "--syslog-port",
        str(syslog_port),
    ]
    with running(serve, f"http://127.0.0.1:{api_port}/healthz", tmp_path / "serve.log", env=env):
        started = services_sh(env, "start", "rsyslog")
        assert started.returncode == 0, started.stdout + started.stderr
        try:
            sent = subprocess.run(
                [
                    "logger",
                    "--rfc5424",
                    "-d",
                    "-n",
                    "127.0.0.1",
                    "-P",
                    str(rsyslog_port),
                    "-t",
                    "opslake-test",
                    "-p",
                    "user.warning",
                    f"disk almost full {marker}",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert sent.returncode == 0, sent.stderr
            deadline = time.monotonic() + 30
            while not any(marker.encode() in zone.read(b) for b in zone.batches("syslog", today)):
                assert time.monotonic() < deadline, "the line never reached landing"
                time.sleep(0.5)
        finally:
            services_sh(env, "stop", "rsyslog")
    assert services_sh(env, "status", "rsyslog").returncode == 3, "rsyslog stopped by its PID"

    runner.materialize(settings, [today], ["landing/syslog", "bronze/syslog_lines", "silver/logs"])
    logs = Lake.from_settings(settings).read_table("silver", "logs", dts=[today]).to_pylist()
    [row] = [r for r in logs if marker in r["message"]]
    assert row["app"] == "opslake-test"
    assert row["severity"] == 4  # warning
    assert row["source"] == "syslog"
