"""``opslake alerts …``: incidents, their evidence, deliveries and the rule files.

The logic lives in :mod:`opslake.alerting`; these commands only read the lake and print.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from opslake.settings import Settings

app = typer.Typer(help="Alert management: incidents from convergence, root cause, enrichment, "
                       "notification deliveries.", no_args_is_help=True)
console = Console()


def _lake():
    from opslake.lake.storage import Lake

    return Lake.from_settings(Settings.from_env())


def _day(day: str | None, live: bool) -> str:
    """The day asked for; else today (live) or the newest day with incidents."""
    if day or live:
        return day or datetime.now(UTC).date().isoformat()
    days = sorted(_lake().partitions("gold", "incidents"))
    return days[-1] if days else datetime.now(UTC).date().isoformat()


def _incidents(day: str, live: bool) -> list[dict]:
    from opslake.alerting.live import LIVE_INCIDENTS
    from opslake.errors import NotFoundError

    lake = _lake()
    table = LIVE_INCIDENTS if live else "incidents"
    if day not in lake.partitions("gold", table):
        raise NotFoundError(f"no gold/{table} for {day}; run `opslake materialize` for it"
                            + (" or start `opslake ui` so the live sensor runs" if live else ""))
    return lake.read_table("gold", table, dts=[day]).to_pylist()


@app.command("incidents")
def incidents(
    day: Annotated[str | None, typer.Option(
        "--day", help="UTC day (default: the newest day with incidents).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Today's live incidents.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Include muted incidents.")] = False,
) -> None:
    """List a day's incidents: severity, status, alerts, probable root cause."""
    day = _day(day, live)
    rows = [r for r in _incidents(day, live) if all_ or not r["muted"]]
    table = Table(title=f"incidents {day}" + (" (live)" if live else ""))
    for col in ("id", "started", "severity", "status", "alerts", "root cause", "title"):
        table.add_column(col)
    for r in sorted(rows, key=lambda r: r["started_at"]):
        table.add_row(r["incident_id"], f"{r['started_at']:%H:%M:%S}", r["severity"],
                      r["status"] + (" (muted)" if r["muted"] else ""), str(r["alert_count"]),
                      r["root_cause"] or "-", r["title"])
    console.print(table)


@app.command("show")
def show(
    incident_id: Annotated[str, typer.Argument(help="INC-… as listed by `alerts incidents`.")],
    day: Annotated[str | None, typer.Option(
        "--day", help="UTC day (default: the newest day with incidents).")] = None,
    live: Annotated[bool, typer.Option("--live", help="Look in today's live incidents.")] = False,
) -> None:
    """One incident as JSON: ranked root causes with evidence, enrichment and its alerts."""
    from opslake.errors import NotFoundError

    day = _day(day, live)
    found = [r for r in _incidents(day, live) if r["incident_id"] == incident_id]
    if not found:
        raise NotFoundError(f"no incident {incident_id} on {day}; list them with "
                            "`opslake alerts incidents --day D`")
    inc = found[0]
    table = "incident_alerts_live" if live else "incident_alerts"
    alerts = [a for a in _lake().read_table("gold", table, dts=[day]).to_pylist()
              if a["incident_id"] == incident_id]
    inc["root_causes"] = json.loads(inc["root_causes"])
    inc["enrichment"] = json.loads(inc["enrichment"])
    inc["alerts"] = [{k: a[k] for k in ("alertname", "entity_id", "severity", "starts_at",
                                        "ends_at", "occurrence", "muted_by")} for a in alerts]
    typer.echo(json.dumps(inc, ensure_ascii=False, indent=1, default=str))


@app.command("deliveries")
def deliveries(
    day: Annotated[str | None, typer.Option("--day", help="UTC day (default: today).")] = None,
) -> None:
    """The notification delivery log of a day: every attempt, newest last."""
    from opslake.alerting.dispatch import DeliveryLog

    day = day or datetime.now(UTC).date().isoformat()
    log = DeliveryLog(_lake(), [day])
    table = Table(title=f"deliveries {day}")
    for col in ("at", "incident", "transition", "receiver", "status", "attempts", "detail"):
        table.add_column(col)
    for d in sorted(log.records, key=lambda d: d.at):
        table.add_row(d.at[11:19], d.incident_id, d.transition, d.receiver, d.status,
                      str(d.attempts), d.detail[:60])
    console.print(table)


@app.command("rules")
def rules() -> None:
    """Validate the convergence, routing and runbook files and summarise them."""
    from opslake.alerting.dispatch import NotifyConfig
    from opslake.alerting.enrich import RunbookIndex
    from opslake.alerting.rules import ConvergenceRules

    directory = Settings.from_env().alerting_dir
    conv = ConvergenceRules.load(directory)
    notify = NotifyConfig.load(directory)
    runbooks = RunbookIndex.load(directory)
    console.print(f"[bold]{directory}[/bold]")
    console.print(f"grouping window {conv.window_s}s, max hops {conv.max_hops}, dedup "
                  f"{conv.dedup_window_s}s; flapping {conv.flap_count} starts / "
                  f"{conv.flap_window_s}s")
    for r in conv.inhibit:
        console.print(f"inhibit {r.name}: {r.description}")
    for r in conv.correlation:
        console.print(f"correlation {r.name}: group by {list(r.group_by)} within {r.window_s}s")
    for name, rec in notify.receivers.items():
        state = "unconfigured: set " + ", ".join(rec.missing) if rec.missing else "ready"
        console.print(f"receiver {name} ({rec.channel}): {state}")
    for route in notify.routes:
        console.print(f"route {route.name}: {list(route.receivers)}")
    console.print(f"{len(runbooks.entries)} runbooks, "
                  f"{sum(1 for r in runbooks.entries.values() if r.job)} with a job; "
                  f"{sum(len(s) for s in notify.roster.values())} on-call shifts")
