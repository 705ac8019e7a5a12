"""``opslake security …`` and ``opslake audit …``: users, keys, second factor, the audit chain.

The logic lives in :mod:`opslake.security`; these commands only parse and print. Passwords
are read from a prompt (never from the command line, where shells keep them).
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated

import typer

from opslake.settings import Settings

app = typer.Typer(help="Users, roles, API keys and TOTP for the data service.",
                  no_args_is_help=True)
audit_app = typer.Typer(help="The SM3-chained audit log of every API request.",
                        no_args_is_help=True)


def _store():
    from opslake.security.identity import IdentityStore

    return IdentityStore.sealed(Settings.from_env())


def _password() -> str:
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@app.command("bootstrap-admin")
def bootstrap_admin(name: Annotated[str, typer.Argument(help="The first administrator.")]
                    ) -> None:
    """Create the first administrator (refused once one exists); then enrol its TOTP."""
    _store().bootstrap_admin(name, _password())
    typer.echo(f"administrator {name} created; next: opslake security enrol-totp {name}")


def _random_password() -> str:
    # Meets the password policy (length, character classes) by construction.
    return secrets.token_urlsafe(32) + "-Aa1"


@app.command("add-user")
def add_user(
    name: str,
    role: Annotated[str, typer.Option(
        help="admin, ops_engineer, dept_viewer or ingest (machine senders: push only).")],
    department: Annotated[list[str] | None, typer.Option(
        help="A department whose rows the user sees (repeatable; dept_viewer).")] = None,
    business: Annotated[list[str] | None, typer.Option(
        help="A business whose rows the user sees (repeatable; dept_viewer).")] = None,
    random_password: Annotated[bool, typer.Option(
        "--random-password",
        help="Set a random password that is never shown: for machine users (role ingest) "
             "that only ever use API keys.")] = False,
) -> None:
    """Add a user with a role and, for department viewers, the rows they may see."""
    password = _random_password() if random_password else _password()
    _store().add_user(name, role, password, department or (), business or ())
    typer.echo(f"user {name} ({role}) added")


@app.command("users")
def users() -> None:
    """Users (never their passwords or TOTP secrets) as JSON lines."""
    for u in _store().users():
        typer.echo(json.dumps(u.__dict__, default=str, ensure_ascii=False))


@app.command("enrol-totp")
def enrol_totp(name: str) -> None:
    """Enrol a TOTP authenticator: prints the secret and the otpauth:// URI once."""
    secret, uri = _store().enrol_totp(name)
    typer.echo(f"secret {secret}\n{uri}")


@app.command("create-key")
def create_key(
    user: str,
    scope: Annotated[list[str] | None, typer.Option(
        help="Narrow the key to these scopes (repeatable; default: the role's).")] = None,
    quota: Annotated[int, typer.Option(help="Requests per UTC day.")] = 10_000,
) -> None:
    """Issue an API key for ``user``; the key is printed once and stored only hashed."""
    key_id, raw = _store().create_key(user, scope, quota)
    typer.echo(f"key id {key_id}\n{raw}")


@app.command("keys")
def keys(user: Annotated[str | None, typer.Option(help="Only this user's keys.")] = None
         ) -> None:
    """API keys (never their secrets) as JSON lines."""
    for k in _store().list_keys(user):
        typer.echo(json.dumps(k.__dict__, default=str, ensure_ascii=False))


@app.command("revoke-key")
def revoke_key(key_id: str) -> None:
    """Revoke an API key at once."""
    _store().revoke_key(key_id)
    typer.echo(f"key {key_id} revoked")


@audit_app.command("verify")
def verify() -> None:
    """Check every entry's SM3 hash, sequence and link; exit 6 on tampering (torn lines pass)."""
    from opslake.errors import SecurityError
    from opslake.security.audit import AuditLog

    result = AuditLog.from_settings(Settings.from_env()).verify()
    for problem in result.problems:
        torn = ": torn by a crash mid-append, no entry missing" if problem in result.torn else ""
        typer.echo(problem + torn, err=True)
    typer.echo(json.dumps({"ok": result.ok, "entries": result.entries,
                           "last_seq": result.last_seq, "head": result.head}))
    if not result.ok:
        raise SecurityError(f"the audit chain is broken "
                            f"({len(result.problems) - len(result.torn)} problem(s) "
                            "above); keep the files as evidence and restore from backup")
