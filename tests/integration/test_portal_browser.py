"""The portal in a real headless Chromium (issue 21, must show 1 and 5): a real ``opslake serve``
over the shared estate; sign in on ``/login``, land on the role page, pin a metric, see it after
a reload, open an incident. The page's policy blocks nothing it needs (no console errors), and
a screenshot of the page goes to ``tests/artifacts/portal-ops-engineer.png``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from opslake.screens import browser
from opslake.security.identity import IdentityStore
from tests.integration.services import REPO, free_port, install_services, running

PASSWORD = "Portal-browser-pass-1"
METRIC = "service.incident.mttr"
SHOT = REPO / "tests" / "artifacts" / "portal-ops-engineer.png"


@pytest.fixture(scope="module")
def served(estate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``opslake serve`` over the estate (no doors: the portal needs none), with a user."""
    install_services()  # Chromium
    settings, _ = estate
    IdentityStore.sealed(settings).add_user("pb-olga", "ops_engineer", PASSWORD)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSLAKE_", "DAGSTER_"))}
    env["OPSLAKE_HOME"] = settings.home
    serve = [str(Path(sys.executable).with_name("opslake")), "serve", "--port", str(port)]
    log = tmp_path_factory.mktemp("portal") / "serve.log"
    with running(serve, f"http://127.0.0.1:{port}/healthz", log, env):
        yield f"http://127.0.0.1:{port}"


def test_sign_in_land_on_the_role_page_pin_a_metric_and_open_an_incident(served: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = browser.launch(pw)
        try:
            page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
            problems: list[str] = []
            # The browser's own favicon request is the service's only 404.
            page.on("console", lambda m: problems.append(f"{m.location} {m.text}")
                    if m.type == "error" and "/favicon.ico" not in str(m.location) else None)
            page.goto(f"{served}/")
            assert page.url == f"{served}/login?next=%2F"
            page.fill("input[name=user]", "pb-olga")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            assert page.url == f"{served}/"
            assert page.locator("#role-page").get_attribute("data-role") == "ops_engineer"
            assert page.locator("#my-incidents").count() == 1
            page.fill("#pin-metric input[name=ref]", METRIC)
            page.click("#pin-metric button[type=submit]")
            page.wait_for_load_state()
            page.reload()
            pinned = page.locator(f'#workbench .kpi[data-metric="{METRIC}"]')
            assert pinned.count() == 1 and pinned.locator(".value").count() >= 1
            SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOT), full_page=True)
            # An incident, from the newest day's list, as the API shows it to this user.
            link = page.locator("#latest-incidents a").first
            incident = link.get_attribute("href")
            link.click()
            page.wait_for_load_state()
            assert page.url == f"{served}{incident}"
            assert page.locator("#handling-status").count() == 1
            assert not problems, problems  # the policy blocked nothing the pages need
        finally:
            chromium.close()
    assert SHOT.stat().st_size > 10_000
