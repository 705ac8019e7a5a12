"""The portal (S5.1a-d): after the one sign-in, a page per role at ``/`` and a personal workbench.

Plain server-rendered HTML (Jinja2, autoescaped; no script at all), served by the data service
under a content security policy that allows only its own stylesheet and forms. The page reads
its data **through the data API, in process, as the signed-in user** (:class:`ApiReader`): the
same scopes, row scoping (a department viewer's incidents and assets are filtered by the API),
quota and audit entry per read as any other client, so nothing here re-implements who may see
what. Links into Superset's screens and the Dagster UI go through their doors
(``opslake.api.gateway``) and are shown only to roles the door admits.

The workbench (pinned screens and metrics, the user's language; ``opslake.api.workbench``) and
incidents (acknowledge, assign, comment, change severity, resolve, reopen) are changed by form
POSTs, each checked by :func:`_form_session`: the ``Origin`` must be sent and be this service's
own, the session comes from the cookie only after that check, and the form must carry the
session's CSRF token (:func:`csrf_token`). A handling form is then sent to the API's own
``POST /v1/incidents/{id}/…`` in process as the user, so its rules, row scope, audit and
notices are the API's. Pages are in the user's language (``opslake.api.i18n``), and screen
links open the screen's version in it when the bundle has one. Without a live session a page
redirects to ``/login?next=<the page>``; errors are pages without a trace.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

import httpx
import yaml
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from opslake.alerting.handling import ACTIONS, COMMENT_SCOPE, HANDLE_SCOPE, SEVERITIES, Assignees
from opslake.api.gateway import Door, doors
from opslake.api.i18n import LABELS, LANGUAGE_NAMES, translator
from opslake.api.signin import MAX_FORM_BYTES, SESSION_COOKIE, origin, safe_next, same_origin
from opslake.api.workbench import DEFAULT_LANGUAGE, KINDS, LANGUAGES, Workbench
from opslake.errors import AuthError, InputError, OpsLakeError
from opslake.screens.bundle import DASHBOARDS_DIR
from opslake.security.roles import SCOPED_BREAKDOWNS, Principal
from opslake.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False, tags=["portal"])

_HERE = Path(__file__).parent
_TEMPLATES = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
STYLESHEET = _HERE / "templates" / "portal.css"
#: No script, no frames, nothing from elsewhere: the stylesheet and forms are the service's own.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: What each role's page shows, in order; the workbench and quick links come on every page.
SECTIONS: dict[str, tuple[str, ...]] = {
    "ops_engineer": ("my_incidents", "my_alerts", "incidents"),
    "leadership": ("cockpit", "incidents"),
    "data_engineer": ("pipeline", "quality", "incidents"),
    "dept_viewer": ("departments",),
    "admin": (
        "my_incidents",
        "my_alerts",
        "cockpit",
        "pipeline",
        "quality",
        "incidents",
        "administration",
    ),
}
#: The cockpit's headline metrics (catalog ids).
KPIS = ("service.sla.attainment", "service.incident.mtta", "service.incident.mttr")
#: The leadership screen the cockpit opens.
COCKPIT_SCREEN = "leadership"
#: Incidents and alerts shown per list (the counts say how many there are).
LIST_ROWS = 20
#: Incidents whose alerts "my alerts" reads (one API read each).
ALERT_INCIDENTS = 5
#: How far back a metric's latest value is looked for (the API's longest range).
METRIC_LOOKBACK = timedelta(days=366)
#: A screen's slug in each language: ``<slug>`` (zh-CN), ``<slug>-zh-tw``, ``<slug>-en``.
SLUG_SUFFIXES = {"zh-CN": "", "zh-TW": "-zh-tw", "en": "-en"}
#: The incident page's forms (the API's paths) and the handling action each records.
FORMS = {
    "ack": "acknowledge",
    "assign": "assign",
    "severity": "severity",
    "resolve": "resolve",
    "reopen": "reopen",
    "comment": "comment",
}
#: Administration is done with the CLI (TOTP-checked), not from a browser form.
ADMIN_COMMANDS = (
    "opslake security add-user NAME --role ROLE --admin ADMIN",
    "opslake security users",
    "opslake security enrol-totp NAME --admin ADMIN",
    "opslake security create-key USER --admin ADMIN --totp CODE",
    "opslake security keys",
    "opslake security revoke-key KEY_ID --admin ADMIN --totp CODE",
    "opslake audit verify",
)


@dataclass(frozen=True)
class Screen:
    """A Superset screen (dashboard) the portal links to, named by its zh-CN slug."""

    slug: str
    title: str
    #: Language → (slug, title) of the screen's other-language versions in the bundle.
    versions: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def version(self, language: str) -> tuple[str, str]:
        """The slug and title to show in ``language`` (the zh-CN screen when it has none)."""
        return self.versions.get(language, (self.slug, self.title))


def screens(directory: Path = DASHBOARDS_DIR / "dashboards") -> dict[str, Screen]:
    """The screens of the exported dashboard bundle (the one ``opslake screens import`` loads),
    by zh-CN slug, each with the language versions the bundle holds."""
    titles = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        titles[doc["slug"]] = doc["dashboard_title"]
    suffixes = [s for s in SLUG_SUFFIXES.values() if s]
    return {
        slug: Screen(
            slug,
            title,
            {
                lang: (slug + suffix, titles[slug + suffix])
                for lang, suffix in SLUG_SUFFIXES.items()
                if suffix and slug + suffix in titles
            },
        )
        for slug, title in titles.items()
        if not any(slug.endswith(s) for s in suffixes)
    }


@dataclass
class Portal:
    """What the portal keeps for the service's life: the workbench, the doors and the screens."""

    workbench: Workbench
    doors: list[Door]
    screens: dict[str, Screen]

    @classmethod
    def from_settings(cls, settings: Settings) -> Portal:
        """The portal of ``settings``: its state directory's workbench and its open doors."""
        return cls(Workbench(settings.state_dir, settings.database_url), doors(settings), screens())


@dataclass(frozen=True)
class Answer:
    """One answer of the data API."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.body.get("rows", []) if self.ok else []

    @property
    def error(self) -> str:
        """What the API said went wrong (its ``{"error", "fix"}``)."""
        if isinstance(self.body, dict) and "error" in self.body:
            return str(self.body["error"])
        return f"the data API answered {self.status}"

    @property
    def fix(self) -> str:
        """What the API said to do about it."""
        return str(self.body.get("fix", "")) if isinstance(self.body, dict) else ""

    @property
    def problem(self) -> dict[str, str | None]:
        """``error`` (None when it answered) and ``fix``, for a section of the page."""
        return {"error": None, "fix": ""} if self.ok else {"error": self.error, "fix": self.fix}


class ApiReader:
    """The data API asked in process as the signed-in user (bearer of the cookie's session).

    Each read (and each handling form's action) passes the audit middleware like any client's: authenticated, scope-checked,
    row-scoped, counted against the user's quota and audited with the rows it returned.
    """

    def __init__(self, request: Request, token: str) -> None:
        client = request.client
        transport = httpx.ASGITransport(
            app=request.app,
            raise_app_exceptions=False,
            client=(client.host, client.port) if client else ("127.0.0.1", 0),
        )
        self._client = httpx.AsyncClient(
            transport=transport,
            base_url="http://portal.local",
            headers={"Authorization": f"Bearer {token}"},
        )

    async def get(self, path: str, **params: object) -> Answer:
        """``GET path`` with ``params`` (None values left out)."""
        reply = await self._client.get(
            path, params={k: v for k, v in params.items() if v is not None}
        )
        return self._answer(reply)

    async def post(self, path: str, body: dict[str, Any]) -> Answer:
        """``POST path`` with the JSON ``body``."""
        return self._answer(await self._client.post(path, json=body))

    @staticmethod
    def _answer(reply: httpx.Response) -> Answer:
        try:
            body = reply.json()
        except ValueError:
            body = None
        return Answer(reply.status_code, body)

    async def aclose(self) -> None:
        """Close the in-process client."""
        await self._client.aclose()


@dataclass
class View:
    """What one page shows, handed to the template."""

    principal: Principal
    sections: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict)


def _scheme(settings: Settings) -> str:
    return "https" if settings.tls_cert else "http"


def _door_links(request: Request, portal: Portal, principal: Principal) -> dict[str, str]:
    """Door name → its root URL on the host the page was asked for, for doors that admit
    ``principal`` (the others' links are not shown)."""
    settings: Settings = request.app.state.settings
    host = request.url.hostname or "127.0.0.1"
    return {
        door.name: origin(_scheme(settings), host, door.port)
        for door in portal.doors
        if door.gate(principal) is None
    }


def _screen_links(
    door_links: dict[str, str], portal: Portal, language: str
) -> list[tuple[Screen, str]]:
    """Each screen (titled in ``language``) and its link through the Superset door to its
    version in ``language``."""
    if "superset" not in door_links:
        return []
    base = door_links["superset"]
    links = []
    for screen in portal.screens.values():
        slug, title = screen.version(language)
        links.append((Screen(screen.slug, title), f"{base}/superset/dashboard/{slug}/"))
    return links


async def _latest(api: ApiReader, principal: Principal, metric_id: str) -> dict[str, Any]:
    """A metric's newest values (one per department for a department viewer) with its name."""
    definition = await api.get(f"/v1/catalog/metrics/{quote(metric_id, safe='')}")
    if not definition.ok:
        return {"metric_id": metric_id, "error": definition.error}
    meta = definition.body
    grains = meta.get("grains") or ["1d"]
    step = "1d" if "1d" in grains else grains[-1]
    # A row-scoped reader may only ask for a breakdown of its own rows (the API filters them);
    # the coarsest such breakdown the metric has gives the fewest values.
    by = (
        next(
            (
                b
                for b in ("department", "business", "entity")
                if b in SCOPED_BREAKDOWNS and b in meta.get("dimensions", [])
            ),
            "entity",
        )
        if principal.row_scoped
        else "all"
    )
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    data = await api.get(
        f"/v1/metrics/{quote(metric_id, safe='')}/data",
        start=(end - METRIC_LOOKBACK).isoformat(),
        end=end.isoformat(),
        step=step,
        by=by,
    )
    out = {
        "metric_id": metric_id,
        "name": meta.get("name_zh_cn"),
        "name_en": meta.get("name_en"),
        "name_zh_tw": meta.get("name_zh_tw"),
        "unit": meta.get("unit") or "",
        "step": step,
    }
    if not data.ok:
        return {**out, "error": data.error}
    rows = data.rows
    if not rows:
        return {**out, "error": "no value in the last year"}
    newest = max(r["bucket_start"] for r in rows)
    values = [
        (r.get(by, "") if by != "all" else "", r["value"])
        for r in rows
        if r["bucket_start"] == newest
    ]
    return {**out, "at": newest, "values": values}


def _open(row: dict[str, Any]) -> bool:
    """Still firing and not resolved by a person."""
    return row.get("status") == "firing" and row.get("handling_status") != "resolved"


def _mine(row: dict[str, Any], user: str) -> bool:
    """Assigned to ``user`` and not resolved by a person."""
    return (
        row.get("assignee") == user
        and row.get("assignee_kind") == "user"
        and row.get("handling_status") != "resolved"
    )


async def _incidents(api: ApiReader, view: View) -> None:
    """The newest day's incidents the user may see, mine and open ones, and their alerts."""
    answer = await api.get("/v1/incidents")
    user = view.principal.user
    mine = [r for r in answer.rows if _mine(r, user)]
    view.data["incidents"] = {
        **answer.problem,
        "all": answer.rows,
        "mine": mine,
        "open": [r for r in answer.rows if _open(r)],
    }
    if "my_alerts" in view.sections:
        alerts = await asyncio.gather(
            *(api.get(f"/v1/incidents/{r['incident_id']}/alerts") for r in mine[:ALERT_INCIDENTS])
        )
        view.data["alerts"] = list(zip(mine[:ALERT_INCIDENTS], alerts, strict=True))


async def _cockpit(api: ApiReader, view: View) -> None:
    view.data["kpis"] = await asyncio.gather(*(_latest(api, view.principal, m) for m in KPIS))


async def _quality(api: ApiReader, view: View) -> None:
    """The newest checked day's checks, scored per table (share of checks passed)."""
    answer = await api.get("/v1/quality/results")
    tables: dict[tuple[str, str], list[bool]] = {}
    for row in answer.rows:
        tables.setdefault((row["layer"], row["table"]), []).append(bool(row["passed"]))
    view.data["quality"] = {
        **answer.problem,
        "day": answer.rows[0]["day"] if answer.rows else None,
        "tables": [(layer, table, sum(p), len(p)) for (layer, table), p in sorted(tables.items())],
        "failed": [r for r in answer.rows if not r["passed"]],
    }


async def _departments(api: ApiReader, view: View) -> None:
    """The user's departments' services (businesses and their CIs) and incidents."""
    assets = await api.get("/v1/assets")
    services: dict[tuple[str, str], int] = {}
    for row in assets.rows:
        key = (row.get("department") or "", row.get("business") or "")
        services[key] = services.get(key, 0) + 1
    view.data["services"] = {**assets.problem, "rows": sorted(services.items())}


def _pipeline_runs(dagster_home: Path) -> list[dict[str, Any]]:
    """The newest run of each job recorded in the Dagster instance under ``dagster_home``."""
    if not (dagster_home / "dagster.yaml").exists():
        return []
    # Imported here: Dagster costs seconds and much memory to import, and only the pipeline
    # section of a data engineer's or administrator's page needs it.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.get_run_records(limit=500)
    newest: dict[str, dict[str, Any]] = {}
    for record in records:  # newest first
        run = record.dagster_run
        if run.job_name in newest:
            continue
        newest[run.job_name] = {
            "job": run.job_name,
            "status": run.status.value,
            "partition": run.tags.get("dagster/partition", ""),
            "run_id": run.run_id,
            "started": _when(record.start_time),
            "ended": _when(record.end_time),
        }
    return sorted(newest.values(), key=lambda r: r["job"])


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


async def _pipeline(request: Request, view: View) -> None:
    settings: Settings = request.app.state.settings
    try:
        runs = await run_in_threadpool(_pipeline_runs, settings.dagster_home)
    except Exception as exc:  # the instance's storage is the UI's; say what it said
        log.exception("reading the Dagster instance at %s", settings.dagster_home)
        view.data["pipeline"] = {
            "error": f"the Dagster instance could not be read: {exc}",
            "runs": [],
        }
        return
    view.data["pipeline"] = {"error": None, "runs": runs}


async def _workbench(api: ApiReader, portal: Portal, view: View, language: str) -> None:
    pins = await run_in_threadpool(portal.workbench.pins, view.principal.user)
    metrics = [p.ref for p in pins if p.kind == "metric"]
    catalog, *values = await asyncio.gather(
        api.get("/v1/catalog/metrics"), *(_latest(api, view.principal, m) for m in metrics)
    )
    view.data["workbench"] = {
        "screens": [
            Screen(p.ref, portal.screens.get(p.ref, Screen(p.ref, p.ref)).version(language)[1])
            for p in pins
            if p.kind == "screen"
        ],
        "metrics": values,
        "catalog": [r["metric_id"] for r in catalog.rows],
    }


def _loaders(request: Request, viewer: Viewer, view: View) -> Iterable[Callable[[], Any]]:
    """What to read for the page's sections."""
    api, sections = viewer.api, set(view.sections)
    if sections & {"my_incidents", "departments", "cockpit", "incidents"}:
        yield lambda: _incidents(api, view)
    if "cockpit" in sections:
        yield lambda: _cockpit(api, view)
    if "quality" in sections:
        yield lambda: _quality(api, view)
    if "departments" in sections:
        yield lambda: _departments(api, view)
    if "pipeline" in sections:
        yield lambda: _pipeline(request, view)
    yield lambda: _workbench(api, request.app.state.portal, view, viewer.language)


def page(
    template: str, status_code: int = 200, language: str = DEFAULT_LANGUAGE, **context: Any
) -> HTMLResponse:
    """``template`` rendered in ``language`` with ``context``, under the portal's headers."""
    body = _TEMPLATES.get_template(template).render(
        lang=language, t=translator(language), labels=LABELS, **context
    )
    return HTMLResponse(
        body,
        status_code=status_code,
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": CSP,
        },
    )


def error_page(
    status: int, error: str, fix: str = "", language: str = DEFAULT_LANGUAGE
) -> HTMLResponse:
    """A clear error page: what went wrong and what to do, never a trace."""
    return page("error.html", status, language, status=status, error=error, fix=fix)


def _failed(status: int, exc: OpsLakeError, language: str = DEFAULT_LANGUAGE) -> HTMLResponse:
    """The error page of an OpsLake error (its text is ``what; what to do``)."""
    error, _, fix = str(exc).partition("; ")
    return error_page(status, error, fix, language)


def _to_sign_in(request: Request, target: str | None = None) -> RedirectResponse:
    """To the sign-in page, which comes back to ``target`` (default: the page asked for)."""
    if target is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


def csrf_token(session: str) -> str:
    """The forms' CSRF token of a session: an HMAC keyed by the session token, so it is bound
    to that session, needs no store, and tells nothing about the token it is made from."""
    return hmac.new(session.encode(), b"opslake-portal-form", hashlib.sha256).hexdigest()


@dataclass
class Viewer:
    """The signed-in user a page is made for: reading through the API as them, in their
    language, with their session's CSRF token for the page's forms."""

    principal: Principal
    api: ApiReader
    language: str
    csrf: str


def _signed_in(request: Request) -> tuple[Principal, str] | None:
    """The cookie's principal and session token (checked by the audit middleware for this
    GET), or None when there is no live session or the credential is not a person's."""
    principal: Principal = request.state.principal
    token = request.cookies.get(SESSION_COOKIE)
    if principal.role == "anonymous" or principal.key_id is not None or not token:
        return None
    return principal, token


async def _render(request: Request, build: Callable[[Viewer], Any]) -> Response:
    """A page for the signed-in user, ``build`` reading through the API as them."""
    signed_in = _signed_in(request)
    if signed_in is None:
        return _to_sign_in(request)
    return await _respond(request, *signed_in, build)


async def _respond(
    request: Request, principal: Principal, token: str, build: Callable[[Viewer], Any]
) -> Response:
    """``build``'s page for ``principal`` (session ``token``), or an error page."""
    portal: Portal = request.app.state.portal
    language = await run_in_threadpool(portal.workbench.language, principal.user)
    api = ApiReader(request, token)
    try:
        return await build(Viewer(principal, api, language, csrf_token(token)))
    except OpsLakeError as exc:
        return _failed(400 if isinstance(exc, InputError) else 503, exc, language)
    except Exception:  # a page never shows a trace; the service log keeps it
        log.exception("the portal page %s failed", request.url.path)
        return error_page(
            500,
            "this page could not be built",
            "try again; if it persists the service log says why",
            language,
        )
    finally:
        await api.aclose()


def _context(request: Request, viewer: Viewer, **more: Any) -> dict[str, Any]:
    portal: Portal = request.app.state.portal
    door_links = _door_links(request, portal, viewer.principal)
    return {
        "principal": viewer.principal,
        "doors": door_links,
        "screens": _screen_links(door_links, portal, viewer.language),
        "now": datetime.now(UTC),
        "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
        "csrf": viewer.csrf,
        "here": request.url.path,
        **more,
    }


@router.get("/")
async def home(request: Request) -> Response:
    """The signed-in user's page: their role's sections and their workbench."""

    async def build(viewer: Viewer) -> Response:
        principal = viewer.principal
        sections = SECTIONS.get(principal.role)
        if sections is None:
            return error_page(
                403,
                f"role {principal.role} has no portal page",
                "this role is for machine senders; sign in as a person",
                viewer.language,
            )
        view = View(principal, sections)
        await asyncio.gather(*(load() for load in _loaders(request, viewer, view)))
        context = _context(
            request,
            viewer,
            view=view,
            data=view.data,
            cockpit=COCKPIT_SCREEN,
            admin_commands=ADMIN_COMMANDS,
            kinds=KINDS,
            list_rows=LIST_ROWS,
        )
        return page("portal.html", language=viewer.language, **context)

    return await _render(request, build)


IncidentId = Annotated[str, PathParam(pattern=r"^INC-[0-9a-f]{12}$")]


@router.get("/incidents/{incident_id}")
async def incident(
    request: Request,
    incident_id: IncidentId,
    done: Annotated[str | None, Query(max_length=16)] = None,
) -> Response:
    """One incident: its handling state, history and alerts as the API shows them to the user,
    and the handling forms the user's role may use (``done``: the action just recorded)."""
    return await _render(
        request,
        lambda viewer: _incident_page(
            request, viewer, incident_id, done=done if done in ACTIONS else None
        ),
    )


def _forms(principal: Principal, status: str) -> list[str]:
    """The handling forms ``principal`` may use on an incident whose handling is ``status``
    (the API checks again; this only leaves out what it would refuse)."""
    forms = []
    if principal.allows(HANDLE_SCOPE):
        forms += (
            ["reopen"]
            if status == "resolved"
            else (["ack"] if status == "open" else []) + ["assign", "severity", "resolve"]
        )
    if principal.allows(COMMENT_SCOPE):
        forms.append("comment")
    return forms


async def _incident_page(
    request: Request,
    viewer: Viewer,
    incident_id: str,
    *,
    done: str | None = None,
    refused: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    """The incident page; ``refused``: the action the API just refused, its error and fix."""
    history, alerts = await asyncio.gather(
        viewer.api.get(f"/v1/incidents/{incident_id}/history"),
        viewer.api.get(f"/v1/incidents/{incident_id}/alerts"),
    )
    if not history.ok:
        return error_page(history.status, history.error, history.fix, viewer.language)
    forms = _forms(viewer.principal, history.body["state"]["handling_status"])
    assignees = Assignees()
    if "assign" in forms:
        settings: Settings = request.app.state.settings
        assignees = await run_in_threadpool(
            Assignees.load, request.app.state.security.identity, settings.alerting_dir
        )
    return page(
        "incident.html",
        status,
        viewer.language,
        **_context(
            request,
            viewer,
            incident_id=incident_id,
            history=history.body,
            alerts=alerts,
            forms=forms,
            assignees=assignees,
            severities=SEVERITIES,
            done=done,
            refused=refused,
        ),
    )


@router.get("/portal.css")
async def stylesheet() -> FileResponse:
    """The portal's stylesheet (the only style its policy allows)."""
    return FileResponse(
        STYLESHEET, media_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


async def _form(request: Request) -> dict[str, str] | None:
    """The POSTed form's fields, or None when it is larger than a form of this page."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


async def _form_session(
    request: Request, back: str
) -> tuple[Principal, str, dict[str, str]] | Response:
    """The user, session token and fields of a portal form, or the answer that refuses it.

    Stricter than the sign-in form: a browser always sends ``Origin`` on a form POST, so a
    request without one is no form of this page; the session comes from the cookie only after
    that, and the form must carry the session's CSRF token. Without a live session the user
    signs in and comes back to ``back``.
    """
    settings: Settings = request.app.state.settings
    sent_from = request.headers.get("origin")
    if sent_from is None or not same_origin(
        sent_from, _scheme(settings), request.headers.get("host", "")
    ):
        return error_page(
            403,
            "this form was not sent from this service's own page",
            "use the forms of the portal's pages",
        )
    token = request.cookies.get(SESSION_COOKIE)
    try:
        if not token:
            raise AuthError("no session")
        principal = await run_in_threadpool(request.app.state.security.identity.session, token)
    except AuthError:
        return _to_sign_in(request, back)
    # The audit entry names the user (the middleware takes no cookie on a POST).
    request.state.principal = principal
    form = await _form(request)
    if form is None:
        return error_page(413, "the form is too large")
    if not hmac.compare_digest(form.get("csrf", ""), csrf_token(token)):
        return error_page(
            403,
            "this form does not carry this session's token",
            "reload the page and send the form again",
        )
    return principal, token, form


@router.post("/workbench/{action}")
async def change_workbench(
    request: Request, action: Annotated[str, PathParam(pattern="^(pin|unpin)$")]
) -> Response:
    """Pin or unpin a screen or metric (form fields ``kind``, ``ref``), then back to ``/``."""
    checked = await _form_session(request, "/")
    if isinstance(checked, Response):
        return checked
    principal, token, form = checked
    kind, ref = form.get("kind", ""), form.get("ref", "").strip()
    # The audit entry says what was pinned.
    request.state.params = {"action": action, "kind": kind[:16], "ref": ref[:128]}
    portal: Portal = request.app.state.portal
    if action == "pin":
        refused = await _refuse_pin(request, portal, token, kind, ref)
        if refused:
            return error_page(400, refused, "pick a screen or metric the portal lists")
        try:
            await run_in_threadpool(portal.workbench.pin, principal.user, kind, ref)
        except InputError as exc:
            return _failed(400, exc)
    else:
        await run_in_threadpool(portal.workbench.unpin, principal.user, kind, ref)
    return RedirectResponse("/", status_code=303)


@router.post("/language")
async def choose_language(request: Request) -> Response:
    """Keep the user's language (form field ``lang``), then back to the page (``back``)."""
    checked = await _form_session(request, "/")
    if isinstance(checked, Response):
        return checked
    principal, _, form = checked
    language = form.get("lang", "")
    request.state.params = {"language": language[:16]}
    portal: Portal = request.app.state.portal
    try:
        await run_in_threadpool(portal.workbench.set_language, principal.user, language)
    except InputError as exc:
        return _failed(400, exc)
    back = form.get("back", "/")
    # Only a path of this service (never elsewhere: no open redirect).
    target = safe_next(back, scheme="", host="", ports=()) if back.startswith("/") else "/"
    return RedirectResponse(target, status_code=303)


def _handling_body(form: str, fields: dict[str, str]) -> dict[str, Any]:
    """The API's JSON body for a handling form's ``fields``."""
    if form == "comment":
        return {"text": fields.get("text", "")}
    body: dict[str, Any] = {"comment": fields.get("comment", "")}
    if form == "assign":
        # The select's values are ``user:<name>`` and ``group:<name>``.
        kind, _, name = fields.get("assignee", "").partition(":")
        body |= {"assignee": name, "kind": kind if kind in ("user", "group") else "user"}
    elif form == "severity":
        body["severity"] = fields.get("severity", "")
    return body


@router.post("/incidents/{incident_id}/{form}")
async def handle(
    request: Request,
    incident_id: IncidentId,
    form: Annotated[str, PathParam(pattern="^(" + "|".join(FORMS) + ")$")],
) -> Response:
    """A handling form: the API's ``POST /v1/incidents/{id}/{form}`` as the user; back to the
    incident page, which shows the action recorded or why the API refused it and what to do."""
    page_path = f"/incidents/{incident_id}"
    checked = await _form_session(request, page_path)
    if isinstance(checked, Response):
        return checked
    principal, token, fields = checked
    action = FORMS[form]
    request.state.params = {"incident_id": incident_id, "action": action}

    async def build(viewer: Viewer) -> Response:
        answer = await viewer.api.post(
            f"/v1/incidents/{incident_id}/{form}", _handling_body(form, fields)
        )
        if answer.ok:
            return RedirectResponse(f"{page_path}?done={action}", status_code=303)
        if answer.status == 404:  # not an incident the user may see: nothing to show
            return error_page(404, answer.error, answer.fix, viewer.language)
        refused = {"action": action, "error": answer.error, "fix": answer.fix}
        return await _incident_page(
            request, viewer, incident_id, refused=refused, status=answer.status
        )

    return await _respond(request, principal, token, build)


async def _refuse_pin(
    request: Request, portal: Portal, token: str, kind: str, ref: str
) -> str | None:
    """Why ``ref`` cannot be pinned as a ``kind`` (None: it can)."""
    if kind == "screen":
        return None if ref in portal.screens else f"there is no screen {ref!r}"
    if kind != "metric":
        return f"cannot pin a {kind!r}; pin a screen or a metric"
    # The catalog as the user may read it decides what exists.
    api = ApiReader(request, token)
    try:
        answer = await api.get(f"/v1/catalog/metrics/{quote(ref, safe='')}")
    finally:
        await api.aclose()
    # The id the catalog answered for, not only a 200: the path is the user's text.
    if answer.ok and answer.body.get("metric_id") == ref:
        return None
    return f"there is no metric {ref!r} in the catalog you may read"
