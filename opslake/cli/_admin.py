"""Administrative commands: recorded in the audit log like API requests (``who`` the
operating-system user, ``role`` ``cli``, ``action`` the command, ``params`` its target and
options, ``status`` its exit code), and once any administrator has an authenticator, vouched
for by one with a TOTP code (``--admin NAME --totp CODE``, or a prompt)."""

from __future__ import annotations

import os
import pwd
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from opslake.errors import OpsLakeError
from opslake.settings import Settings

#: The administrator vouching for an administrative command, and that admin's TOTP code.
Admin = Annotated[
    str | None,
    typer.Option(
        "--admin",
        envvar="OPSLAKE_ADMIN",
        show_envvar=False,
        help="The administrator vouching for this command (needed once any administrator has a "
        "TOTP authenticator; or OPSLAKE_ADMIN).",
    ),
]
AdminCode = Annotated[
    str | None,
    typer.Option(
        "--totp",
        envvar="OPSLAKE_ADMIN_TOTP",
        show_envvar=False,
        help="That administrator's current TOTP code (prompted for when not given; or "
        "OPSLAKE_ADMIN_TOTP).",
    ),
]


def second_factor(admin: str | None, code: str | None) -> str | None:
    """The administrator who vouched for the command with a TOTP code; None on a new install.

    Until some administrator has enrolled an authenticator nobody could vouch (the first
    ``enrol-totp`` must pass); from then on each administrative command needs one.
    """
    from opslake.errors import AuthError
    from opslake.security.identity import IdentityStore
    from opslake.security.roles import Principal

    store = IdentityStore.sealed(Settings.from_env())
    users = store.users()
    admins = [u.name for u in users if u.role == "admin" and u.totp_enrolled]
    if not admins:
        return None
    if not admin:
        raise AuthError(
            "administrative commands need an administrator to vouch with a TOTP "
            f"code: add --admin NAME (one of {', '.join(admins)})"
        )
    code = code or typer.prompt(f"TOTP code of {admin}", hide_input=True)
    role = next((u.role for u in users if u.name == admin), "")
    store.require_second_factor(Principal(user=admin, role=role, scopes=frozenset()), code)
    return admin


@contextmanager
def vouched(
    action: str, target: str, admin: str | None, code: str | None, **params: object
) -> Iterator[dict[str, object]]:
    """Check the vouching admin's second factor, then record the command ``action`` on
    ``target`` in the audit log once it is done.

    The body may add to the entry's ``params`` through the dict it is given (the id of a
    key it created). A command failing with an OpsLake error (a refused second factor too)
    is recorded with its exit code; the TOTP code never is.
    """
    with audited(action, target=target, **params) as recorded:
        recorded["admin"] = second_factor(admin, code)
        yield recorded


@contextmanager
def audited(action: str, **params: object) -> Iterator[dict[str, object]]:
    """Record the CLI command ``action`` with ``params`` in the audit log once it is done:
    ``who`` the operating-system user, ``role`` ``cli``, ``status`` its exit code."""
    recorded: dict[str, object] = dict(params)
    try:
        yield recorded
    except OpsLakeError as exc:
        _record(action, exc.exit_code, recorded)
        raise
    _record(action, 0, recorded)


def _record(action: str, status: int, params: dict[str, object]) -> None:
    from opslake.security.audit import AuditLog

    audit = AuditLog.from_settings(Settings.from_env())
    audit.append(
        who=operator(),
        role="cli",
        action=action,
        status=status,
        params=params,
        client=socket.gethostname(),
    )
    audit.close()


def operator() -> str:
    """Who runs this command: the effective uid's name ($USER or $LOGNAME could say anything)."""
    return pwd.getpwuid(os.geteuid()).pw_name
