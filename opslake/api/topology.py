"""The portal's topology view and entity pages (S5.2f): business → app → service → VM → host,
coloured by health now, each CI linking to its page.

Like every portal page, these read through the data API in process as the signed-in user
(``GET /v1/topology``, ``GET /v1/entities/{id}``), so a department viewer's graph holds only its
departments' and businesses' CIs because the API gives it no other. The tree is nested HTML
lists (no script; the portal's policy allows none), drawn by ``topology.css``, served here and
allowed by the same policy as the portal's stylesheet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from opslake.api.portal import Viewer, _context, _render, error_page, page

router = APIRouter(include_in_schema=False, tags=["portal"])
STYLESHEET = Path(__file__).parent / "templates" / "topology.css"
#: Levels drawn below a root (app → service → container/VM → host → switch/storage).
MAX_DEPTH = 5
#: Health statuses from best to worst (opslake.kpi.health), then "unknown" (no score yet).
STATUSES = ("healthy", "degraded", "critical")
NO_BUSINESS = "—"
_ENTITY = r"^[A-Za-z0-9_.\-]{1,128}$"


@dataclass
class Node:
    """One CI in the drawn tree, with the CIs it runs on or depends on below it."""

    entity_id: str
    name: str
    type: str
    status: str
    score: float | None
    alerts: int
    children: list[Node] = field(default_factory=list)


def status_of(health: Mapping[str, Any] | None) -> str:
    """The CI's health status now, or ``unknown`` without a score."""
    status = (health or {}).get("status")
    return status if status in STATUSES else "unknown"


def worst(statuses: list[str]) -> str:
    """The worst known status of ``statuses`` (``unknown`` when none is known)."""
    known = [s for s in statuses if s in STATUSES]
    return max(known, key=STATUSES.index) if known else "unknown"


def forest(graph: Mapping[str, Any]) -> list[tuple[str, str, list[Node]]]:
    """``GET /v1/topology``'s nodes and edges as trees, grouped by business: each group's
    name, worst status and roots (CIs nothing shown runs on or depends on)."""
    nodes = {n["entity_id"]: n for n in graph["nodes"]}
    below: dict[str, list[str]] = {}
    above: set[str] = set()
    for edge in graph["edges"]:
        below.setdefault(edge["src"], []).append(edge["dst"])
        above.add(edge["dst"])

    def grow(entity_id: str, path: frozenset[str]) -> Node:
        n = nodes[entity_id]
        health = n.get("health") or {}
        node = Node(
            entity_id,
            n.get("name") or entity_id,
            n.get("type") or "",
            status_of(health),
            health.get("health_score"),
            health.get("firing_alerts") or 0,
        )
        if len(path) < MAX_DEPTH:
            node.children = [
                grow(child, path | {child})
                for child in sorted(below.get(entity_id, ()))
                if child not in path
            ]
        return node

    groups: dict[str, list[Node]] = {}
    for entity_id in sorted(set(nodes) - above):
        business = nodes[entity_id].get("business") or NO_BUSINESS
        groups.setdefault(business, []).append(grow(entity_id, frozenset({entity_id})))
    return [
        (business, worst(_statuses(roots)), roots)
        for business, roots in sorted(groups.items(), key=lambda g: (g[0] == NO_BUSINESS, g[0]))
    ]


def _statuses(roots: list[Node]) -> list[str]:
    out, todo = [], list(roots)
    while todo:
        node = todo.pop()
        out.append(node.status)
        todo.extend(node.children)
    return out


@router.get("/topology")
async def topology(
    request: Request,
    business: Annotated[str | None, Query(max_length=200)] = None,
    root: Annotated[str | None, Query(pattern=_ENTITY)] = None,
) -> Response:
    """The topology the user may see, optionally of one business or around one CI."""

    async def build(viewer: Viewer) -> Response:
        graph = await viewer.api.get("/v1/topology", business=business, root=root)
        if not graph.ok:
            return error_page(graph.status, graph.error, graph.fix, viewer.language)
        counts = {s: 0 for s in (*STATUSES, "unknown")}
        for n in graph.body["nodes"]:
            counts[status_of(n.get("health"))] += 1
        return page(
            "topology.html",
            language=viewer.language,
            **_context(
                request,
                viewer,
                groups=forest(graph.body),
                nodes=len(graph.body["nodes"]),
                edges=len(graph.body["edges"]),
                counts=counts,
                business=business,
                root=root,
            ),
        )

    return await _render(request, build)


@router.get("/entities/{entity_id}")
async def entity(
    request: Request, entity_id: Annotated[str, PathParam(pattern=_ENTITY)]
) -> Response:
    """One CI as ``GET /v1/entities/{id}`` shows it to the user."""

    async def build(viewer: Viewer) -> Response:
        answer = await viewer.api.get(f"/v1/entities/{quote(entity_id, safe='')}")
        if not answer.ok:
            return error_page(answer.status, answer.error, answer.fix, viewer.language)
        body = answer.body
        return page(
            "entity.html",
            language=viewer.language,
            **_context(request, viewer, e=body, status=status_of(body.get("health"))),
        )

    return await _render(request, build)


@router.get("/topology.css")
async def stylesheet() -> FileResponse:
    """The topology's stylesheet (the portal's policy allows the service's own styles)."""
    return FileResponse(
        STYLESHEET, media_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )
