"""The portal in a real headless Chromium (issue 21, must show 1 and 5): a real ``opslake serve``
over the shared estate, its Superset door open (nothing behind it: the portal only links to it).
Each role signs in on ``/login``, lands on its page, finds the screens' links through the door
and opens an incident it may see; an operations engineer pins a metric and sees it after a
reload. The pages' policy blocks nothing they need (no console errors), and a screenshot of each
role's page (the engineer's with the pin) goes to ``tests/artifacts/portal-<role>.png``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest

from opslake.security.identity import IdentityStore
from opslake.settings import Settings
from tests.integration.services import (
    REPO,
    free_port,
    headless_chromium,
    install_services,
    running,
)

PASSWORD = "Portal-browser-pass-1"
METRIC = "service.incident.mttr"
ARTIFACTS = REPO / "tests" / "artifacts"
#: User → role; the department viewer is added once a department with incidents is known.
USERS = {
    "pb-olga": "ops_engineer",
    "pb-lee": "leadership",
    "pb-dan": "data_engineer",
    "pb-ada": "admin",
}


@dataclass
class Served:
    """The running service, its Superset door and the administrator's TOTP secret."""

    url: str
    superset: str
    settings: Settings
    totp: str


@pytest.fixture(scope="module")
def served(own_estate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``opslake serve`` over the estate with the Superset door open, and a user per role."""
    install_services()  # Chromium
    settings, _ = own_estate
    store = IdentityStore.sealed(settings)
    for user, role in USERS.items():
        store.add_user(user, role, PASSWORD)
    totp = store.enrol_totp("pb-ada")[0]
    port, door = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLAKE_", "DAGSTER_"))}
    env |= {"OPSLAKE_HOME": settings.home, "OPSLAKE_SUPERSET_DOOR_PORT": str(door)}
    serve = [str(Path(sys.executable).with_name("opslake")), "serve", "--port", str(port)]
    log = tmp_path_factory.mktemp("portal") / "serve.log"
    with running(serve, f"http://127.0.0.1:{port}/healthz", log, env):
        yield Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{door}", settings, totp)


@pytest.fixture(scope="module")
def chromium(served: Served) -> Iterator[object]:
    """Debian's Chromium, headless; each sign-in in a fresh context (no cookies)."""
    with headless_chromium() as launched:
        yield launched


def _signed_in(chromium, served: Served, user: str, problems: list[str]):
    """A page of a fresh context, signed in as ``user`` from the portal's redirect."""
    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    # The browser's own favicon request is the service's only 404.
    page.on(
        "console",
        lambda m: (
            problems.append(f"{user}: {m.location} {m.text}")
            if m.type == "error" and "/favicon.ico" not in str(m.location)
            else None
        ),
    )
    page.goto(f"{served.url}/")
    assert page.url == f"{served.url}/login?next=%2F"
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORD)
    if user == "pb-ada":
        page.fill("input[name=totp]", pyotp.TOTP(served.totp).now())
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url == f"{served.url}/"
    return page


def _open_an_incident(page, served: Served, listed: str) -> str:
    link = page.locator(f"{listed} a").first
    incident = link.get_attribute("href")
    link.click()
    page.wait_for_load_state()
    assert page.url == f"{served.url}{incident}"
    assert page.locator("#handling-status").count() == 1
    return incident.rsplit("/", 1)[1]


def test_a_pinned_metric_is_there_after_a_reload(served: Served, chromium) -> None:
    problems: list[str] = []
    page = _signed_in(chromium, served, "pb-olga", problems)
    page.fill("#pin-metric input[name=ref]", METRIC)
    page.click("#pin-metric button[type=submit]")
    page.wait_for_load_state()
    page.reload()
    pinned = page.locator(f'#workbench .kpi[data-metric="{METRIC}"]')
    assert pinned.count() == 1 and pinned.locator(".value").count() >= 1
    assert not problems, problems


def test_each_role_reaches_its_page_a_screen_link_and_an_incident(served: Served, chromium) -> None:
    problems: list[str] = []
    ops = _signed_in(chromium, served, "pb-olga", problems)
    rows = ops.request.get(f"{served.url}/v1/incidents").json()["rows"]
    own = next(r for r in rows if len(r["departments"]) == 1)
    departments = {r["incident_id"]: r["departments"] for r in rows}
    IdentityStore.sealed(served.settings).add_user(
        "pb-dora", "dept_viewer", PASSWORD, departments=own["departments"]
    )
    lists = {"dept_viewer": "#department-incidents"}
    for user, role in {**USERS, "pb-dora": "dept_viewer"}.items():
        page = _signed_in(chromium, served, user, problems)
        assert page.locator("#role-page").get_attribute("data-role") == role
        screens = page.locator("#quick-links a.screen")
        assert screens.count() >= 10  # every screen, through the door
        assert all(
            href.startswith(f"{served.superset}/superset/dashboard/")
            for href in screens.evaluate_all("els => els.map(e => e.href)")
        )
        page.screenshot(path=str(ARTIFACTS / f"portal-{role}.png"), full_page=True)
        seen = _open_an_incident(page, served, lists.get(role, "#latest-incidents"))
        if role == "dept_viewer":  # one of its department's own
            assert departments[seen] == own["departments"]
        page.context.close()
    assert not problems, problems  # the policy blocked nothing the pages need


def test_the_topology_and_an_entity_page_draw_coloured_by_health(served: Served, chromium) -> None:
    problems: list[str] = []
    page = _signed_in(chromium, served, "pb-olga", problems)
    page.click("#topology-link")
    page.wait_for_load_state()
    assert page.url == f"{served.url}/topology"
    summary = page.locator("#topology-summary")
    nodes = page.locator(".topology a.node")
    drawn = set(nodes.evaluate_all("els => els.map(e => e.dataset.entity)"))
    assert len(drawn) == int(summary.get_attribute("data-nodes")) > 0
    # topology.css applied under the portal's policy: a healthy CI is drawn green.
    healthy = page.locator(".topology a.node.health-healthy").first
    assert healthy.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(227, 244, 230)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "topology.png"), full_page=True)
    vm = page.locator(".topology a.node.health-healthy", has_text="vm-").first
    entity_id = vm.get_attribute("data-entity")
    vm.click()
    page.wait_for_load_state()
    assert page.url == f"{served.url}/entities/{entity_id}"
    assert page.locator("#neighbours tr.edge").count() > 0
    assert page.locator("#entity-health").get_attribute("class").startswith("node health-")
    page.screenshot(path=str(ARTIFACTS / "entity.png"), full_page=True)
    page.context.close()
    assert not problems, problems
