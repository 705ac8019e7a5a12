"""``opslake security …`` and ``opslake audit …``: users, keys, second factor, the audit chain.

The logic lives in :mod:`opslake.security`; these commands only parse and print. Passwords
are read from a prompt (never from the command line, where shells keep them). Every command
that changes users, keys or second factors is recorded in the audit log like an API request:
``who`` the operating-system user that ran it, ``role`` ``cli``, ``action`` the command,
``params`` its target and options, ``status`` its exit code (0 when it succeeded).
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated

import typer

from opslake.cli._admin import Admin, AdminCode, vouched
from opslake.settings import Settings

app = typer.Typer(
    help="Users, roles, API keys and TOTP for the data service.", no_args_is_help=True
)
audit_app = typer.Typer(
    help="The keyed, SM3-chained audit log of API requests and administrative commands.",
    no_args_is_help=True,
)


def _store():
    from opslake.security.identity import IdentityStore

    return IdentityStore.sealed(Settings.from_env())


def _password() -> str:
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@app.command("bootstrap-admin")
def bootstrap_admin(name: Annotated[str, typer.Argument(help="The first administrator.")]) -> None:
    """Create the first administrator (refused once one exists); then enrol its TOTP."""
    password = _password()
    with vouched("opslake security bootstrap-admin", name, None, None):
        _store().bootstrap_admin(name, password)
    typer.echo(f"administrator {name} created; next: opslake security enrol-totp {name}")


def _random_password() -> str:
    # Meets the password policy (length, character classes) by construction.
    return secrets.token_urlsafe(32) + "-Aa1"


@app.command("add-user")
def add_user(
    name: str,
    role: Annotated[
        str,
        typer.Option(
            help="admin, ops_engineer, data_engineer, leadership, dept_viewer or ingest "
            "(machine senders: push only)."
        ),
    ],
    department: Annotated[
        list[str] | None,
        typer.Option(help="A department whose rows the user sees (repeatable; dept_viewer)."),
    ] = None,
    business: Annotated[
        list[str] | None,
        typer.Option(help="A business whose rows the user sees (repeatable; dept_viewer)."),
    ] = None,
    random_password: Annotated[
        bool,
        typer.Option(
            "--random-password",
            help="Set a random password that is never shown: for machine users (role ingest) "
            "that only ever use API keys.",
        ),
    ] = False,
    admin: Admin = None,
    totp: AdminCode = None,
) -> None:
    """Add a user with a role and, for department viewers, the rows they may see."""
    password = _random_password() if random_password else _password()
    with vouched(
        "opslake security add-user",
        name,
        admin,
        totp,
        role=role,
        departments=department or [],
        businesses=business or [],
    ):
        _store().add_user(name, role, password, department or (), business or ())
    typer.echo(f"user {name} ({role}) added")


@app.command("users")
def users() -> None:
    """Users (never their passwords or TOTP secrets) as JSON lines."""
    for u in _store().users():
        typer.echo(json.dumps(u.__dict__, default=str, ensure_ascii=False))


@app.command("enrol-totp")
def enrol_totp(name: str, admin: Admin = None, totp: AdminCode = None) -> None:
    """Enrol a TOTP authenticator: prints the secret and the otpauth:// URI once."""
    with vouched("opslake security enrol-totp", name, admin, totp):
        secret, uri = _store().enrol_totp(name)
    typer.echo(f"secret {secret}\n{uri}")


@app.command("create-key")
def create_key(
    user: str,
    scope: Annotated[
        list[str] | None,
        typer.Option(help="Narrow the key to these scopes (repeatable; default: the role's)."),
    ] = None,
    quota: Annotated[int, typer.Option(help="Requests per UTC day.")] = 10_000,
    admin: Admin = None,
    totp: AdminCode = None,
) -> None:
    """Issue an API key for ``user``; the key is printed once and stored only hashed."""
    with vouched(
        "opslake security create-key", user, admin, totp, scopes=scope or "role", quota=quota
    ) as recorded:
        key_id, raw = _store().create_key(user, scope, quota)
        recorded["key_id"] = key_id
    typer.echo(f"key id {key_id}\n{raw}")


@app.command("keys")
def keys(user: Annotated[str | None, typer.Option(help="Only this user's keys.")] = None) -> None:
    """API keys (never their secrets) as JSON lines."""
    for k in _store().list_keys(user):
        typer.echo(json.dumps(k.__dict__, default=str, ensure_ascii=False))


@app.command("revoke-key")
def revoke_key(key_id: str, admin: Admin = None, totp: AdminCode = None) -> None:
    """Revoke an API key at once."""
    with vouched("opslake security revoke-key", key_id, admin, totp):
        _store().revoke_key(key_id)
    typer.echo(f"key {key_id} revoked")


@audit_app.command("verify")
def verify(
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SEQ:HEAD",
            help="A checkpoint kept elsewhere (a syslog line's seq and head) "
            "to hold the log against too (repeatable).",
        ),
    ] = None,
) -> None:
    """Check every entry's hash, sequence, link and HMAC and the signed checkpoints of the head.

    Exit 6 on tampering: an edit, a deletion, a cut end, a rollback, a rewrite without the
    key. Lines torn by a crash pass; unkeyed entries pass only before the first keyed one.
    """
    from opslake.errors import InputError, SecurityError
    from opslake.security.audit import AuditLog

    known = []
    for given in checkpoint or []:
        seq, _, head = given.partition(":")
        if not (seq.isdigit() and len(head) == 64):
            raise InputError(
                f"--checkpoint {given!r} is not SEQ:HEAD; give the seq and the "
                "64-hex-digit head of a checkpoint line, e.g. 1200:9f3c…"
            )
        known.append((int(seq), head.lower()))
    result = AuditLog.from_settings(Settings.from_env(), create_key=False).verify(known)
    for problem in result.problems:
        torn = ": torn by a crash mid-append, no entry missing" if problem in result.torn else ""
        typer.echo(problem + torn, err=True)
    typer.echo(
        json.dumps(
            {
                "ok": result.ok,
                "entries": result.entries,
                "last_seq": result.last_seq,
                "head": result.head,
                "legacy": result.legacy,
                "checkpoints": result.checkpoints,
                "checkpoint_seq": result.checkpoint_seq,
            }
        )
    )
    if not result.ok:
        raise SecurityError(
            f"the audit log failed its checks "
            f"({len(result.problems) - len(result.torn)} problem(s) "
            "above); keep the files as evidence and restore from backup"
        )
