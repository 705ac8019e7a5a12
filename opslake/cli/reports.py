"""``opslake reports …``: periodic service reports: list the kept ones, render one, the role.

The logic lives in :mod:`opslake.screens.reports`; these commands only call it and print.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from opslake.cli._common import console, stdout

app = typer.Typer(
    help="Periodic service reports (daily, weekly, monthly) rendered from the "
    "Superset screens to PDF: list, render, the report-user role.",
    no_args_is_help=True,
)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


@app.command("list")
def list_(
    kind: Annotated[
        str | None, typer.Option(help="Only this kind: daily, weekly or monthly.")
    ] = None,
) -> None:
    """The reports kept in the lake: kind, period, pages, size, path."""
    from opslake.lake.storage import Lake
    from opslake.screens.reports import list_reports, report_kind
    from opslake.settings import Settings

    if kind:
        report_kind(kind)
    rows = list_reports(Lake.from_settings(Settings.from_env()), kind)
    table = Table(
        "kind",
        "period",
        "pages",
        "size",
        "generated at",
        "e-mailed to",
        "path",
        title=f"{len(rows)} report(s)",
    )
    for r in rows:
        table.add_row(
            r["kind"],
            r["period"],
            str(r["pages"]),
            _size(r["bytes"]),
            r["generated_at"],
            ", ".join(r["emailed_to"]) or "—",
            r["path"],
        )
    stdout.print(table)


@app.command("render")
def render(
    kind: Annotated[str, typer.Option(help="daily, weekly or monthly.")] = "weekly",
    period: Annotated[
        str | None,
        typer.Option(
            help="2026-11-25, 2026-W48 or 2026-11; default: the period with the newest data."
        ),
    ] = None,
    send: Annotated[
        bool, typer.Option(help="E-mail it to the receivers of `reports` in notify.yaml.")
    ] = True,
) -> None:
    """Render a report from the screens (starts Superset for it if needed), keep and send it."""
    from opslake.screens.reports import produce
    from opslake.settings import Settings

    row = produce(Settings.from_env(), kind, period, send_mail=send, say=console.print)
    typer.echo(
        f"{row['kind']} {row['period']}: {row['pages']} pages, {_size(row['bytes'])}, {row['path']}"
    )


@app.command("role")
def role() -> None:
    """Create or correct the report-user role (SQL Lab, CSV/Excel export) in Superset."""
    from opslake.screens import service
    from opslake.screens.reports import REPORT_ROLE, provision_report_role

    with service.admin_client(service.config_for()) as client:
        report = provision_report_role(client)
    typer.echo(
        f"{REPORT_ROLE}: {'updated' if report.changed else 'unchanged'}; give it to a "
        f"user with `opslake screens user NAME --role '{REPORT_ROLE}'`"
    )
