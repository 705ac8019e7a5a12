"""A real Alertmanager fires into ``opslake serve``; the real Dagster daemon's alerts_live_sensor
converges it into an incident and notifies a local SMTP server and DingTalk / WeCom robot
stand-ins (signature checked) within a minute; the resolved alert closes the incident.

Prometheus evaluates OpsLakeTestAlert (infra/services.sh) every second here (5 s by default:
the minute is what is asserted, not Prometheus' interval); `fire-alert` and `resolve-alert`
switch it. Routes come from a notify.yaml written here that sends every
severity to the three receivers (the repository's routes send warnings to WeCom and e-mail
only); convergence rules and runbooks are the repository's.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opslake.alerting.live import LIVE_INCIDENTS
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import ui
from opslake.settings import DEFAULT_ALERTING_DIR, Settings
from tests.integration.services import (
    free_port,
    install_services,
    pid_running,
    running,
    services_sh,
    wait_http,
)
from tests.keys import ingest_key_file
from tests.receivers import RobotServer, smtp_server

NAMES = ("node_exporter", "prometheus", "alertmanager")
SECRET = "SEC-integration-test-only"
TITLE = "OpsLake test alert (fired on demand)"


def _wait(what: str, check: Callable[[], object], limit: float) -> tuple[object, float]:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        found = check()
        if found:
            return found, time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"{what}: nothing within {limit:.0f} s")


def _landed_with(zone: LandingZone, status: str, after: set[str]) -> Callable[[], object]:
    def check() -> object:
        day = datetime.now(UTC).date().isoformat()
        for b in zone.batches("alertmanager", day):
            if b.batch_id not in after and f'"status":"{status}"'.encode() in zone.read(b):
                return b
        return None

    return check


def test_alertmanager_alert_is_notified_signed_and_closed_within_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_services()
    alerting = tmp_path / "alerting"
    shutil.copytree(DEFAULT_ALERTING_DIR, alerting)
    (alerting / "notify.yaml").write_text(
        """
receivers:
  ding: {channel: dingtalk, url_env: OPSLAKE_DINGTALK_URL, secret_env: OPSLAKE_DINGTALK_SECRET}
  wecom: {channel: wecom, url_env: OPSLAKE_WECOM_URL}
  mail: {channel: email, host_env: OPSLAKE_SMTP_HOST, port_env: OPSLAKE_SMTP_PORT,
         from: opslake@ops.gov.local, to: [ops-centre@ops.gov.local]}
routes:
  - {name: everything, receivers: [ding, wecom, mail]}
""",
        encoding="utf-8",
    )
    with RobotServer(SECRET) as robots, smtp_server() as (smtp_port, mails):
        env = {
            "OPSLAKE_HOME": str(tmp_path / "lake"),
            "OPSLAKE_ALERTING_DIR": str(alerting),
            "OPSLAKE_DINGTALK_URL": f"{robots.url}/robot/send?access_token=t0k",
            "OPSLAKE_DINGTALK_SECRET": SECRET,
            "OPSLAKE_WECOM_URL": f"{robots.url}/cgi-bin/webhook/send?key=k3y",
            "OPSLAKE_SMTP_HOST": "127.0.0.1",
            "OPSLAKE_SMTP_PORT": str(smtp_port),
        }
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("OPSLAKE_STATE_DIR", raising=False)
        settings = Settings.from_env()
        lake = Lake.from_settings(settings)
        zone = LandingZone(lake)
        api = f"http://127.0.0.1:{free_port()}"
        ports = {n: free_port() for n in NAMES}
        run_dir = tmp_path / "services"
        svc_env = {
            **os.environ,
            "OPSLAKE_SERVICES_DIR": str(run_dir),
            "OPSLAKE_NODE_EXPORTER_PORT": str(ports["node_exporter"]),
            "OPSLAKE_PROMETHEUS_PORT": str(ports["prometheus"]),
            "OPSLAKE_ALERTMANAGER_PORT": str(ports["alertmanager"]),
            "OPSLAKE_PROMETHEUS_INTERVAL_S": "1",
            "OPSLAKE_ALERT_WEBHOOK_URL": f"{api}/v1/ingest/alertmanager",
            "OPSLAKE_INGEST_KEY_FILE": str(ingest_key_file(settings, tmp_path / "ingest.key")),
        }
        serve = [sys.executable, "-m", "opslake", "serve", "--port", api.rsplit(":", 1)[1]]
        procs = ui.start(settings, "127.0.0.1", free_port(), tmp_path / "logs")
        try:
            with running(serve, f"{api}/healthz", tmp_path / "serve.log", env=dict(os.environ)):
                started = services_sh(svc_env, "start", *NAMES)
                assert started.returncode == 0, started.stdout + started.stderr
                pids = [int((run_dir / f"{n}.pid").read_text()) for n in NAMES]
                try:
                    wait_http(f"http://127.0.0.1:{ports['alertmanager']}/-/ready", timeout=30)
                    _cycle(svc_env, zone, lake, robots, mails)
                finally:
                    stopped = services_sh(svc_env, "stop", *NAMES)
                assert stopped.returncode == 0 and not any(pid_running(p) for p in pids)
        finally:
            ui.stop(procs)
        assert not any(pid_running(p.pid) for p in procs)
        assert robots.refused == 0  # every DingTalk request carried a valid signature


def _incident(lake: Lake) -> dict | None:
    day = datetime.now(UTC).date().isoformat()
    if day not in lake.partitions("gold", LIVE_INCIDENTS):
        return None
    rows = [
        r
        for r in lake.read_table("gold", LIVE_INCIDENTS, dts=[day]).to_pylist()
        if TITLE in r["title"]
    ]
    return rows[0] if rows else None


def _notified(robots: RobotServer, mails: list, subject: str, n: int) -> Callable[[], bool]:
    def check() -> bool:
        ding = [b for b in robots.bodies("/robot/send") if subject in b["markdown"]["title"]]
        wecom = [
            b for b in robots.bodies("/cgi-bin/webhook/send") if subject in b["markdown"]["content"]
        ]
        mail = [m for m in mails if subject in str(m["Subject"])]
        return len(ding) >= n and len(wecom) >= n and len(mail) >= n

    return check


def _cycle(
    env: dict[str, str], zone: LandingZone, lake: Lake, robots: RobotServer, mails: list
) -> None:
    seen = {b.batch_id for b in zone.batches("alertmanager", datetime.now(UTC).date().isoformat())}
    assert services_sh(env, "fire-alert").returncode == 0
    batch, _ = _wait("firing webhook landed", _landed_with(zone, "firing", seen), 60)
    # The first pass waits for the daemon to load the code location: untimed.
    _, first = _wait("firing notified", _notified(robots, mails, "[告警]", 1), 180)
    incident = _incident(lake)
    assert incident and incident["status"] == "firing" and incident["entities"] == ["node-local"]
    [ding] = robots.bodies("/robot/send")
    assert ding["msgtype"] == "markdown" and TITLE in ding["markdown"]["text"]
    [mail] = mails
    assert mail["To"] == "ops-centre@ops.gov.local" and TITLE in str(mail["Subject"])
    assert "告警：1 条，涉及 1 个配置项" in mail.get_body(("plain",)).get_content()

    seen |= {batch.batch_id}  # type: ignore[attr-defined]
    assert services_sh(env, "resolve-alert").returncode == 0
    resolved, _ = _wait("resolved webhook landed", _landed_with(zone, "resolved", seen), 90)
    landed = resolved.received  # type: ignore[attr-defined]
    _wait("resolved notified", _notified(robots, mails, "[已恢复]", 1), 60)
    closed = _incident(lake)
    assert closed and closed["status"] == "resolved" and closed["ended_at"] is not None
    resolve_latency = (datetime.now(UTC) - landed).total_seconds()

    seen |= {resolved.batch_id}  # type: ignore[attr-defined]
    assert services_sh(env, "fire-alert").returncode == 0
    refired, _ = _wait("second firing landed", _landed_with(zone, "firing", seen), 60)
    landed = refired.received  # type: ignore[attr-defined]
    _wait("second firing notified", _notified(robots, mails, "[告警]", 2), 60)
    fire_latency = (datetime.now(UTC) - landed).total_seconds()
    reopened = _incident(lake)
    assert reopened and reopened["status"] == "firing" and reopened["reopened"] == 1
    print(
        f"\nfirst firing notified {first:.1f} s after landing (daemon start-up included); "
        f"resolved → notified {resolve_latency:.1f} s; fired again → notified "
        f"{fire_latency:.1f} s"
    )
    assert resolve_latency < 60 and fire_latency < 60
