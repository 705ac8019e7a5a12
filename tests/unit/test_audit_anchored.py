"""The keyed, checkpointed audit log: `opslake audit verify` catches a cut end, a rollback and
a rewrite without the key; the CLI's administrative commands are audited."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opslake.cli import app
from opslake.errors import SecurityError
from opslake.security.audit import CHECKPOINTS, AuditLog, entry_hash, entry_mac
from opslake.settings import Settings


def _write(settings: Settings, n: int, **overrides: object) -> AuditLog:
    """``n`` entries through the installation's log, then closed (a checkpoint)."""
    log = AuditLog.from_settings(settings)
    for i in range(n):
        log.append(
            who="alice",
            role="ops_engineer",
            action="GET /v1/metrics",
            status=200,
            rows=i,
            **overrides,
        )
    log.close()
    return log


def _verify() -> tuple[int, str, object]:
    result = CliRunner().invoke(app, ["audit", "verify"])
    return result.exit_code, result.output, result.exception


def _lines(log: AuditLog) -> tuple[Path, list[str]]:
    [day] = sorted(log.directory.glob("*.jsonl"))
    return day, day.read_text().splitlines()


def _checkpoints(settings: Settings) -> list[dict]:
    return [
        json.loads(p.read_text())
        for p in sorted((Path(settings.home) / CHECKPOINTS).glob("*.json"))
    ]


def test_an_intact_log_verifies(settings: Settings) -> None:
    _write(settings, 5)
    code, output, _ = _verify()
    assert code == 0, output
    summary = json.loads(output.strip().splitlines()[-1])
    assert summary["ok"] and summary["entries"] == 5 and summary["legacy"] == 0
    assert summary["checkpoint_seq"] == 5


def test_the_key_is_created_private_and_apart_from_the_log(settings: Settings) -> None:
    log = _write(settings, 1)
    key = settings.audit_key_path
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.parent != log.directory and len(bytes.fromhex(key.read_text().strip())) == 32
    entry = next(log.read())
    assert entry["mac"] == entry_mac(bytes.fromhex(key.read_text().strip()), entry)


def test_cutting_the_last_entry_fails(settings: Settings) -> None:
    log = _write(settings, 5)
    day, lines = _lines(log)
    day.write_text("\n".join(lines[:-1]) + "\n")
    code, output, exc = _verify()
    assert code != 0 and isinstance(exc, SecurityError)
    assert "the log was cut: it ends at seq 4 but checkpoint" in output
    assert "seq 5 missing at the end" in output


def _rewrite(log: AuditLog, forge: dict | None) -> None:
    """Rewrite every entry (who becomes mallory) with a correct SM3 chain but no audit key."""
    day, lines = _lines(log)
    prev, out = "0" * 64, []
    for line in lines:
        entry = json.loads(line)
        entry.update(who="mallory", prev=prev)
        entry.pop("mac")
        if forge is not None:
            entry["mac"] = entry_mac(forge["key"], entry)
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]
        out.append(json.dumps(entry))
    day.write_text("\n".join(out) + "\n")
    chain = AuditLog(log.directory).verify().problems  # the SM3 chain alone holds
    assert not [p for p in chain if "hash mismatch" in p or "broken link" in p]


@pytest.mark.parametrize("forge", [{"key": b"k" * 32}, None], ids=["other-key", "macs-dropped"])
def test_a_log_rewritten_without_the_key_fails(settings: Settings, forge: dict | None) -> None:
    log = _write(settings, 4)
    _rewrite(log, forge)
    code, output, exc = _verify()
    assert code != 0 and isinstance(exc, SecurityError)
    if forge is not None:
        assert (
            "line 1: HMAC mismatch for seq 1: the entry was not written with the audit key"
            in output
        )
    assert "the log's entry seq 4 is not the one checkpointed: the log was rewritten" in output


def test_a_rollback_to_an_older_checkpointed_state_fails(
    settings: Settings, tmp_path: Path
) -> None:
    log = _write(settings, 3)
    shutil.copytree(log.directory, tmp_path / "backup")
    _write(settings, 3)
    assert [c["seq"] for c in _checkpoints(settings)] == [1, 3, 6]
    shutil.rmtree(log.directory)
    shutil.copytree(tmp_path / "backup", log.directory)
    assert AuditLog(log.directory, key=log._key).verify().ok  # chain and MACs cannot tell
    code, output, exc = _verify()
    assert code != 0 and isinstance(exc, SecurityError)
    assert (
        "the log was rolled back (or cut) to an older checkpointed state: it ends at seq 3"
        in output
    )
    assert "recorded seq 6 later: seq 4..6 missing" in output


def test_a_forged_checkpoint_is_reported(settings: Settings) -> None:
    _write(settings, 2)
    forged = Path(settings.home) / CHECKPOINTS / "000000000009-forged.json"
    forged.write_text(json.dumps({"seq": 9, "head": "0" * 64, "at": "x", "mac": "0" * 64}))
    code, output, _ = _verify()
    assert code != 0 and "000000000009-forged.json: HMAC mismatch" in output


def test_deleted_checkpoints_are_reported(settings: Settings) -> None:
    _write(settings, 2)
    shutil.rmtree(Path(settings.home) / CHECKPOINTS)
    code, output, _ = _verify()
    assert code != 0 and "no checkpoint was found in the lake" in output


def test_a_missing_key_is_reported_not_replaced(settings: Settings) -> None:
    _write(settings, 2)
    settings.audit_key_path.unlink()
    code, output, _ = _verify()
    assert code != 0 and "no audit key was loaded" in output
    assert not settings.audit_key_path.exists()


def test_unkeyed_legacy_entries_verify_before_the_first_keyed_one(settings: Settings) -> None:
    legacy = AuditLog(settings.state_dir / "audit")  # as versions without keys wrote
    for _ in range(3):
        legacy.append(who="old", role="admin", action="GET /v1/x", status=200)
    _write(settings, 2)
    code, output, _ = _verify()
    assert code == 0, output
    summary = json.loads(output.strip().splitlines()[-1])
    assert (summary["entries"], summary["legacy"]) == (5, 3)
    # An unkeyed entry after keyed ones is not legacy: it was added without the key.
    legacy.append(who="mallory", role="admin", action="GET /v1/x", status=200)
    code, output, _ = _verify()
    assert code != 0 and "seq 6 has no HMAC although entries before it have" in output


def test_checkpoints_every_n_entries_and_to_syslog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    monkeypatch.setenv("OPSLAKE_HOME", str(tmp_path / "lake"))
    monkeypatch.setenv("OPSLAKE_AUDIT_CHECKPOINT_ENTRIES", "4")
    monkeypatch.setenv("OPSLAKE_AUDIT_SYSLOG", f"127.0.0.1:{receiver.getsockname()[1]}")
    settings = Settings.from_env()
    log = AuditLog.from_settings(settings)
    for _ in range(9):
        log.append(who="u", role="admin", action="GET /v1/x", status=200)
    assert [c["seq"] for c in _checkpoints(settings)] == [1, 4, 8]
    log.close()
    log.close()  # nothing new: no second checkpoint
    assert [c["seq"] for c in _checkpoints(settings)] == [1, 4, 8, 9]
    lines = [receiver.recv(4096).decode() for _ in range(4)]
    assert all("opslake-audit: checkpoint {" in line for line in lines)
    assert json.loads(lines[-1].partition("checkpoint ")[2].rstrip("\0"))["seq"] == 9


@pytest.mark.parametrize("address", ["/nonexistent/syslog.sock", "127.0.0.1:9"])
def test_an_unreachable_syslog_does_not_stop_the_log(
    tmp_path: Path, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSLAKE_HOME", str(tmp_path / "lake"))
    monkeypatch.setenv("OPSLAKE_AUDIT_SYSLOG", address)
    settings = Settings.from_env()
    _write(settings, 3)
    assert [c["seq"] for c in _checkpoints(settings)] == [1, 3]


def test_the_writer_thread_checkpoints_an_idle_tail(settings: Settings) -> None:
    log = AuditLog.from_settings(settings)
    quick = AuditLog(log.directory, key=log._key, anchors=log._anchors, checkpoint_seconds=0.3)

    async def burst() -> None:
        for _ in range(3):
            await quick.append_async(who="u", role="admin", action="GET /v1/x", status=200)

    asyncio.run(burst())
    deadline = time.monotonic() + 5
    while [c["seq"] for c in _checkpoints(settings)][-1:] != [3] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [c["seq"] for c in _checkpoints(settings)] == [1, 3]


def test_cli_administrative_commands_are_audited(settings: Settings) -> None:
    runner = CliRunner()
    added = runner.invoke(
        app, ["security", "add-user", "prom", "--role", "ingest", "--random-password"]
    )
    assert added.exit_code == 0, added.output
    created = runner.invoke(app, ["security", "create-key", "prom"])
    key_id = created.output.split()[2]
    refused = runner.invoke(app, ["security", "revoke-key", "nosuchkey"])
    assert refused.exit_code != 0
    entries = list(AuditLog.from_settings(settings).read())
    assert [(e["action"], e["params"]["target"], e["status"]) for e in entries] == [
        ("opslake security add-user", "prom", 0),
        ("opslake security create-key", "prom", 0),
        ("opslake security revoke-key", "nosuchkey", 5),
    ]
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert {(e["who"], e["role"]) for e in entries} == {(me, "cli")}
    assert entries[1]["params"]["key_id"] == key_id
    code, output, _ = _verify()
    assert code == 0, output


def test_a_checkpoint_kept_in_syslog_catches_a_rollback_the_lake_lost(
    settings: Settings, tmp_path: Path
) -> None:
    log = _write(settings, 2)
    shutil.copytree(log.directory, tmp_path / "backup")
    _write(settings, 2)
    latest = _checkpoints(settings)[-1]
    # Whoever rolled the log back also removed the newer checkpoints from the lake.
    for path in sorted((Path(settings.home) / CHECKPOINTS).glob("*.json"))[2:]:
        path.unlink()
    shutil.rmtree(log.directory)
    shutil.copytree(tmp_path / "backup", log.directory)
    assert _verify()[0] == 0
    given = f"{latest['seq']}:{latest['head']}"
    result = CliRunner().invoke(app, ["audit", "verify", "--checkpoint", given])
    assert result.exit_code != 0
    assert "rolled back (or cut) to an older checkpointed state: it ends at seq 2" in result.output
    assert f"checkpoint given as {given} recorded seq 4" in result.output
