"""State writes the disk refuses: audit appends are whole or nothing, stores raise StorageError.

A full disk mid-append (``os.write`` writing half, then ENOSPC) must leave the day file as it
was, so the chain verifies once space returns; a crash mid-append (a torn last line, which no
cleanup can prevent) is told apart from tampering; SQLite's "database or disk is full" in the
identity and subscriptions stores becomes a StorageError that says what to free.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest

from opslake.errors import StorageError
from opslake.security import audit
from opslake.security.audit import AuditLog
from opslake.security.identity import IdentityStore
from opslake.settings import Settings
from opslake.subscriptions import SubscriptionStore
from tests.unit.test_audit import DAY, Clock, _record


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit", clock=Clock(DAY))


def _fail_once(monkeypatch: pytest.MonkeyPatch, name: str, half: bool = False) -> None:
    """Make ``os.<name>`` fail with ENOSPC once (``half``: after writing half its data)."""
    real = getattr(os, name)

    def failing(fd: int, *args: object) -> object:
        monkeypatch.setattr(audit.os, name, real)
        if half:
            data = args[0]
            real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit.os, name, failing)


@pytest.mark.parametrize(("call", "half"), [("write", True), ("fsync", False)])
def test_an_append_the_disk_refuses_leaves_the_file_as_it_was(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch, call: str, half: bool
) -> None:
    _record(log, 3)
    day_file = log.directory / "2026-11-24.jsonl"
    before = day_file.read_bytes()
    _fail_once(monkeypatch, call, half)
    with pytest.raises(StorageError, match="nothing was half-written"):
        _record(log, 1)
    assert day_file.read_bytes() == before
    result = log.verify()
    assert (result.ok, result.entries, result.problems) == (True, 3, [])
    # Space is back: the chain goes on from seq 3.
    assert _record(log, 1)[0]["seq"] == 4
    assert log.verify().ok


def test_a_refused_first_append_of_a_day_leaves_no_file(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_once(monkeypatch, "write", half=True)
    with pytest.raises(StorageError):
        _record(log, 1)
    assert not (log.directory / "2026-11-24.jsonl").exists()
    assert _record(log, 1)[0]["seq"] == 1


def test_a_short_write_is_completed(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    monkeypatch.setattr(audit.os, "write", lambda fd, data: real(fd, data[:7]))
    _record(log, 2)
    assert log.verify().entries == 2


def test_a_line_torn_by_a_crash_is_told_apart_from_tampering(log: AuditLog) -> None:
    _record(log, 3)
    day_file = log.directory / "2026-11-24.jsonl"
    whole = day_file.read_bytes()
    # SIGKILL in the middle of writing seq 4: a part of its line, no newline.
    with open(day_file, "ab") as f:
        f.write(b'{"action":"GET /v1/catalog/metrics","at":"2026-11-24T09:30:00')
    result = log.verify()
    torn = "2026-11-24.jsonl line 4: not a complete audit entry (truncated or corrupted)"
    assert (result.ok, result.entries, result.problems, result.torn) == (True, 3, [torn], [torn])
    # The next append keeps the torn bytes as evidence and goes on with seq 4.
    assert _record(log, 1)[0]["seq"] == 4
    assert day_file.read_bytes().startswith(whole)
    after = log.verify()
    assert (after.ok, after.entries, after.torn, after.last_seq) == (True, 4, [torn], 4)


def test_an_unreadable_line_with_an_entry_missing_is_tampering(log: AuditLog) -> None:
    _record(log, 4)
    day_file = log.directory / "2026-11-24.jsonl"
    lines = day_file.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1][:30] + b"\n"  # seq 2 cut short: seq 3 then follows a gap
    day_file.write_bytes(b"".join(lines))
    result = log.verify()
    assert not result.ok and result.torn == []
    assert [p.split(": ", 1)[1][:25] for p in result.problems] == [
        "not a complete audit entr",
        "seq 2 missing before seq ",
    ]


def _refusing_connect(*_args: object, **_kwargs: object) -> sqlite3.Connection:
    raise sqlite3.OperationalError("database or disk is full")


def test_stores_turn_a_full_disk_into_storage_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = IdentityStore(settings)
    subscriptions = SubscriptionStore(settings.state_dir)
    monkeypatch.setattr(sqlite3, "connect", _refusing_connect)
    with pytest.raises(StorageError, match=r"identity store .* free space on its disk"):
        identity.authenticate_key("olk_0123456789abcdef_secret")
    with pytest.raises(StorageError, match=r"subscriptions store .* free space on its disk"):
        subscriptions.records("sub_0000000000000000")


def test_other_sqlite_errors_stay_what_they_are(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = IdentityStore(settings)

    def locked(*_args: object, **_kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(sqlite3, "connect", locked)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        identity.list_keys()
