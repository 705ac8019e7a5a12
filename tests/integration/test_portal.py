"""The portal at ``/`` (issue 21, build 1-2): a page per role over the shared estate, row scope
as the API applies it, the workbench's pins kept across app objects and refused without Origin
or CSRF token, each user's language, and incidents handled through the incident page's forms,
whose notices reach a real signed-webhook receiver through the delivery engine."""

from __future__ import annotations

import html
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
import pytest
from fastapi.testclient import TestClient

from opslake.alerting.dispatch import DeliveryLog, NotifyConfig
from opslake.api.app import create_app
from opslake.api.portal import screens
from opslake.api.signin import SESSION_COOKIE
from opslake.lake.storage import Lake
from opslake.security.audit import AuditLog
from opslake.security.identity import IdentityStore
from opslake.settings import DEFAULT_ALERTING_DIR, Settings
from tests.integration.services import free_port
from tests.receivers import WebhookServer

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


def _csrf(client: TestClient, path: str = "/") -> str:
    """The CSRF token the page at ``path`` gives its forms."""
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', client.get(path).text).group(1)


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
    assert 'id="open-count"' in page
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
        csrf = _csrf(client)
        form = {"kind": "metric", "ref": metric, "csrf": csrf}
        for headers, sent in (
            ({}, form),
            ({"Origin": "http://evil.example"}, form),
            (SAME, {**form, "csrf": "0" * 64}),  # not this session's token
            (SAME, {k: v for k, v in form.items() if k != "csrf"}),
        ):
            refused = client.post(
                "/workbench/pin", data=sent, headers=headers, follow_redirects=False
            )
            assert refused.status_code == 403 and "Traceback" not in refused.text
        assert 'class="pinned"' not in client.get("/").text
        unknown = client.post(
            "/workbench/pin", data={"kind": "metric", "ref": "no.such", "csrf": csrf}, headers=SAME
        )
        assert unknown.status_code == 400
        assert "no metric 'no.such'" in html.unescape(unknown.text)
        for kind, ref in (("metric", metric), ("screen", "leadership")):
            pinned = client.post(
                "/workbench/pin",
                data={"kind": kind, "ref": ref, "csrf": csrf},
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
        again.post(
            "/workbench/unpin",
            data={"kind": "metric", "ref": metric, "csrf": csrf},
            headers=SAME,
        )
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
    assert "run `opslake warehouse build`" in text and 'id="no-runs"' in text
    with _signed_in(app, "fresh-prom") as client:
        refused = client.get("/")
    assert refused.status_code == 403 and "role ingest has no portal page" in refused.text


def test_each_user_reads_the_portal_in_their_language(estate_portal: Estate) -> None:
    e = estate_portal
    IdentityStore.sealed(e.settings).add_user("pt-lang", "leadership", PASSWORD)
    with _signed_in(e.app, "pt-lang") as client:
        first = client.get("/").text
        assert '<html lang="zh-CN">' in first and "领导驾驶舱" in first
        csrf = _csrf(client)
        sla = client.get("/v1/catalog/metrics/service.sla.attainment").json()
        for lang, heading in (("en", "Cockpit"), ("zh-TW", "主管駕駛艙")):
            chosen = client.post(
                "/language",
                data={"lang": lang, "back": "/", "csrf": csrf},
                headers=SAME,
                follow_redirects=False,
            )
            assert chosen.status_code == 303 and chosen.headers["location"] == "/"
            page = client.get("/").text
            assert f'<html lang="{lang}">' in page and f"<h2>{heading}</h2>" in page
            # A metric by its catalog name in that language (zh-CN where the catalog has none).
            name = sla.get("name_en" if lang == "en" else "name_zh_tw") or sla["name_zh_cn"]
            kpi = page.split('data-metric="service.sla.attainment"')[1].split("</div>")[0]
            assert f'<span class="name">{html.escape(name)}</span>' in kpi
            # The leadership screen in that language, or its zh-CN one when the bundle has none.
            slug = screens()["leadership"].version(lang)[0]
            assert f'href="{SUPERSET}/superset/dashboard/{slug}/"' in page
        refused = client.post(
            "/language", data={"lang": "fr", "csrf": csrf}, headers=SAME, follow_redirects=False
        )
        assert refused.status_code == 400 and "choose one of zh-CN, zh-TW, en" in refused.text
        # Never elsewhere: a back that is not a path of this service goes to the portal.
        away = client.post(
            "/language",
            data={"lang": "en", "back": "https://evil.example/", "csrf": csrf},
            headers=SAME,
            follow_redirects=False,
        )
        assert away.headers["location"] == "/"
    # Kept per user: another user still reads zh-CN.
    assert '<html lang="zh-CN">' in _page(e, "pt-lee")


def _wait(what: str, check: Callable[[], object], limit: float = 30.0) -> object:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: nothing within {limit:.0f} s")


def _post_form(client: TestClient, incident: str, form: str, **fields: str):
    csrf = _csrf(client, f"/incidents/{incident}")
    return client.post(
        f"/incidents/{incident}/{form}",
        data={"csrf": csrf, **fields},
        headers=SAME,
        follow_redirects=False,
    )


def _forms(page: str) -> set[str]:
    return set(re.findall(r'id="form-([a-z]+)"', page))


def test_incidents_are_handled_through_the_page_and_notify_through_the_delivery_engine(
    estate_portal: Estate, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acknowledge, assign to an on-call group, comment (department viewer) and resolve through
    the incident page's forms, as each role may; refusals are pages with the fix; the
    assignment and the resolution reach a real signed-webhook receiver through the delivery
    engine, and every attempt (a receiver that is down included) is in the delivery log."""
    e = estate_portal
    secret, group = "portal-notice-secret", "云平台组"
    alerting = tmp_path / "alerting"
    shutil.copytree(DEFAULT_ALERTING_DIR, alerting)
    (alerting / "notify.yaml").write_text(
        f"""
receivers:
  gateway: {{channel: webhook, url_env: PT_NOTICE_URL, secret_env: PT_NOTICE_SECRET}}
  down: {{channel: webhook, url: "http://127.0.0.1:{free_port()}/gone"}}
handling:
  receivers: [gateway, down]
  contacts: {{pt-dora: {{mobile: "13900000009", email: dora@ops.gov.local}}}}
""",
        encoding="utf-8",
    )
    settings = Settings.from_env(
        {
            "OPSLAKE_HOME": e.settings.home,
            "OPSLAKE_ALERTING_DIR": str(alerting),
            "OPSLAKE_SUPERSET_DOOR_PORT": "8090",
        }
    )
    target, other = min(e.own), min(e.others)
    with WebhookServer(secret) as gateway:
        monkeypatch.setenv("PT_NOTICE_URL", f"{gateway.url}/notify")
        monkeypatch.setenv("PT_NOTICE_SECRET", secret)
        app = create_app(settings)
        with _signed_in(app, "pt-olga") as ops:
            page = ops.get(f"/incidents/{target}").text
            assert _forms(page) == {"ack", "assign", "severity", "resolve", "comment"}
            assert f'value="group:{group}"' in page and 'value="user:pt-olga"' in page
            acked = _post_form(ops, target, "ack", comment="looking")
            assert acked.status_code == 303
            assert acked.headers["location"] == f"/incidents/{target}?done=acknowledge"
            assert 'id="handling-done"' in ops.get(acked.headers["location"]).text
            # An illegal transition: the page again, with the API's error and its fix.
            again = _post_form(ops, target, "ack")
            assert again.status_code == 400 and "Traceback" not in again.text
            error = html.unescape(again.text.split('id="handling-error"')[1].split("</div>")[0])
            assert "is acknowledged (by pt-olga at" in error and "not open" in error
            assert "only an open incident can be acknowledged" in error  # the fix
            assert 'data-status="acknowledged"' in again.text
            assigned = _post_form(ops, target, "assign", assignee=f"group:{group}")
            assert assigned.status_code == 303, assigned.text
            # Without the token, from elsewhere or without a session: refused, nothing recorded.
            assert (
                ops.post(
                    f"/incidents/{target}/comment", data={"text": "x"}, headers=SAME
                ).status_code
                == 403
            )
            foreign = {"Origin": "http://evil.example"}
            csrf = _csrf(ops, f"/incidents/{target}")
            assert (
                ops.post(
                    f"/incidents/{target}/comment",
                    data={"text": "x", "csrf": csrf},
                    headers=foreign,
                ).status_code
                == 403
            )
        with TestClient(app) as nobody:
            away = nobody.post(
                f"/incidents/{target}/resolve", data={}, headers=SAME, follow_redirects=False
            )
            assert away.headers["location"] == f"/login?next=%2Fincidents%2F{target}"
        with _signed_in(app, "pt-dora") as dora:
            assert _forms(dora.get(f"/incidents/{target}").text) == {"comment"}
            said = _post_form(dora, target, "comment", text="finance sees it too")
            assert said.status_code == 303
            refused = _post_form(dora, target, "resolve")
            assert refused.status_code == 403
            assert "lacks the scope incidents:handle" in html.unescape(refused.text)
            # Another department's incident: not found, by page and by form.
            assert dora.get(f"/incidents/{other}").status_code == 404
            hidden = dora.post(
                f"/incidents/{other}/comment",
                data={"text": "x", "csrf": _csrf(dora)},
                headers=SAME,
            )
            assert hidden.status_code == 404 and "Traceback" not in hidden.text
        with _signed_in(app, "pt-lee") as lee:
            page = lee.get(f"/incidents/{target}").text
            assert not _forms(page) and 'id="read-only"' in page
            assert _post_form(lee, target, "comment", text="x").status_code == 403
        with _signed_in(app, "pt-olga") as ops:
            resolved = _post_form(ops, target, "resolve", comment="failover done")
            assert resolved.status_code == 303
            history = ops.get(f"/v1/incidents/{target}/history").json()
            page = ops.get(f"/incidents/{target}").text
        assert [(x["action"], x["actor"]) for x in history["events"]] == [
            ("acknowledge", "pt-olga"),
            ("assign", "pt-olga"),
            ("comment", "pt-dora"),
            ("resolve", "pt-olga"),
        ]
        assert history["state"]["handling_status"] == "resolved" and _forms(page) == {
            "reopen",
            "comment",
        }
        shown = re.findall(r'class="event" data-action="([a-z]+)"', page)
        assert shown == ["acknowledge", "assign", "comment", "resolve"]
        notices = _wait("both notices", lambda: len(gateway.received) >= 2 and gateway.received)
    assert gateway.refused == 0  # both signed
    on_duty = [s.mobile for s in NotifyConfig.load(alerting).on_duty(group, datetime.now(UTC))]
    assign, resolve = sorted(notices, key=lambda d: d["at"])
    assert assign["action"] == "assign" and assign["to"] == [{"name": group, "kind": "group"}]
    assert assign["incident_id"] == target and assign["mobiles"] == on_duty
    assert resolve["action"] == "resolve" and resolve["actor"] == "pt-olga"
    assert resolve["to"] == [{"name": "pt-dora", "kind": "user"}, {"name": group, "kind": "group"}]
    assert resolve["mobiles"] == ["13900000009", *on_duty]
    lake = Lake.from_settings(settings)
    day = datetime.now(UTC).date().isoformat()

    def logged() -> list | None:
        rows = [r for r in DeliveryLog(lake, [day]).records if r.incident_id == target]
        return rows if len(rows) >= 4 else None

    records = {(r.transition, r.receiver): r for r in _wait("four records", logged)}
    assert {k: r.status for k, r in records.items()} == {
        ("assign#2", "gateway"): "sent",
        ("assign#2", "down"): "failed",
        ("resolve#4", "gateway"): "sent",
        ("resolve#4", "down"): "failed",
    }
    down = records[("resolve#4", "down")]
    assert down.attempts == 4 and "/gone" in down.detail  # retried in the pass, then kept
    entries = [
        (x["who"], x["action"], x["status"]) for x in AuditLog(settings.state_dir / "audit").read()
    ]
    assert ("pt-olga", "POST /incidents/{incident_id}/{form}", 303) in entries
    assert ("pt-olga", "POST /v1/incidents/{incident_id}/assign", 200) in entries
    assert ("pt-dora", "POST /incidents/{incident_id}/{form}", 403) in entries
