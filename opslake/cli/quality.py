"""``opslake quality …``: data-quality reports from the command line.

The logic lives in :mod:`opslake.quality`; these commands only parse and print.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from opslake.cli._common import open_lake, parse_day, stdout
from opslake.errors import ConfigError

app = typer.Typer(
    help="Data quality: check results, the daily check-up report (数据质量体检报告) "
    "and quality incidents (open → acknowledged → resolved).",
    no_args_is_help=True,
)


def _last_day(lake) -> date:
    days = sorted(
        d
        for d in lake.partitions("gold", "quality_results")
        if lake.list_files(lake.table_path("gold", "quality_results", {"dt": d}), recursive=True)
    )
    if not days:
        raise ConfigError(
            f"no quality results in {lake.table_path('gold', 'quality_results')} "
            "yet; run the quality checks first, or name a day with --date "
            "YYYY-MM-DD"
        )
    try:
        return date.fromisoformat(days[-1])
    except ValueError:
        raise ConfigError(
            f"quality results partition dt={days[-1]!r} is not a date; pass --date YYYY-MM-DD"
        ) from None


@app.command()
def report(
    day: Annotated[
        str | None,
        typer.Option(
            "--date", help="Day (YYYY-MM-DD); default: the last day that has quality results."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Also write a copy of the HTML page to this file.")
    ] = None,
) -> None:
    """Write the day's self-contained HTML check-up into the lake (and optionally a copy)."""
    from opslake.quality.report import write_report

    lake = open_lake()
    when = parse_day(day, "--date") or _last_day(lake)
    if output is not None and not output.parent.is_dir():
        raise ConfigError(f"--output {output}: directory {output.parent} does not exist")
    started = time.perf_counter()
    path = write_report(lake, when)
    elapsed = time.perf_counter() - started
    typer.echo(path)
    if output is not None:
        html = lake.read_bytes(path)
        try:
            output.write_bytes(html)
        except OSError as exc:
            raise ConfigError(f"--output {output}: cannot write ({exc.strerror})") from None
        typer.echo(str(output))
    typer.echo(f"quality report for {when.isoformat()} written in {elapsed:.2f}s", err=True)


@app.command()
def results(
    day: Annotated[
        str | None, typer.Option("--date", help="Day (default: the last checked).")
    ] = None,
    failed: Annotated[bool, typer.Option(help="Only failed checks.")] = False,
) -> None:
    """The checks of one day: table, check, severity, passed, observed vs threshold."""
    from rich.table import Table

    from opslake.quality.results import read_results

    lake = open_lake()
    chosen = parse_day(day, "--date") or _last_day(lake)
    rows = read_results(lake, [chosen.isoformat()]).to_pylist()
    table = Table(
        "table",
        "check",
        "kind",
        "severity",
        "passed",
        "observed",
        "threshold",
        title=f"quality checks of {chosen}",
    )
    for r in sorted(rows, key=lambda r: (r["passed"], r["layer"], r["table"], r["check"])):
        if failed and r["passed"]:
            continue
        table.add_row(
            f"{r['layer']}.{r['table']}",
            r["check"],
            r["kind"],
            r["severity"],
            "✓" if r["passed"] else "✗",
            (f"{r['source']}: " if r["source"] else "") + r["observed"],
            r["threshold"],
        )
    stdout.print(table)


@app.command("incidents")
def incidents_list(
    status: Annotated[str | None, typer.Option(help="open, acknowledged or resolved.")] = None,
) -> None:
    """Quality incidents (a check that failed) with their status."""
    from rich.table import Table

    from opslake.quality import incidents

    found = [i for i in incidents.incidents(open_lake()) if status in (None, i.status)]
    table = Table("id", "table", "check", "severity", "status", "first failed", "last failed")
    for i in found:
        table.add_row(
            i.id, i.table, i.check, i.severity, i.status, str(i.first_failed), str(i.last_failed)
        )
    stdout.print(table)


def _set(incident_id: str, status: str, note: str) -> None:
    import getpass

    from opslake.quality import incidents

    changed = incidents.set_status(
        open_lake(), incident_id, status, by=f"cli:{getpass.getuser()}", note=note
    )
    typer.echo(f"{changed.id} {changed.table} {changed.check}: {changed.status}")


@app.command()
def ack(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")],
    note: Annotated[str, typer.Option(help="Why, who is on it.")] = "",
) -> None:
    """Acknowledge a quality incident."""
    _set(incident_id, "acknowledged", note)


@app.command()
def resolve(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")],
    note: Annotated[str, typer.Option(help="What was fixed.")] = "",
) -> None:
    """Resolve a quality incident."""
    _set(incident_id, "resolved", note)


@app.command()
def reopen(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")],
    note: Annotated[str, typer.Option(help="Why.")] = "",
) -> None:
    """Open a quality incident again."""
    _set(incident_id, "open", note)
