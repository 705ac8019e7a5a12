"""Incident handling: the state fold, the transitions, the append-only log and MTTA/MTTR."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg2
import pyarrow as pa
import pytest

from opslake.alerting import handling
from opslake.alerting.handling import Assignees, HandlingLog
from opslake.errors import HandlingError
from opslake.kpi.service_levels import HANDLED_SCHEMA, service_levels
from opslake.lake.landing import LandingZone
from opslake.lake.schemas import TICKETS
from opslake.settings import Settings

INC = "INC-0123456789ab"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TEAM = Assignees(frozenset({"alice", "bob"}), frozenset({"云平台组"}))


def _event(seq: int, action: str, minutes: int, **fields: str) -> handling.HandlingEvent:
    return handling.HandlingEvent(
        f"{INC}.{seq:06d}",
        INC,
        seq,
        action,
        fields.pop("actor", "alice"),
        "api:session",
        T0 + timedelta(minutes=minutes),
        **fields,
    )


def test_fold_keeps_first_ack_and_the_standing_resolution() -> None:
    events = [
        _event(1, "acknowledge", 5),
        _event(2, "assign", 6, assignee="云平台组", assignee_kind="group"),
        _event(3, "comment", 7, comment="looking"),
        _event(4, "severity", 8, severity="critical"),
        _event(5, "resolve", 30, actor="bob"),
        _event(6, "reopen", 40),
        _event(7, "acknowledge", 41, actor="bob"),
        _event(8, "resolve", 90),
    ]
    state = handling.fold(reversed(events))[INC]  # order comes from seq, not from arrival
    assert state.handling_status == "resolved"
    assert (state.acknowledged_at, state.acknowledged_by) == (T0 + timedelta(minutes=5), "alice")
    assert (state.resolved_at, state.resolved_by) == (T0 + timedelta(minutes=90), "alice")
    assert (state.assignee, state.assignee_kind) == ("云平台组", "group")
    assert (state.severity_override, state.reopens, state.comments, state.actions) == (
        "critical",
        1,
        1,
        8,
    )
    reopened = handling.fold(events[:6])[INC]
    assert (reopened.handling_status, reopened.resolved_at) == ("open", None)


@pytest.mark.parametrize(
    ("status", "action", "fields", "says"),
    [
        ("resolved", "resolve", {}, "already resolved"),
        ("open", "reopen", {}, "only a resolved incident"),
        ("acknowledged", "acknowledge", {}, "only an open incident"),
        ("resolved", "acknowledge", {}, "reopen it first"),
        ("resolved", "assign", {"assignee": "bob", "assignee_kind": "user"}, "reopen it first"),
        ("open", "assign", {"assignee": "mallory", "assignee_kind": "user"}, "alice, bob"),
        ("open", "assign", {"assignee": "夜班", "assignee_kind": "group"}, "云平台组"),
        ("open", "severity", {"severity": "urgent"}, "critical, major"),
        ("open", "comment", {"comment": "  "}, "needs text"),
        ("open", "escalate", {}, "not known"),
        ("open", "comment", {"comment": "bad\x00"}, "control characters"),
    ],
)
def test_transitions_refused_with_the_reason(
    status: str, action: str, fields: dict, says: str
) -> None:
    with pytest.raises(HandlingError, match=says):
        handling.check(
            handling.HandlingState(INC, handling_status=status), action, assignees=TEAM, **fields
        )


def test_allowed_transitions() -> None:
    for status, action, fields in [
        ("open", "acknowledge", {}),
        ("resolved", "reopen", {}),
        ("acknowledged", "resolve", {}),
        ("open", "resolve", {}),
        ("resolved", "comment", {"comment": "post-mortem"}),
        ("open", "assign", {"assignee": "bob", "assignee_kind": "user"}),
    ]:
        handling.check(
            handling.HandlingState(INC, handling_status=status), action, assignees=TEAM, **fields
        )


@pytest.fixture
def own(tmp_path: Path, database_url: str | None) -> Settings:
    """A lake under ``tmp_path``, the handling store on each backend (conftest's
    database_url)."""
    home = Settings.from_env({"OPSLAKE_HOME": str(tmp_path / "lake")})
    return replace(home, state_dir=tmp_path / "state", database_url=database_url)


def test_log_lands_append_only_and_reads_at_once(own: Settings) -> None:
    log = HandlingLog.from_settings(own)
    event, state = log.record(INC, "acknowledge", "alice", via="cli:root@host", at=T0)
    assert (event.event_id, state.handling_status) == (f"{INC}.000001", "acknowledged")
    log.record(INC, "comment", "bob", via="api:session", comment="告警已确认", at=T0)
    with pytest.raises(HandlingError, match="only an open incident"):
        log.record(INC, "acknowledge", "bob", via="api:session")
    history = log.events([INC])
    assert [(e.seq, e.action, e.actor) for e in history] == [
        (1, "acknowledge", "alice"),
        (2, "comment", "bob"),
    ]
    zone = LandingZone.from_settings(own)
    batches = zone.batches(handling.SOURCE, "2026-03-02")
    assert [b.batch_id for b in batches] == [f"{INC}.000001", f"{INC}.000002"]
    parsed = handling.parse(zone.read(batches[1]), batches[1])
    assert parsed.rejects == [] and parsed.table.column("comment").to_pylist() == ["告警已确认"]
    assert handling.parse(b"{not json", batches[0]).rejects[0].reason.startswith("not a")
    assert log.states()[INC].comments == 1
    # The steps taken are kept, append-only, in the store.
    with log.steps.connect() as conn:
        taken = conn.execute("SELECT event_id, actor FROM steps ORDER BY seq").fetchall()
        assert [tuple(r) for r in taken] == [(f"{INC}.000001", "alice"), (f"{INC}.000002", "bob")]
        with pytest.raises((sqlite3.DatabaseError, psycopg2.Error), match="append-only"):
            conn.execute("DELETE FROM steps")
    # A writer that read before another landed its step is refused, never overwrites it: by
    # the store it shares with the first (any host, on PostgreSQL), else by the lake.
    other = "INC-00000000000f"
    log.record(other, "acknowledge", "alice", via="api:session")
    for stale in (
        HandlingLog.from_settings(own),
        HandlingLog.from_settings(
            replace(own, state_dir=own.state_dir / "elsewhere", database_url=None)
        ),
    ):
        stale.events = lambda _ids=None: []  # type: ignore[method-assign]
        with pytest.raises(HandlingError, match="at the same moment"):
            stale.record(other, "acknowledge", "carol", via="api:session")
    assert log.state(other).acknowledged_by == "alice"
    assert [e.seq for e in log.events([other])] == [1]


def _comment(settings: Settings, times: int) -> None:
    log = HandlingLog.from_settings(settings)
    for i in range(times):
        log.record(INC, "comment", "alice", via="test", comment=f"{os.getpid()} {i}")


def test_writers_in_several_processes_take_each_step_once(own: Settings) -> None:
    """Three processes comment at once: on SQLite sharing one state directory (one host), on
    PostgreSQL each with its own (three hosts sharing the database)."""
    hosts = [
        replace(own, state_dir=own.state_dir / f"host{i}") if own.database_url else own
        for i in range(3)
    ]
    workers = [
        multiprocessing.get_context("fork").Process(target=_comment, args=(host, 4))
        for host in hosts
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    events = HandlingLog.from_settings(own).events([INC])
    assert sorted(e.seq for e in events) == list(range(1, 13))
    assert len({e.comment for e in events}) == 12


def _ticket(
    ticket_id: str, fingerprint: str, opened: datetime, acked: datetime, resolved: datetime
) -> dict:
    return {
        "ticket_id": ticket_id,
        "type": "incident",
        "status": "closed",
        "priority": "P2",
        "business": "社保",
        "opened_at": opened,
        "acknowledged_at": acked,
        "resolved_at": resolved,
        "sla_target_minutes": 480,
        "alert_fingerprint": fingerprint,
    }


def test_mtta_mttr_use_handling_events_when_present() -> None:
    tickets = pa.Table.from_pylist(
        [
            _ticket(
                "T1",
                "fp1",
                T0 + timedelta(minutes=10),
                T0 + timedelta(minutes=40),
                T0 + timedelta(minutes=130),
            ),
            # The same alert fired before the incident began: that ticket is not the incident's.
            _ticket("T2", "fp1", T0, T0 + timedelta(minutes=20), T0 + timedelta(minutes=60)),
        ],
        schema=TICKETS,
    )
    day = date(2026, 3, 2)
    before = service_levels(tickets, day).to_pylist()[0]
    assert (before["mtta_minutes"], before["mttr_minutes"]) == (25.0, 90.0)
    handled = pa.Table.from_pylist(
        [
            {
                "incident_id": INC,
                "fingerprints": ["fp1"],
                "business": "other",
                "started_at": T0 + timedelta(minutes=2),
                "acknowledged_at": T0 + timedelta(minutes=7),
                "resolved_at": None,
            }
        ],
        schema=HANDLED_SCHEMA,
    )
    after = service_levels(tickets, day, handled).to_pylist()
    province = after[0]
    # INC: acknowledged 5 min after its start (its event); resolved by the ticket's proxy
    # (130 min after 08:00 = 128 min after the start). T2 unchanged.
    assert province["incidents_opened"] == 2
    assert province["mtta_minutes"] == pytest.approx((5 + 20) / 2)
    assert province["mttr_minutes"] == pytest.approx((128 + 60) / 2)
    assert [r["business"] for r in after] == ["(all)", "社保"]


def test_a_landed_object_that_is_no_event_is_left_out_and_quarantined(tmp_path, caplog) -> None:
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path)})
    zone = LandingZone.from_settings(settings)
    bad = zone.write(
        handling.SOURCE,
        b'{"action": "acknowledge"}',
        fmt="json",
        batch_id=f"{INC}.000001",
        received_at=T0,
    )
    log = HandlingLog.from_settings(settings, zone)
    assert log.events() == [] and "not readable" in caplog.text
    assert "not a handling event" in handling.parse(zone.read(bad), bad).rejects[0].reason
