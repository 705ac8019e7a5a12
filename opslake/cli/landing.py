"""``opslake landing …``: the landing zone's retention (``opslake landing purge``).

The logic lives in :mod:`opslake.lake.retention` and :mod:`opslake.orchestration.retention`
(which the daily ``landing_purge`` job runs too); this command parses and prints.
"""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from opslake.cli._admin import Admin, AdminCode, operator, second_factor
from opslake.settings import Settings

app = typer.Typer(help="The landing zone: retention of landed batches.", no_args_is_help=True)


@app.command("purge")
def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be purged; change nothing.")
    ] = False,
    admin: Admin = None,
    totp: AdminCode = None,
) -> None:
    """Purge landed batches older than OPSLAKE_LANDING_RETENTION_DAYS that silver holds."""
    from opslake.orchestration.retention import purge_landing

    settings = Settings.from_env()
    if not settings.landing_retention_days:
        typer.echo(
            "landing retention is off (OPSLAKE_LANDING_RETENTION_DAYS=0 keeps landing "
            "forever): nothing to purge; set it to a number of days to purge"
        )
        return
    # Landing is the only copy of what arrived: removing it is an administrator's act.
    vouching = None if dry_run else second_factor(admin, totp)
    report = purge_landing(
        settings,
        dry_run=dry_run,
        who=operator(),
        role="cli",
        client=socket.gethostname(),
        admin=vouching,
    )
    verb = "would purge" if dry_run else "purged"
    for batch in report.purged:
        typer.echo(
            f"{verb} {batch.source} {batch.dt} {batch.batch_id} ({batch.stored_bytes:,} bytes)"
        )
    for batch, reason in report.kept:
        typer.echo(f"kept {batch.source} {batch.dt} {batch.batch_id}: {reason}")
    typer.echo(
        f"{verb} {len(report.purged)} batch(es), {report.purged_bytes:,} bytes, of days "
        f"before {report.cutoff}; kept {len(report.kept)} (reasons above)"
        + ("" if dry_run else "; recorded in the audit log")
    )
