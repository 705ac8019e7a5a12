"""``opslake alerts …``: incidents, their evidence and handling, deliveries and the rule files.

The logic lives in :mod:`opslake.alerting`; these commands read the lake and print, and the
handling commands (ack, assign, comment, severity, resolve, reopen) record an action as a
named user (``--as``), checked like the API checks that user, and audited like ``opslake
security`` commands (who: the operating-system user; the acting user in the params).
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from opslake.cli._common import open_lake, stdout
from opslake.settings import Settings

if TYPE_CHECKING:  # imported lazily where used: the CLI starts fast
    from opslake.alerting.handling import HandlingEvent, HandlingLog

app = typer.Typer(
    help="Alert management: incidents from convergence, root cause, enrichment, "
    "notification deliveries.",
    no_args_is_help=True,
)


def _log():
    from opslake.alerting.handling import HandlingLog

    return HandlingLog.from_settings(Settings.from_env())


def _day(day: str | None, live: bool) -> str:
    """The day asked for; else today (live) or the newest day with incidents."""
    if day or live:
        return day or datetime.now(UTC).date().isoformat()
    days = sorted(open_lake().partitions("gold", "incidents"))
    return days[-1] if days else datetime.now(UTC).date().isoformat()


def _incidents(day: str, live: bool) -> list[dict]:
    from opslake.alerting.live import LIVE_INCIDENTS
    from opslake.errors import NotFoundError

    lake = open_lake()
    table = LIVE_INCIDENTS if live else "incidents"
    if day not in lake.partitions("gold", table):
        raise NotFoundError(
            f"no gold/{table} for {day}; run `opslake materialize` for it"
            + (" or start `opslake ui` so the live sensor runs" if live else "")
        )
    return lake.read_table("gold", table, dts=[day]).to_pylist()


@app.command("incidents")
def incidents(
    day: Annotated[
        str | None, typer.Option("--day", help="UTC day (default: the newest day with incidents).")
    ] = None,
    live: Annotated[bool, typer.Option("--live", help="Today's live incidents.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Include muted incidents.")] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many, the most severe first.")
    ] = None,
) -> None:
    """List a day's incidents: severity, status, alerts, probable root cause."""
    from opslake.alerting.convergence import severity_rank
    from opslake.alerting.handling import HandlingState

    day = _day(day, live)
    rows = [r for r in _incidents(day, live) if all_ or not r["muted"]]
    shown = sorted(rows, key=lambda r: (-severity_rank(r["severity"]), r["started_at"]))
    shown = sorted(shown[:limit], key=lambda r: r["started_at"])
    states = _log().states([r["incident_id"] for r in shown])
    more = f", the {len(shown)} most severe of {len(rows)}" if len(shown) < len(rows) else ""
    table = Table(title=f"incidents {day}" + (" (live)" if live else "") + more)
    for col in ("id", "started", "severity", "status", "handling", "alerts", "root cause", "title"):
        table.add_column(col)
    for r in shown:
        state = states.get(r["incident_id"], HandlingState(r["incident_id"]))
        table.add_row(
            r["incident_id"],
            f"{r['started_at']:%H:%M:%S}",
            state.severity_override or r["severity"],
            r["status"] + (" (muted)" if r["muted"] else ""),
            state.handling_status + (f" → {state.assignee}" if state.assignee else ""),
            str(r["alert_count"]),
            r["root_cause"] or "-",
            r["title"],
        )
    stdout.print(table)


@app.command("show")
def show(
    incident_id: Annotated[str, typer.Argument(help="INC-… as listed by `alerts incidents`.")],
    day: Annotated[
        str | None, typer.Option("--day", help="UTC day (default: the newest day with incidents).")
    ] = None,
    live: Annotated[bool, typer.Option("--live", help="Look in today's live incidents.")] = False,
) -> None:
    """One incident as JSON: ranked root causes with evidence, enrichment and its alerts."""
    from opslake.errors import NotFoundError

    day = _day(day, live)
    found = [r for r in _incidents(day, live) if r["incident_id"] == incident_id]
    if not found:
        raise NotFoundError(
            f"no incident {incident_id} on {day}; list them with `opslake alerts incidents --day D`"
        )
    inc = found[0]
    table = "incident_alerts_live" if live else "incident_alerts"
    alerts = [
        a
        for a in open_lake().read_table("gold", table, dts=[day]).to_pylist()
        if a["incident_id"] == incident_id
    ]
    inc["root_causes"] = json.loads(inc["root_causes"])
    inc["enrichment"] = json.loads(inc["enrichment"])
    inc["alerts"] = [
        {
            k: a[k]
            for k in (
                "alertname",
                "entity_id",
                "severity",
                "starts_at",
                "ends_at",
                "occurrence",
                "muted_by",
            )
        }
        for a in alerts
    ]
    inc["handling"] = _log().state(incident_id).as_dict()
    typer.echo(json.dumps(inc, ensure_ascii=False, indent=1, default=str))


@app.command("deliveries")
def deliveries(
    day: Annotated[str | None, typer.Option("--day", help="UTC day (default: today).")] = None,
) -> None:
    """The notification delivery log of a day: every attempt, newest last."""
    from opslake.alerting.dispatch import DeliveryLog

    day = day or datetime.now(UTC).date().isoformat()
    log = DeliveryLog(open_lake(), [day])
    table = Table(title=f"deliveries {day}")
    for col in ("at", "incident", "transition", "receiver", "status", "attempts", "detail"):
        table.add_column(col)
    for d in sorted(log.records, key=lambda d: d.at):
        table.add_row(
            d.at[11:19],
            d.incident_id,
            d.transition,
            d.receiver,
            d.status,
            str(d.attempts),
            d.detail[:60],
        )
    stdout.print(table)


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
    stdout.print(f"[bold]{directory}[/bold]")
    stdout.print(
        f"grouping window {conv.window_s}s, max hops {conv.max_hops}, dedup "
        f"{conv.dedup_window_s}s; flapping {conv.flap_count} starts / "
        f"{conv.flap_window_s}s"
    )
    for r in conv.inhibit:
        stdout.print(f"inhibit {r.name}: {r.description}")
    for r in conv.correlation:
        stdout.print(f"correlation {r.name}: group by {list(r.group_by)} within {r.window_s}s")
    for name, rec in notify.receivers.items():
        state = "unconfigured: set " + ", ".join(rec.missing) if rec.missing else "ready"
        stdout.print(f"receiver {name} ({rec.channel}): {state}")
    for route in notify.routes:
        stdout.print(f"route {route.name}: {list(route.receivers)}")
    stdout.print(
        f"{len(runbooks.entries)} runbooks, "
        f"{sum(1 for r in runbooks.entries.values() if r.job)} with a job; "
        f"{sum(len(s) for s in notify.roster.values())} on-call shifts"
    )


IncidentArg = Annotated[str, typer.Argument(help="INC-… as listed by `alerts incidents`.")]
AsUser = Annotated[
    str,
    typer.Option(
        "--as",
        help="The user acting (`opslake security users`): operations engineers handle, a "
        "department viewer may only comment on its departments' incidents.",
    ),
]
Note = Annotated[str, typer.Option("--comment", help="A note kept with the action.")]


def _handle(
    command: str,
    incident_id: str,
    action: str,
    as_user: str,
    comment: str = "",
    **fields: str | None,
) -> None:
    """Record ``action`` on the incident as ``as_user``, audited as ``opslake alerts <command>``."""
    from opslake.alerting import handling
    from opslake.cli._admin import audited, operator
    from opslake.security.identity import IdentityStore

    settings = Settings.from_env()
    given = {k: v for k, v in fields.items() if v is not None}
    with audited(
        f"opslake alerts {command}",
        target=incident_id,
        acting_as=as_user,
        comment_chars=len(comment),
        **given,
    ) as recorded:
        identity = IdentityStore.sealed(settings)
        principal = handling.acting_as(identity, as_user)
        log = _log()
        handling.permit(principal, action, handling.incident_departments(log.lake, incident_id))
        assignees = (
            handling.Assignees.load(identity, settings.alerting_dir)
            if action == "assign"
            else handling.Assignees()
        )
        event, state = log.record(
            incident_id,
            action,
            principal.user,
            via=f"cli:{operator()}@{socket.gethostname()}",
            comment=comment,
            assignees=assignees,
            **fields,
        )
        recorded["event_id"] = event.event_id
    typer.echo(
        f"{event.event_id}: {action} by {event.actor} at {event.at:%Y-%m-%d %H:%M:%S}Z; "
        f"{incident_id} is {state.handling_status}"
        + (f", assigned to {state.assignee}" if state.assignee else "")
    )
    _notify(log, settings, event)


def _notify(log: HandlingLog, settings: Settings, event: HandlingEvent) -> None:
    """Send the action's notices now and say how each went (the action stands either way)."""
    from opslake.alerting.notices import Notifier
    from opslake.errors import OpsLakeError

    try:
        records = Notifier(log, settings.alerting_dir).send(event)
    except OpsLakeError as exc:
        typer.echo(f"notices not sent: {exc}", err=True)
        return
    for r in records:
        typer.echo(f"notice {r.transition} to {r.receiver}: {r.status} {r.detail}".rstrip())


@app.command("ack")
def ack(incident_id: IncidentArg, as_user: AsUser, comment: Note = "") -> None:
    """Acknowledge an open incident (its first acknowledgement is its MTTA)."""
    _handle("ack", incident_id, "acknowledge", as_user, comment)


@app.command("assign")
def assign(
    incident_id: IncidentArg,
    assignee: Annotated[
        str,
        typer.Argument(
            help="A user who handles incidents, or with --group an on-call group (oncall.yaml)."
        ),
    ],
    as_user: AsUser,
    group: Annotated[bool, typer.Option("--group", help="ASSIGNEE is an on-call group.")] = False,
    comment: Note = "",
) -> None:
    """Assign an incident to a user or an on-call group."""
    _handle(
        "assign",
        incident_id,
        "assign",
        as_user,
        comment,
        assignee=assignee,
        assignee_kind="group" if group else "user",
    )


@app.command("comment")
def comment_(
    incident_id: IncidentArg,
    text: Annotated[str, typer.Argument(help="The comment.")],
    as_user: AsUser,
) -> None:
    """Comment on an incident."""
    _handle("comment", incident_id, "comment", as_user, text)


@app.command("severity")
def severity(
    incident_id: IncidentArg,
    level: Annotated[str, typer.Argument(help="critical, major, warning, minor or info.")],
    as_user: AsUser,
    comment: Note = "",
) -> None:
    """Change an incident's severity (overrides the one from its alerts)."""
    _handle("severity", incident_id, "severity", as_user, comment, severity=level)


@app.command("resolve")
def resolve(incident_id: IncidentArg, as_user: AsUser, comment: Note = "") -> None:
    """Resolve an incident (its standing resolution is its MTTR)."""
    _handle("resolve", incident_id, "resolve", as_user, comment)


@app.command("reopen")
def reopen(incident_id: IncidentArg, as_user: AsUser, comment: Note = "") -> None:
    """Reopen a resolved incident."""
    _handle("reopen", incident_id, "reopen", as_user, comment)


@app.command("history")
def history(incident_id: IncidentArg) -> None:
    """Who did what to an incident and when, oldest first, and its handling now."""
    from opslake.alerting.handling import HandlingState, fold, incident_departments

    log = _log()
    incident_departments(log.lake, incident_id)  # NotFoundError for an unknown incident
    events = log.events([incident_id])
    state = fold(events).get(incident_id, HandlingState(incident_id))
    table = Table(
        title=f"{incident_id}: {state.handling_status}"
        + (f", assigned to {state.assignee}" if state.assignee else "")
    )
    for col in ("#", "at (UTC)", "action", "actor", "via", "details"):
        table.add_column(col)
    for e in events:
        details = " ".join(x for x in (e.assignee, e.severity, e.comment) if x)
        table.add_row(str(e.seq), f"{e.at:%Y-%m-%d %H:%M:%S}", e.action, e.actor, e.via, details)
    stdout.print(table)
