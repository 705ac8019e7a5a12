"""Notification channels against local receivers, routing, on-call, retries and rate limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opslake.alerting.dispatch import DeliveryLog, Dispatcher, NotifyConfig
from opslake.alerting.notify import render
from opslake.errors import ConfigError
from opslake.lake.storage import Lake
from tests.integration.services import free_port
from tests.receivers import RobotServer, WebhookServer, smtp_server

SECRET = "SEC-test-only-not-a-real-secret"
NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai: the day shift


def _incident(n: int = 1, severity: str = "critical", status: str = "firing") -> dict:
    return {
        "incident_id": f"INC-{n:04d}",
        "title": f"host-{n} CPU使用率过高（3 条告警）",
        "status": status,
        "muted": False,
        "severity": severity,
        "correlation": "topology",
        "started_at": NOW - timedelta(minutes=5),
        "ended_at": NOW if status == "resolved" else None,
        "alert_count": 3,
        "entity_count": 2,
        "entities": [f"host-{n}", "vm-1"],
        "root_cause": f"host-{n}",
        "businesses": ["税务服务"],
        "departments": ["税务局"],
        "root_causes": json.dumps([{"entity_id": f"host-{n}", "score": 0.91}]),
        "enrichment": json.dumps(
            {
                "recent_changes": [],
                "runbooks": {"NodeCpuHigh": "https://wiki.ops.gov.local/runbooks/NodeCpuHigh"},
            }
        ),
    }


def _config(tmp_path: Path, env: dict[str, str], rate: int = 20) -> NotifyConfig:
    (tmp_path / "notify.yaml").write_text(
        f"""
receivers:
  ding: {{channel: dingtalk, url_env: DING_URL, secret_env: DING_SECRET,
          rate_limit_per_minute: {rate}}}
  wecom: {{channel: wecom, url_env: WECOM_URL}}
  mail: {{channel: email, host_env: SMTP_HOST, port_env: SMTP_PORT, to: [ops@example.org]}}
  sms: {{channel: webhook, url_env: SMS_URL, secret_env: SMS_SECRET, on_call: true}}
  itsm: {{channel: webhook, kind: ticket, url_env: ITSM_URL, secret_env: SMS_SECRET}}
routes:
  - {{name: severe, match: {{severity: [critical]}}, receivers: [ding, wecom, mail, sms, itsm]}}
  - {{name: rest, receivers: [mail]}}
""",
        encoding="utf-8",
    )
    (tmp_path / "oncall.yaml").write_text(
        """
timezone: Asia/Shanghai
groups:
  云平台组:
    - {name: 张伟, mobile: "13800000201", from: "08:00", to: "20:00"}
    - {name: 刘洋, mobile: "13800000202", from: "20:00", to: "08:00"}
""",
        encoding="utf-8",
    )
    return NotifyConfig.load(tmp_path, env)


def _dispatcher(config: NotifyConfig, lake: Lake, now: datetime = NOW) -> Dispatcher:
    return Dispatcher(
        config,
        DeliveryLog(lake, [now.date().isoformat()]),
        lambda inc, tr, shifts: render(inc, tr, shifts, config.timezone),
        now=lambda: now,
        sleep=lambda _s: None,
    )


def test_every_channel_delivers_its_own_format_signed_once_per_transition(
    tmp_path: Path, lake: Lake
) -> None:
    with (
        RobotServer(SECRET) as robots,
        WebhookServer(SECRET) as hooks,
        smtp_server() as (smtp_port, mails),
    ):
        env = {
            "DING_URL": f"{robots.url}/robot/send?access_token=t0k",
            "DING_SECRET": SECRET,
            "WECOM_URL": f"{robots.url}/cgi-bin/webhook/send?key=k3y",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port),
            "SMS_URL": f"{hooks.url}/sms",
            "SMS_SECRET": SECRET,
            "ITSM_URL": f"{hooks.url}/t",
        }
        config = _config(tmp_path, env)
        sent = _dispatcher(config, lake).run([_incident()], {"INC-0001": "云平台组"})
        assert [d.status for d in sent] == ["sent"] * 5
        [ding] = robots.bodies("/robot/send")
        assert ding["msgtype"] == "markdown" and "host-1" in ding["markdown"]["text"]
        assert ding["at"] == {"atMobiles": [], "isAtAll": False}
        [wecom] = robots.bodies("/cgi-bin/webhook/send")
        assert wecom["markdown"]["content"].startswith("### [告警][紧急]")
        [mail] = mails
        assert mail["To"] == "ops@example.org" and "[告警][紧急]" in str(mail["Subject"])
        sms, ticket = hooks.received
        assert sms["mobiles"] == ["13800000201"] and "值班：张伟" in sms["text"]
        assert ticket["incident_id"] == "INC-0001" and ticket["transition"] == "firing"
        assert sent[-1].detail == "INC000002"  # the ticket id the ITSM answered
        assert robots.refused == hooks.refused == 0

        # A second pass over the same incident sends nothing; its resolution goes to the
        # receivers told it fired, except the ticket receiver.
        assert _dispatcher(config, lake).run([_incident()], {}) == []
        later = NOW + timedelta(minutes=20)
        resolved = _dispatcher(config, lake, later).run(
            [_incident(status="resolved")], {"INC-0001": "云平台组"}
        )
        assert sorted(d.receiver for d in resolved) == ["ding", "mail", "sms", "wecom"]
        assert robots.bodies("/robot/send")[-1]["markdown"]["title"].startswith("[已恢复]")


def test_a_wrong_signature_is_refused_and_retried_until_the_receiver_takes_it(
    tmp_path: Path, lake: Lake
) -> None:
    with RobotServer("the-right-secret") as robots:
        env = {"DING_URL": f"{robots.url}/robot/send?access_token=t", "DING_SECRET": SECRET}
        config = _config(tmp_path, env)
        [failed] = [
            d for d in _dispatcher(config, lake).run([_incident()], {}) if d.receiver == "ding"
        ]
        assert failed.status == "failed" and "errcode 310000" in failed.detail
        assert failed.attempts == 4 and robots.refused == 4
        assert failed.next_attempt_at == (NOW + timedelta(seconds=30)).isoformat()
        # Not due yet: nothing is tried; due after the receiver is fixed: delivered once.
        assert not [
            d
            for d in _dispatcher(config, lake, NOW + timedelta(seconds=10)).run([_incident()], {})
            if d.receiver == "ding"
        ]
        robots.secret = SECRET
        [ok] = [
            d
            for d in _dispatcher(config, lake, NOW + timedelta(seconds=31)).run([_incident()], {})
            if d.receiver == "ding"
        ]
        assert ok.status == "sent" and len(robots.bodies("/robot/send")) == 1


def test_a_receiver_that_is_down_gets_the_delivery_after_it_comes_back(
    tmp_path: Path, lake: Lake
) -> None:
    port = free_port()
    env = {"SMS_URL": f"http://127.0.0.1:{port}/sms", "SMS_SECRET": SECRET}
    config = _config(tmp_path, env)
    [down] = [d for d in _dispatcher(config, lake).run([_incident()], {}) if d.receiver == "sms"]
    assert down.status == "failed" and "ConnectError" in down.detail
    with WebhookServer(SECRET, port) as hooks:
        [back] = [
            d
            for d in _dispatcher(config, lake, NOW + timedelta(minutes=1)).run([_incident()], {})
            if d.receiver == "sms"
        ]
        assert back.status == "sent" and back.attempts == 5 and len(hooks.received) == 1


def test_rate_limit_defers_instead_of_dropping_and_unconfigured_receivers_are_logged(
    tmp_path: Path, lake: Lake
) -> None:
    with RobotServer(SECRET) as robots:
        env = {"DING_URL": f"{robots.url}/robot/send?access_token=t", "DING_SECRET": SECRET}
        config = _config(tmp_path, env, rate=2)
        records = _dispatcher(config, lake).run([_incident(n) for n in (1, 2, 3)], {})
        ding = [d.status for d in records if d.receiver == "ding"]
        assert ding == ["sent", "sent", "deferred"]
        assert {d.status for d in records if d.receiver == "mail"} == {"unconfigured"}
        assert "set SMTP_HOST" in next(d.detail for d in records if d.receiver == "mail")
        # A minute later the deferred one goes out; unconfigured ones are not retried.
        again = _dispatcher(config, lake, NOW + timedelta(seconds=61)).run(
            [_incident(n) for n in (1, 2, 3)], {}
        )
        assert [(d.receiver, d.status) for d in again] == [("ding", "sent")]
        assert len(robots.bodies("/robot/send")) == 3


def test_routes_pick_receivers_by_severity_and_roster_by_local_time(tmp_path: Path) -> None:
    config = _config(tmp_path, {})
    assert [r.name for r in config.receivers_for(_incident(severity="critical"))] == [
        "ding",
        "wecom",
        "mail",
        "sms",
        "itsm",
    ]
    assert [r.name for r in config.receivers_for(_incident(severity="warning"))] == ["mail"]
    night = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai
    assert [s.name for s in config.on_duty("云平台组", night)] == ["刘洋"]
    assert config.on_duty("无此组", night) == []
    (tmp_path / "notify.yaml").write_text(
        "receivers: {x: {channel: pager}}\nroutes:\n  - {receivers: [y]}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="channel must be one of") as err:
        NotifyConfig.load(tmp_path, {})
    assert "receivers ['y'] are not defined" in str(err.value)
