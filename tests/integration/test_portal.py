"""The portal at ``/`` (issue 21, build 1): a page per role over the shared estate, row scope as
the API applies it, the workbench's pins kept across app objects and refused without Origin."""

from __future__ import annotations

import html
from dataclasses import dataclass

import pyotp
import pytest
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.api.signin import SESSION_COOKIE
from opslake.security.audit import AuditLog
from opslake.security.identity import IdentityStore
from opslake.settings import Settings

PASSWORD = "Portal-test-pass-1"
SAME = {"Origin": "http://testserver"}
SUPERSET, DAGSTER = "http://testserver:8090", "http://testserver:3000"


@dataclass
class Estate:
    """The shared estate's service with a user of every role."""

    settings: Settings
    app: object
    totp: str
    department: str
    own: set[str]
    others: set[str]


def _incidents_by_department(client: TestClient) -> tuple[str, set[str], set[str]]:
    """A department with incidents of its own on the newest day, those, and all the others."""
    rows = client.get("/v1/incidents").json()["rows"]
    single = {}
    for row in rows:
        if len(row["departments"]) == 1:
            single.setdefault(row["departments"][0], set()).add(row["incident_id"])
    department = min(single, key=lambda d: (len(single[d]), d))
    return department, single[department], {r["incident_id"] for r in rows} - single[department]


@pytest.fixture(scope="module")
def estate_portal(own_estate) -> Estate:
    base, _ = own_estate
    settings = Settings.from_env(
        {
            "OPSLAKE_HOME": base.home,
            "OPSLAKE_DAGSTER_DOOR_PORT": "3000",
            "OPSLAKE_SUPERSET_DOOR_PORT": "8090",
        }
    )
    store = IdentityStore.sealed(settings)
    # Names of their own: the estate's identity store is shared by other modules.
    for user, role in (
        ("pt-olga", "ops_engineer"),
        ("pt-lee", "leadership"),
        ("pt-dan", "data_engineer"),
        ("pt-ada", "admin"),
    ):
        store.add_user(user, role, PASSWORD)
    totp = store.enrol_totp("pt-ada")[0]
    app = create_app(settings)
    with _signed_in(app, "pt-olga") as ops:
        department, own, others = _incidents_by_department(ops)
    store.add_user("pt-dora", "dept_viewer", PASSWORD, departments=[department])
    return Estate(settings, app, totp, department, own, others)


def _signed_in(app: object, user: str, totp: str | None = None) -> TestClient:
    client = TestClient(app)
    form = {"user": user, "password": PASSWORD, "next": "/"}
    if totp:
        form["totp"] = pyotp.TOTP(totp).now()
    signed = client.post("/login", data=form, headers=SAME, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/", signed.text
    return client


def _page(e: Estate, user: str) -> str:
    with _signed_in(e.app, user, e.totp if user == "pt-ada" else None) as client:
        page = client.get("/")
    assert page.status_code == 200, page.text
    assert "script" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    return page.text


def test_a_visitor_without_a_session_is_sent_to_the_sign_in_page(estate_portal: Estate) -> None:
    client = TestClient(estate_portal.app)
    assert client.get("/", follow_redirects=False).headers["location"] == "/login?next=%2F"
    r = client.get("/incidents/INC-0123456789ab", follow_redirects=False)
    assert (
        r.status_code == 303
        and r.headers["location"] == "/login?next=%2Fincidents%2FINC-0123456789ab"
    )
    # Signing in from the plain sign-in page lands on the portal.
    assert 'name="next" value="/"' in client.get("/login").text


def test_an_ops_engineer_sees_the_incidents_assigned_to_them_and_no_admin_links(
    estate_portal: Estate,
) -> None:
    e = estate_portal
    with _signed_in(e.app, "pt-olga") as client:
        rows = client.get("/v1/incidents").json()["rows"]
        target = max(r["incident_id"] for r in rows if r["handling_status"] != "resolved")
        token = client.cookies[SESSION_COOKIE]
        assigned = client.post(
            f"/v1/incidents/{target}/assign",
            json={"assignee": "pt-olga", "kind": "user"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert assigned.status_code == 200, assigned.text
        page = client.get("/").text
    mine = page.split('id="assigned-to-me"')[1].split("</table>")[0]
    assert f'data-incident="{target}"' in mine
    alerts = page.split('id="my-alerts"')[1].split("</section>")[0]
    assert f"/incidents/{target}" in alerts and "<td>" in alerts  # its alerts, from the API
    assert 'id="open-incidents"' in page or "Open (0)" in page
    assert 'id="administration"' not in page and "opslake security" not in page
    assert DAGSTER not in page  # the Dagster door does not admit ops engineers
    assert f"{SUPERSET}/superset/dashboard/ops/" in page
    assert 'id="pipeline"' not in page and 'id="cockpit"' not in page
    # Every page view is audited, and so is each read the page made through the API.
    entries = [
        (x["who"], x["action"], x["status"])
        for x in AuditLog(e.settings.state_dir / "audit").read()
    ]
    assert ("pt-olga", "GET /", 200) in entries
    assert ("pt-olga", "GET /v1/incidents/{incident_id}/alerts", 200) in entries


def test_leadership_gets_the_cockpit(estate_portal: Estate) -> None:
    page = _page(estate_portal, "pt-lee")
    cockpit = page.split('id="cockpit"')[1].split("</section>")[0]
    for metric in ("service.sla.attainment", "service.incident.mtta", "service.incident.mttr"):
        kpi = cockpit.split(f'data-metric="{metric}"')[1].split("</div>")[0]
        assert 'class="value"' in kpi and "problem" not in kpi, kpi
    assert 'id="open-incidents-kpi"' in cockpit
    assert f'href="{SUPERSET}/superset/dashboard/leadership/"' in cockpit
    assert 'id="my-incidents"' not in page and DAGSTER not in page


def test_a_data_engineer_sees_pipeline_runs_quality_and_the_dagster_door(
    estate_portal: Estate,
) -> None:
    page = _page(estate_portal, "pt-dan")
    pipeline = page.split('id="pipeline"')[1].split("</section>")[0]
    assert "daily_pipeline" in pipeline and "SUCCESS" in pipeline
    quality = page.split('id="quality"')[1].split("</section>")[0]
    assert "silver" in quality and " / " in quality
    assert f'href="{DAGSTER}/"' in page
    assert 'id="administration"' not in page


def test_a_department_viewer_sees_only_its_departments_incidents(estate_portal: Estate) -> None:
    e = estate_portal
    with _signed_in(e.app, "pt-dora") as client:
        page = client.get("/").text
        api = {r["incident_id"] for r in client.get("/v1/incidents").json()["rows"]}
        other = client.get(f"/incidents/{min(e.others)}")
        own = client.get(f"/incidents/{min(e.own)}")
    shown = {part.split('"')[0] for part in page.split('data-incident="')[1:]}
    assert shown == e.own == api
    assert not shown & e.others
    assert e.department in page.split('id="departments"')[1]
    assert other.status_code == 404 and "Traceback" not in other.text
    assert "no incident" in other.text and other.headers["content-type"].startswith("text/html")
    assert own.status_code == 200 and min(e.own) in own.text
    assert DAGSTER not in page and 'id="administration"' not in page


def test_an_administrator_sees_every_section_and_the_admin_commands(estate_portal: Estate) -> None:
    page = _page(estate_portal, "pt-ada")
    for section in (
        "my-incidents",
        "my-alerts",
        "cockpit",
        "pipeline",
        "quality",
        "incidents",
        "administration",
        "workbench",
        "quick-links",
    ):
        assert f'id="{section}"' in page, section
    assert "opslake security create-key" in page
    assert f'href="{DAGSTER}/"' in page and f"{SUPERSET}/dashboard/list/" in page


def test_pins_are_kept_across_app_objects_and_refused_without_origin(estate_portal: Estate) -> None:
    e = estate_portal
    metric = "service.sla.attainment"
    with _signed_in(e.app, "pt-lee") as client:
        form = {"kind": "metric", "ref": metric}
        for headers in ({}, {"Origin": "http://evil.example"}):
            refused = client.post(
                "/workbench/pin", data=form, headers=headers, follow_redirects=False
            )
            assert refused.status_code == 403 and "Traceback" not in refused.text
        assert 'class="pinned"' not in client.get("/").text
        unknown = client.post(
            "/workbench/pin", data={"kind": "metric", "ref": "no.such"}, headers=SAME
        )
        assert unknown.status_code == 400
        assert "no metric 'no.such'" in html.unescape(unknown.text)
        for kind, ref in (("metric", metric), ("screen", "leadership")):
            pinned = client.post(
                "/workbench/pin",
                data={"kind": kind, "ref": ref},
                headers=SAME,
                follow_redirects=False,
            )
            assert pinned.status_code == 303 and pinned.headers["location"] == "/"
        token = client.cookies[SESSION_COOKIE]
    # A new app object (a restarted service) reads the same pins.
    with TestClient(create_app(e.settings)) as again:
        again.cookies.set(SESSION_COOKIE, token)
        workbench = again.get("/").text.split('id="workbench"')[1].split("</section>")[0]
        assert f'data-metric="{metric}"' in workbench and 'class="value"' in workbench
        assert f"{SUPERSET}/superset/dashboard/leadership/" in workbench
        again.post("/workbench/unpin", data={"kind": "metric", "ref": metric}, headers=SAME)
        assert f'data-metric="{metric}"' not in again.get("/").text.split('id="workbench"')[1]
        # Without a session the form goes to the sign-in page, and pins nothing.
        again.cookies.clear()
        r = again.post("/workbench/pin", data=form, headers=SAME, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    pins = [
        (x["who"], x["params"], x["status"])
        for x in AuditLog(e.settings.state_dir / "audit").read()
        if x["action"] == "POST /workbench/{action}"
    ]
    assert ("pt-lee", {"action": "pin", "kind": "metric", "ref": metric}, 303) in pins


def test_a_fresh_install_draws_every_section_with_what_to_do(tmp_path) -> None:
    """No warehouse yet: each section says what the API said to do, never a trace; a role
    without a page (machine senders) gets a clear 403 page."""
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path)})
    store = IdentityStore.sealed(settings)
    store.add_user("fresh-ada", "admin", PASSWORD)
    totp = store.enrol_totp("fresh-ada")[0]
    store.add_user("fresh-prom", "ingest", PASSWORD)
    app = create_app(settings)
    with _signed_in(app, "fresh-ada", totp) as client:
        page = client.get("/")
    assert page.status_code == 200 and "Traceback" not in page.text
    text = html.unescape(page.text)
    assert "run `opslake warehouse build`" in text and "No runs recorded yet" in text
    with _signed_in(app, "fresh-prom") as client:
        refused = client.get("/")
    assert refused.status_code == 403 and "role ingest has no portal page" in refused.text
