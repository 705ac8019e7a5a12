"""Whom a handling notice addresses, and what it says to them (the sending itself is tested
against a real webhook receiver in tests/integration/test_portal.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from opslake.alerting.dispatch import NotifyConfig, Shift
from opslake.alerting.handling import HandlingEvent
from opslake.alerting.notices import Addressee, addressees, message

INC = "INC-0123456789ab"
T0 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai


def _event(seq: int, action: str, actor: str, **fields: str) -> HandlingEvent:
    return HandlingEvent(
        f"{INC}.{seq:06d}", INC, seq, action, actor, "test", T0 + timedelta(minutes=seq), **fields
    )


HISTORY = [
    _event(1, "acknowledge", "olga"),
    _event(2, "comment", "dora", comment="seen from finance"),
    _event(3, "assign", "olga", assignee="云平台组", assignee_kind="group"),
]


def test_an_assignment_addresses_the_assignee_only() -> None:
    assign = _event(4, "assign", "olga", assignee="ivan", assignee_kind="user")
    assert addressees(assign, HISTORY) == [Addressee("ivan", "user")]
    # Assigning to oneself tells no one.
    assert addressees(_event(4, "assign", "olga", assignee="olga", assignee_kind="user"), []) == []


def test_resolve_and_reopen_address_the_followers_but_not_the_actor() -> None:
    resolve = _event(4, "resolve", "olga")
    assert addressees(resolve, HISTORY) == [
        Addressee("dora", "user"),
        Addressee("云平台组", "group"),
    ]
    reopen = _event(5, "reopen", "dora")
    assert addressees(reopen, [*HISTORY, resolve]) == [
        Addressee("olga", "user"),
        Addressee("云平台组", "group"),
    ]
    assert addressees(_event(4, "comment", "olga", comment="x"), HISTORY) == []


def test_the_notice_reaches_contacts_and_whoever_is_on_duty() -> None:
    config = NotifyConfig(
        roster={
            "云平台组": [
                Shift(
                    "张伟",
                    time(8),
                    time(20),
                    "13800000201",
                    "zw@x",
                ),
                Shift(
                    "刘洋",
                    time(20),
                    time(8),
                    "13800000202",
                    "ly@x",
                ),
            ]
        },
        contacts={"dora": ("13900000001", "dora@x")},
    )
    told = [Addressee("dora", "user"), Addressee("云平台组", "group")]
    note = message(
        _event(4, "resolve", "olga", comment="fixed"),
        {"title": "DB down", "severity": "major"},
        told,
        config,
    )
    assert note.subject == "[已解决][重要] DB down"
    assert note.mobiles == ("13900000001", "13800000201")  # 10:04 local: the day shift
    assert note.emails == ("dora@x", "zw@x")
    assert note.document["to"] == [
        {"name": "dora", "kind": "user"},
        {"name": "云平台组", "kind": "group"},
    ]
    assert "备注：fixed" in note.lines and "操作人：olga" in note.lines
