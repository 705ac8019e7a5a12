"""Incident handling (S5.5d): acknowledge, assign, comment, change severity, resolve, reopen.

Who did what and when is kept append-only in the lake, as one more landing source
(``incident_actions``): each action is one landed batch (a JSON object), durable and
checksummed like every landed batch, never rewritten. Its batch id is the event id,
``<incident id>.<seq>`` (the incident's n-th action), so two people acting on one incident
at the same moment cannot both land the same step: a writer checks and lands its action inside
a write transaction of the handling store (the SQLite file ``<state_dir>/handling.db``, or
schema ``handling`` of ``OPSLAKE_DATABASE_URL``, which every API host shares), where it takes
its step in an append-only table keyed by (incident, seq). Writers of one store are serialized
there, so the second sees the first's action; one whose view of the lake missed a step, or
that lands an id already in the lake, gets a clear conflict. The lake stays the record: the
daily pipeline carries the events into ``silver/incident_actions`` and folds them onto each
incident in ``gold/incident_state``; readers that must see an action at once (the API, the
CLI) read silver plus the landed batches silver does not hold yet (:class:`HandlingLog`).

The handling status is separate from the alert status of the incident (``firing`` /
``resolved``, from its alerts): ``open`` until someone acknowledges, ``acknowledged``,
``resolved`` by a person. Transitions:

- acknowledge: only an ``open`` incident;
- assign, change severity: any incident not ``resolved``;
- comment: any incident;
- resolve: any incident not ``resolved``;
- reopen: only a ``resolved`` one (back to ``open``; a new acknowledgement is then a new
  acknowledge, while ``acknowledged_at`` keeps the first one, which MTTA reads).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from opslake.alerting.dispatch import NotifyConfig
from opslake.alerting.live import LIVE_INCIDENTS
from opslake.errors import AuthError, ConfigError, Forbidden, HandlingError, NotFoundError
from opslake.ingest.parsers import ParseResult, Reject
from opslake.kpi.service_levels import HANDLED_SCHEMA
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.schemas import TS
from opslake.lake.state_db import PostgresStateDB, StateDB, open_store
from opslake.lake.storage import Lake
from opslake.security.identity import IdentityStore
from opslake.security.roles import ROLES, Principal
from opslake.settings import Settings

log = logging.getLogger(__name__)

#: The landing source (and the silver table) of handling events.
SOURCE = "incident_actions"
CONNECTOR = "opslake-handling/1"
ACTIONS = ("acknowledge", "assign", "comment", "severity", "resolve", "reopen")
STATUSES = ("open", "acknowledged", "resolved")
SEVERITIES = ("critical", "major", "warning", "minor", "info")
ASSIGNEE_KINDS = ("user", "group")
#: Scope an action needs: department viewers may comment, only handlers do the rest.
COMMENT_SCOPE = "incidents:comment"
HANDLE_SCOPE = "incidents:handle"
MAX_COMMENT = 4000
INCIDENT_ID = re.compile(r"^INC-[0-9a-f]{12}$")
DB_FILE = "handling.db"
#: The steps taken: one row per landed event id, never updated or deleted.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    incident_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL,
    actor TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (incident_id, seq));
"""

#: One handling event (bronze and silver ``incident_actions``).
ACTIONS_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("incident_id", pa.string()),
        ("seq", pa.int32()),
        ("action", pa.string()),
        ("actor", pa.string()),
        ("via", pa.string()),
        ("at", TS),
        ("assignee", pa.string()),
        ("assignee_kind", pa.string()),
        ("severity", pa.string()),
        ("comment", pa.string()),
    ]
)
#: The handling state of an incident (``gold/incident_state``; the API's incident columns).
STATE_SCHEMA = pa.schema(
    [
        ("incident_id", pa.string()),
        ("handling_status", pa.string()),
        ("assignee", pa.string()),
        ("assignee_kind", pa.string()),
        ("severity_override", pa.string()),
        ("acknowledged_at", TS),
        ("acknowledged_by", pa.string()),
        ("resolved_at", TS),
        ("resolved_by", pa.string()),
        ("reopens", pa.int32()),
        ("comments", pa.int32()),
        ("actions", pa.int32()),
        ("last_action", pa.string()),
        ("last_actor", pa.string()),
        ("last_at", TS),
    ]
)


@dataclass(frozen=True)
class HandlingEvent:
    """One recorded action on an incident."""

    event_id: str
    incident_id: str
    seq: int
    action: str
    actor: str
    #: How it came: ``api`` (with the key id when a key was used) or ``cli:<os user>@<host>``.
    via: str
    at: datetime
    assignee: str | None = None
    assignee_kind: str | None = None
    severity: str | None = None
    comment: str = ""

    def as_dict(self) -> dict[str, object]:
        """The event as JSON-ready values (``at`` in ISO 8601)."""
        return {**asdict(self), "at": self.at.isoformat()}


@dataclass(frozen=True)
class HandlingState:
    """An incident's handling, folded from its events in order."""

    incident_id: str
    handling_status: str = "open"
    assignee: str | None = None
    assignee_kind: str | None = None
    severity_override: str | None = None
    #: The first acknowledgement ever (MTTA), kept across a reopen.
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    #: The resolution that stands (MTTR); cleared by a reopen.
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    reopens: int = 0
    comments: int = 0
    actions: int = 0
    last_action: str | None = None
    last_actor: str | None = None
    last_at: datetime | None = None

    def as_dict(self) -> dict[str, object]:
        """The state as JSON-ready values."""
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Assignees:
    """Whom an incident may be assigned to: handling users and the on-call groups."""

    users: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def load(cls, identity: IdentityStore, alerting_dir: Path) -> Assignees:
        """Enabled users whose role may handle incidents, and the groups of ``oncall.yaml``."""
        users = frozenset(
            u.name
            for u in identity.users()
            if not u.disabled and u.role in ROLES and HANDLE_SCOPE in ROLES[u.role].scopes
        )
        return cls(users, frozenset(NotifyConfig.load(alerting_dir).roster))


def scope_for(action: str) -> str:
    """The scope ``action`` needs."""
    return COMMENT_SCOPE if action == "comment" else HANDLE_SCOPE


def acting_as(identity: IdentityStore, name: str) -> Principal:
    """The principal of user ``name`` acting outside the API (the CLI's ``--as``)."""
    user = next((u for u in identity.users() if u.name == name), None)
    if user is None:
        raise NotFoundError(f"no user {name!r}; act as a user `opslake security users` lists")
    if user.disabled:
        raise AuthError(f"user {name} is disabled; act as an enabled user")
    return Principal(
        user.name,
        user.role,
        ROLES[user.role].scopes,
        frozenset(user.departments),
        frozenset(user.businesses),
    )


def permit(principal: Principal, action: str, departments: Collection[str]) -> None:
    """Raise unless ``principal`` may take ``action`` on an incident of ``departments``: the
    action's scope, and for a department viewer an incident wholly within its departments
    (the API's row scope; another department's incident is not found, as in the API)."""
    scope = scope_for(action)
    if not principal.allows(scope):
        raise Forbidden(
            f"{principal.user} (role {principal.role}) lacks {scope} and may not "
            f"{action} incidents; act as an operations engineer"
        )
    if principal.row_scoped and not (departments and set(departments) <= principal.departments):
        raise NotFoundError(
            f"no incident that {principal.user} may see; list them with `opslake alerts incidents`"
        )


def incident_row(lake: Lake, incident_id: str, columns: Sequence[str]) -> dict[str, object]:
    """``columns`` of a daily or today's live incident, its newest row (NotFoundError when
    neither has it)."""
    for table in ("incidents", LIVE_INCIDENTS):
        if not lake.partitions("gold", table):
            continue
        rows = lake.read_table("gold", table, columns=["incident_id", *columns])
        hit = rows.filter(pc.equal(rows.column("incident_id"), incident_id))
        if hit.num_rows:
            return hit.slice(hit.num_rows - 1).to_pylist()[0]
    raise NotFoundError(
        f"no incident {incident_id}; list them with `opslake alerts incidents` (today's: --live)"
    )


def incident_departments(lake: Lake, incident_id: str) -> list[str]:
    """The departments of a daily or today's live incident (NotFoundError when neither)."""
    return list(incident_row(lake, incident_id, ["departments"])["departments"] or [])  # type: ignore[call-overload]


def apply(state: HandlingState, event: HandlingEvent) -> HandlingState:
    """``state`` after ``event`` (lenient: events are facts already checked when recorded)."""
    base = replace(
        state,
        actions=state.actions + 1,
        last_action=event.action,
        last_actor=event.actor,
        last_at=event.at,
    )
    if event.action == "acknowledge":
        first = state.acknowledged_at is None
        return replace(
            base,
            handling_status="acknowledged",
            acknowledged_at=event.at if first else state.acknowledged_at,
            acknowledged_by=event.actor if first else state.acknowledged_by,
        )
    if event.action == "assign":
        return replace(base, assignee=event.assignee, assignee_kind=event.assignee_kind)
    if event.action == "severity":
        return replace(base, severity_override=event.severity)
    if event.action == "resolve":
        return replace(
            base, handling_status="resolved", resolved_at=event.at, resolved_by=event.actor
        )
    if event.action == "reopen":
        return replace(
            base,
            handling_status="open",
            resolved_at=None,
            resolved_by=None,
            reopens=state.reopens + 1,
        )
    return replace(base, comments=state.comments + 1)  # comment


def fold(events: Iterable[HandlingEvent]) -> dict[str, HandlingState]:
    """Each incident's state from its events (taken in ``seq`` order per incident)."""
    states: dict[str, HandlingState] = {}
    for event in sorted(events, key=lambda e: (e.incident_id, e.seq, e.at)):
        states[event.incident_id] = apply(
            states.get(event.incident_id, HandlingState(event.incident_id)), event
        )
    return states


def check(
    state: HandlingState,
    action: str,
    *,
    assignee: str | None = None,
    assignee_kind: str | None = None,
    severity: str | None = None,
    comment: str = "",
    assignees: Assignees = Assignees(),
) -> None:
    """Raise HandlingError unless ``action`` with these fields is allowed in ``state``."""
    if action not in ACTIONS:
        raise HandlingError(f"action {action!r} is not known; use one of {', '.join(ACTIONS)}")
    if len(comment) > MAX_COMMENT:
        raise HandlingError(
            f"the comment has {len(comment)} characters; shorten it to {MAX_COMMENT} at most"
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") and c not in "\n\r\t" for c in comment):
        raise HandlingError(
            "the comment holds control characters or halves of surrogate "
            "pairs; send plain text (new lines and tabs are fine)"
        )
    status, ident = state.handling_status, state.incident_id
    if action == "acknowledge" and status != "open":
        raise HandlingError(
            f"{ident} is {status} (by {state.last_actor} at "
            f"{_when(state.last_at)}), not open; only an open incident can be "
            "acknowledged" + ("; reopen it first" if status == "resolved" else "")
        )
    if action in ("assign", "severity", "resolve") and status == "resolved":
        raise HandlingError(
            f"{ident} is already resolved (by {state.resolved_by} at "
            f"{_when(state.resolved_at)}); reopen it first"
        )
    if action == "reopen" and status != "resolved":
        raise HandlingError(
            f"{ident} is {status}, not resolved; only a resolved incident can be reopened"
        )
    if action == "comment" and not comment.strip():
        raise HandlingError("a comment needs text; give the comment")
    if action == "severity":
        if severity not in SEVERITIES:
            raise HandlingError(
                f"severity {severity!r} is not known; use one of {', '.join(SEVERITIES)}"
            )
        if severity == state.severity_override:
            raise HandlingError(f"{ident} already has severity {severity}; give another one")
    if action == "assign":
        _check_assignee(state, assignee, assignee_kind, assignees)


def _check_assignee(
    state: HandlingState, assignee: str | None, kind: str | None, assignees: Assignees
) -> None:
    if kind not in ASSIGNEE_KINDS:
        raise HandlingError(f"assignee kind {kind!r} is not known; use user or group")
    known = assignees.users if kind == "user" else assignees.groups
    if assignee not in known:
        what = (
            "users who may handle incidents" if kind == "user" else "on-call groups (oncall.yaml)"
        )
        listed = ", ".join(sorted(known)[:20]) or "none"
        raise HandlingError(f"{assignee!r} is not one of the {what}; pick one of: {listed}")
    if (assignee, kind) == (state.assignee, state.assignee_kind):
        raise HandlingError(
            f"{state.incident_id} is already assigned to {assignee}; assign it to someone else"
        )


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at else "?"


def parse(data: bytes, batch: LandedBatch) -> ParseResult:
    """Bronze rows of one landed action; a malformed one is rejected with the reason."""
    try:
        event = _event(json.loads(data))
        if event.event_id != batch.batch_id:
            raise ValueError(f"event id {event.event_id} is not the batch id {batch.batch_id}")
    except (ValueError, TypeError, KeyError) as exc:
        return ParseResult(
            ACTIONS_SCHEMA.empty_table(),
            [Reject(1, data.decode("utf-8", "replace")[:2000], f"not a handling event: {exc}")],
        )
    return ParseResult(events_table([event]))


def _event(raw: Mapping[str, object]) -> HandlingEvent:
    """A handling event from its JSON object (ValueError, KeyError when malformed)."""
    at = datetime.fromisoformat(str(raw["at"]))
    if at.tzinfo is None:
        raise ValueError(f"'at' {raw['at']} has no time zone")
    event = HandlingEvent(
        event_id=str(raw["event_id"]),
        incident_id=str(raw["incident_id"]),
        seq=int(str(raw["seq"])),
        action=str(raw["action"]),
        actor=str(raw["actor"]),
        via=str(raw.get("via") or ""),
        at=at.astimezone(UTC),
        assignee=_text(raw.get("assignee")),
        assignee_kind=_text(raw.get("assignee_kind")),
        severity=_text(raw.get("severity")),
        comment=str(raw.get("comment") or ""),
    )
    if event.action not in ACTIONS or not INCIDENT_ID.match(event.incident_id) or not event.actor:
        raise ValueError(
            f"action {event.action!r}, incident {event.incident_id!r} or actor "
            f"{event.actor!r} is not valid"
        )
    return event


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def events_table(events: Iterable[HandlingEvent]) -> pa.Table:
    """Rows of ``ACTIONS_SCHEMA``."""
    return pa.Table.from_pylist([asdict(e) for e in events], schema=ACTIONS_SCHEMA)


def events_of(table: pa.Table) -> list[HandlingEvent]:
    """The events of rows of ``ACTIONS_SCHEMA``."""
    return [HandlingEvent(**row) for row in table.select(ACTIONS_SCHEMA.names).to_pylist()]


def conform(bronze: pa.Table) -> pa.Table:
    """Silver rows of a day: one per event id, in incident and step order."""
    rows = {e.event_id: e for e in events_of(bronze)}
    return events_table(sorted(rows.values(), key=lambda e: (e.incident_id, e.seq)))


def states_table(states: Iterable[HandlingState]) -> pa.Table:
    """Rows of ``STATE_SCHEMA``, by incident id."""
    return pa.Table.from_pylist(
        [asdict(s) for s in sorted(states, key=lambda s: s.incident_id)], schema=STATE_SCHEMA
    )


def with_state(incidents: pa.Table, states: Mapping[str, HandlingState]) -> pa.Table:
    """``incidents`` (rows with ``incident_id``) with the handling columns appended."""
    ids = incidents.column("incident_id").to_pylist()
    found = [asdict(states.get(i, HandlingState(i))) for i in ids]
    out = incidents
    for name in STATE_SCHEMA.names[1:]:
        out = out.append_column(
            STATE_SCHEMA.field(name),
            pa.array([row[name] for row in found], STATE_SCHEMA.field(name).type),
        )
    return out


def handled_incidents(lake: Lake, states: Mapping[str, HandlingState]) -> pa.Table:
    """Rows of ``HANDLED_SCHEMA`` for the incidents of ``gold/incidents`` acknowledged or
    resolved in OpsLake (their service-level times come from these events)."""
    wanted = {i for i, s in states.items() if s.acknowledged_at or s.resolved_at}
    if not wanted or not lake.partitions("gold", "incidents"):
        return HANDLED_SCHEMA.empty_table()
    ids = pa.array(sorted(wanted), pa.string())
    rows = lake.read_table(
        "gold",
        "incidents",
        columns=["incident_id", "started_at", "ended_at", "businesses", "updated_at"],
    )
    rows = rows.filter(pc.is_in(rows.column("incident_id"), ids))
    alerts = lake.read_table("gold", "incident_alerts", columns=["incident_id", "fingerprint"])
    alerts = alerts.filter(pc.is_in(alerts.column("incident_id"), ids))
    prints: dict[str, set[str]] = {}
    for a in alerts.to_pylist():
        prints.setdefault(a["incident_id"], set()).add(a["fingerprint"])
    # An incident open at midnight is written on each day: the latest row knows its end.
    started = {r["incident_id"]: r for r in sorted(rows.to_pylist(), key=lambda r: r["updated_at"])}
    return pa.Table.from_pylist(
        [
            {
                "incident_id": i,
                "fingerprints": sorted(prints.get(i, ())),
                "business": min(r["businesses"] or [None], key=lambda b: b or ""),
                "started_at": r["started_at"],
                "ended_at": r["ended_at"],
                "acknowledged_at": states[i].acknowledged_at,
                "resolved_at": states[i].resolved_at,
            }
            for i, r in sorted(started.items())
        ],
        schema=HANDLED_SCHEMA,
    )


class HandlingLog:
    """The handling events of the lake: recorded through landing, read as of now.

    Writers take their steps in the handling store of ``settings`` (its ``state_dir`` or
    ``database_url``; the environment's settings when not given); readers need only the lake.
    """

    def __init__(self, zone: LandingZone, settings: Settings | None = None) -> None:
        self.zone = zone
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Settings, zone: LandingZone | None = None) -> HandlingLog:
        """The log of ``settings``' lake, its steps in their handling store."""
        return cls(zone or LandingZone.from_settings(settings), settings)

    @cached_property
    def steps(self) -> StateDB | PostgresStateDB:
        """The store of taken steps, opened by the first action."""
        settings = self.settings or Settings.from_env()
        return open_store(
            settings.state_dir,
            settings.database_url,
            DB_FILE,
            "handling",
            _SCHEMA,
            "the handling store",
            append_only={"steps": "the handling steps taken"},
        )

    @property
    def lake(self) -> Lake:
        """The lake the events live in."""
        return self.zone.lake

    def events(self, incident_ids: Collection[str] | None = None) -> list[HandlingEvent]:
        """Recorded events (of ``incident_ids`` only, when given), oldest first.

        Silver holds the days the pipeline carried; landed batches of days silver lacks, and
        of its newest day and after (an action after that day's run), are read from landing.
        """
        lake = self.lake
        silver_days = sorted(lake.partitions("silver", SOURCE))
        table = (
            lake.read_table("silver", SOURCE, schema=ACTIONS_SCHEMA, dts=silver_days)
            if silver_days
            else ACTIONS_SCHEMA.empty_table()
        )
        if incident_ids is not None:
            table = table.filter(
                pc.is_in(table.column("incident_id"), pa.array(sorted(incident_ids), pa.string()))
            )
        found = {e.event_id: e for e in events_of(table)}
        newest = silver_days[-1] if silver_days else ""
        held = set(silver_days)
        for day in self.zone.days(SOURCE):
            if day in held and day < newest:
                continue
            for batch in self.zone.batches(SOURCE, day):
                if batch.batch_id in found or (
                    incident_ids is not None and batch.batch_id.split(".", 1)[0] not in incident_ids
                ):
                    continue
                try:
                    event = _event(json.loads(self.zone.read(batch)))
                except (ValueError, TypeError, KeyError) as exc:
                    # Not from record(): bronze quarantines it with the reason; reads go on.
                    log.warning(
                        "landed handling event %s (%s) is not readable, left out: %s",
                        batch.batch_id,
                        day,
                        exc,
                    )
                    continue
                found[event.event_id] = event
        return sorted(found.values(), key=lambda e: (e.at, e.incident_id, e.seq))

    def states(self, incident_ids: Collection[str] | None = None) -> dict[str, HandlingState]:
        """The current handling state of every incident with events (or of those asked)."""
        return fold(self.events(incident_ids))

    def state(self, incident_id: str) -> HandlingState:
        """One incident's state (``open`` and untouched when it has no events)."""
        return self.states([incident_id]).get(incident_id, HandlingState(incident_id))

    def record(
        self,
        incident_id: str,
        action: str,
        actor: str,
        *,
        via: str,
        assignee: str | None = None,
        assignee_kind: str | None = None,
        severity: str | None = None,
        comment: str = "",
        assignees: Assignees = Assignees(),
        at: datetime | None = None,
    ) -> tuple[HandlingEvent, HandlingState]:
        """Check and land one action; the event and the incident's state after it."""
        if not INCIDENT_ID.match(incident_id):
            raise ConfigError(
                f"{incident_id!r} is not an incident id; give INC- and 12 hex "
                "digits, as `opslake alerts incidents` lists them"
            )
        if not actor or not actor.strip():
            raise ConfigError("say who acts (a user name)")
        with self.steps.tx() as conn:
            past = self.events([incident_id])
            state = fold(past).get(incident_id, HandlingState(incident_id))
            check(
                state,
                action,
                assignee=assignee,
                assignee_kind=assignee_kind,
                severity=severity,
                comment=comment,
                assignees=assignees,
            )
            when = (at or datetime.now(UTC)).astimezone(UTC)
            seq = max((e.seq for e in past), default=0) + 1
            event = HandlingEvent(
                event_id=f"{incident_id}.{seq:06d}",
                incident_id=incident_id,
                seq=seq,
                action=action,
                actor=actor.strip(),
                via=via,
                at=when,
                assignee=assignee if action == "assign" else None,
                assignee_kind=assignee_kind if action == "assign" else None,
                severity=severity if action == "severity" else None,
                comment=comment,
            )
            conflict = HandlingError(
                f"another action on {incident_id} was recorded at the same moment; read its "
                "history and try again"
            )
            # The key makes the step this writer's alone, on every host sharing the store.
            if not conn.execute(
                "INSERT INTO steps (incident_id, seq, event_id, actor, at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (incident_id, seq) DO NOTHING",
                (incident_id, seq, event.event_id, event.actor, when.isoformat()),
            ).rowcount:
                raise conflict
            landed = self.zone.write(
                SOURCE,
                json.dumps(event.as_dict(), ensure_ascii=False, sort_keys=True).encode(),
                fmt="json",
                batch_id=event.event_id,
                received_at=when,
                connector=CONNECTOR,
                sender=actor.strip()[:128],
            )
            if landed.duplicate:  # landed by a writer of another store: the lake decides
                raise conflict
        return event, apply(state, event)
