"""Administrative CLI commands need an administrator's TOTP once one has enrolled (S6.6a)."""

from __future__ import annotations

import pyotp
from typer.testing import CliRunner

from opslake.cli import app
from opslake.errors import SecurityError
from opslake.security.audit import AuditLog
from opslake.settings import Settings

PASSWORD = "Correct-horse-42"


def test_admin_commands_need_a_vouching_admin_once_one_has_totp(settings: Settings) -> None:
    cli = CliRunner()
    assert (
        cli.invoke(
            app, ["security", "bootstrap-admin", "root"], input=f"{PASSWORD}\n{PASSWORD}\n"
        ).exit_code
        == 0
    )
    # A new install: nobody could vouch yet, so the first enrolment passes without a code.
    enrolled = cli.invoke(app, ["security", "enrol-totp", "root"])
    assert enrolled.exit_code == 0, enrolled.output
    secret = enrolled.output.split()[1]

    unvouched = cli.invoke(
        app, ["security", "add-user", "prom", "--role", "ingest", "--random-password"]
    )
    # (CliRunner runs the typer app, so an OpsLake error is the result's exception.)
    assert isinstance(unvouched.exception, SecurityError)
    assert "--admin" in str(unvouched.exception)
    wrong = cli.invoke(
        app,
        [
            "security",
            "add-user",
            "prom",
            "--role",
            "ingest",
            "--random-password",
            "--admin",
            "root",
            "--totp",
            "000000",
        ],
    )
    assert isinstance(wrong.exception, SecurityError)
    vouched = cli.invoke(
        app,
        [
            "security",
            "add-user",
            "prom",
            "--role",
            "ingest",
            "--random-password",
            "--admin",
            "root",
        ],
        env={"OPSLAKE_ADMIN_TOTP": pyotp.TOTP(secret).now()},
    )
    assert vouched.exit_code == 0, vouched.output
    # A user who is no administrator cannot vouch, whatever the code.
    other = cli.invoke(
        app,
        ["security", "create-key", "prom", "--admin", "prom", "--totp", pyotp.TOTP(secret).now()],
    )
    assert isinstance(other.exception, SecurityError)

    entries = list(AuditLog.from_settings(settings).read())
    add_users = [
        (e["status"], e["params"].get("admin"))
        for e in entries
        if e["action"] == "opslake security add-user"
    ]
    assert add_users[-1] == (0, "root")
    assert [status for status, _ in add_users[:-1]] == [
        unvouched.exception.exit_code,
        wrong.exception.exit_code,
    ]
    assert not any("000000" in str(e["params"]) for e in entries), "codes are never recorded"


def test_backup_and_landing_purge_are_vouched_and_audited(
    settings: Settings, tmp_path, monkeypatch
) -> None:
    cli = CliRunner()
    assert (
        cli.invoke(
            app, ["security", "bootstrap-admin", "root"], input=f"{PASSWORD}\n{PASSWORD}\n"
        ).exit_code
        == 0
    )
    secret = cli.invoke(app, ["security", "enrol-totp", "root"]).output.split()[1]
    monkeypatch.setenv("OPSLAKE_BACKUP_PASSPHRASE", "a long test passphrase")
    archive = tmp_path / "backup.tar.gz"

    refused = cli.invoke(app, ["backup", "create", "--output", str(archive)])
    assert isinstance(refused.exception, SecurityError) and not archive.exists()
    made = cli.invoke(
        app,
        [
            "backup",
            "create",
            "--output",
            str(archive),
            "--admin",
            "root",
            "--totp",
            pyotp.TOTP(secret).now(),
        ],
    )
    assert made.exit_code == 0, made.output
    assert archive.exists()

    monkeypatch.setenv("OPSLAKE_LANDING_RETENTION_DAYS", "30")
    assert cli.invoke(app, ["landing", "purge", "--dry-run"]).exit_code == 0
    unvouched = cli.invoke(app, ["landing", "purge"])
    assert isinstance(unvouched.exception, SecurityError) and "--admin" in str(unvouched.exception)

    backups = [
        (e["status"], e["params"].get("admin"))
        for e in AuditLog.from_settings(settings).read()
        if e["action"] == "opslake backup create"
    ]
    assert backups == [(refused.exception.exit_code, None), (0, "root")]
