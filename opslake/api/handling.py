"""Incident handling through the API (S5.5d): acknowledge, assign, comment, change severity,
resolve, reopen, and the history of who did what when.

Each action is checked against the incident's handling state and landed append-only in the
lake (``opslake.alerting.handling``); the answer is the state right after it. Incidents are
those a caller may read (``GET /v1/incidents``, row scoped): a department viewer acts only on
incidents wholly within its departments and may only comment; operations engineers and
administrators handle (``incidents:handle``); leadership reads. Every request is audited by
the audit middleware; the action's fields (not the comment's text) go into its entry. An
assignment, a resolve and a reopen send their notices (``opslake.alerting.notices``) in the
background once recorded.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from opslake.alerting.handling import (
    COMMENT_SCOPE,
    HANDLE_SCOPE,
    MAX_COMMENT,
    Assignees,
    HandlingLog,
    HandlingState,
    fold,
)
from opslake.alerting.notices import Notifier
from opslake.api.auth import GUARDED, error_responses, requires
from opslake.api.data import visible_incident
from opslake.security.roles import Principal

router = APIRouter(prefix="/v1/incidents", tags=["incidents"])
IncidentId = Annotated[str, Path(pattern=r"^INC-[0-9a-f]{12}$")]
Severity = Literal["critical", "major", "warning", "minor", "info"]


class Note(BaseModel):
    """An optional note kept with the action."""

    comment: str = Field("", max_length=MAX_COMMENT)


class Assignment(Note):
    """Whom to assign: a user who handles incidents, or an on-call group (oncall.yaml)."""

    assignee: str = Field(min_length=1, max_length=128)
    kind: Literal["user", "group"] = "user"


class CommentBody(BaseModel):
    """The comment's text."""

    text: str = Field(min_length=1, max_length=MAX_COMMENT)


class SeverityChange(Note):
    """The incident's new severity (overrides the one from its alerts)."""

    severity: Severity


class Handled(BaseModel):
    """The recorded action and the incident's handling state after it."""

    event: dict[str, Any]
    state: dict[str, Any]


class History(BaseModel):
    """Every recorded action on the incident, oldest first, and its state now."""

    incident_id: str
    state: dict[str, Any]
    count: int
    events: list[dict[str, Any]]


_ACTED = {
    200: {"model": Handled, "description": "The action was recorded"},
    **error_responses(*GUARDED, 400, 404),
}


def _via(principal: Principal) -> str:
    return f"api:key {principal.key_id}" if principal.key_id else "api:session"


async def _act(
    request: Request,
    incident_id: str,
    principal: Principal,
    action: str,
    comment: str = "",
    **fields: str | None,
) -> Handled:
    """Check that the caller may see the incident, then record ``action`` on it."""
    await visible_incident(request, incident_id, principal)
    log: HandlingLog = request.app.state.handling
    assignees = Assignees()
    if action == "assign":
        security, settings = request.app.state.security, request.app.state.settings
        assignees = await run_in_threadpool(
            Assignees.load, security.identity, settings.alerting_dir
        )
    request.state.params = params = {
        "incident_id": incident_id,
        "action": action,
        "comment_chars": len(comment),
    }
    event, state = await run_in_threadpool(
        lambda: log.record(
            incident_id,
            action,
            principal.user,
            via=_via(principal),
            comment=comment,
            assignees=assignees,
            **fields,
        )
    )
    notifier: Notifier = request.app.state.notices
    notifier.submit(event)
    # Checked by now (a known assignee, a listed severity): fit for the audit entry.
    params.update({k: v for k, v in fields.items() if v is not None}, event_id=event.event_id)
    request.state.rows = 1
    return Handled(event=event.as_dict(), state=state.as_dict())


@router.post("/{incident_id}/ack", summary="Acknowledge an incident", responses=_ACTED)
async def acknowledge(
    request: Request,
    incident_id: IncidentId,
    principal: Annotated[Principal, Depends(requires(HANDLE_SCOPE))],
    body: Note | None = None,
) -> Handled:
    """Take the incident: open → acknowledged (its first acknowledgement is its MTTA)."""
    return await _act(request, incident_id, principal, "acknowledge", body.comment if body else "")


@router.post("/{incident_id}/assign", summary="Assign an incident", responses=_ACTED)
async def assign(
    request: Request,
    incident_id: IncidentId,
    principal: Annotated[Principal, Depends(requires(HANDLE_SCOPE))],
    body: Assignment,
) -> Handled:
    """Give the incident to a user who handles incidents or to an on-call group."""
    return await _act(
        request,
        incident_id,
        principal,
        "assign",
        body.comment,
        assignee=body.assignee,
        assignee_kind=body.kind,
    )


@router.post("/{incident_id}/comment", summary="Comment on an incident", responses=_ACTED)
async def comment(
    request: Request,
    incident_id: IncidentId,
    principal: Annotated[Principal, Depends(requires(COMMENT_SCOPE))],
    body: CommentBody,
) -> Handled:
    """Add a comment; department viewers may comment on their departments' incidents."""
    return await _act(request, incident_id, principal, "comment", body.text)


@router.post("/{incident_id}/severity", summary="Change an incident's severity", responses=_ACTED)
async def severity(
    request: Request,
    incident_id: IncidentId,
    principal: Annotated[Principal, Depends(requires(HANDLE_SCOPE))],
    body: SeverityChange,
) -> Handled:
    """Override the severity convergence gave the incident (not once it is resolved)."""
    return await _act(
        request, incident_id, principal, "severity", body.comment, severity=body.severity
    )


@router.post("/{incident_id}/resolve", summary="Resolve an incident", responses=_ACTED)
async def resolve(
    request: Request,
    incident_id: IncidentId,
    principal: Annotated[Principal, Depends(requires(HANDLE_SCOPE))],
    body: Note | None = None,
) -> Handled:
    """Close the incident (its standing resolution is its MTTR); reopen undoes it."""
    return await _act(request, incident_id, principal, "resolve", body.comment if body else "")


@router.post("/{incident_id}/reopen", summary="Reopen a resolved incident", responses=_ACTED)
async def reopen(
    request: Request,
    incident_id: IncidentId,
    principal: Annotated[Principal, Depends(requires(HANDLE_SCOPE))],
    body: Note | None = None,
) -> Handled:
    """Resolved → open again (say why in the comment)."""
    return await _act(request, incident_id, principal, "reopen", body.comment if body else "")


@router.get(
    "/{incident_id}/history",
    summary="Who handled an incident, and when",
    responses={
        200: {"model": History, "description": "The actions, oldest first"},
        **error_responses(*GUARDED, 404),
    },
)
async def history(
    request: Request,
    incident_id: IncidentId,
    principal: Annotated[Principal, Depends(requires("incidents:read"))],
) -> History:
    """Every action on the incident with its actor, time and fields, and the state now."""
    await visible_incident(request, incident_id, principal)
    log: HandlingLog = request.app.state.handling
    events = await run_in_threadpool(log.events, [incident_id])
    state = fold(events).get(incident_id, HandlingState(incident_id))
    request.state.rows = len(events)
    return History(
        incident_id=incident_id,
        state=state.as_dict(),
        count=len(events),
        events=[e.as_dict() for e in events],
    )
