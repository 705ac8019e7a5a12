"""Drive Debian's headless Chromium through the screens (Playwright, no browser download).

Playwright is not a pipeline dependency (the tests' extra brings it); callers pass in what
they got from ``playwright.sync_api.sync_playwright()``, and this module only knows how to
launch the system Chromium, log in and wait until a dashboard has finished drawing.
"""

from __future__ import annotations

import os
import shutil
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from opslake.errors import ConfigError, SupersetError
from opslake.screens.server import SupersetConfig, gateway_secret

#: Flags for a headless Chromium on a machine without a display, network or GPU.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
)
#: A wall display.
VIEWPORT = {"width": 1920, "height": 1080}
#: Dashboards to open at once (pages of one browser): Superset answers their charts' queries
#: side by side, and more pages than this only queue behind each other on a small machine.
AT_ONCE = 3

# True once every chart cell holds drawn content (an ECharts canvas, table rows or a big
# number) and no spinner is left; Superset draws charts asynchronously after the page loads.
DRAWN_JS = """() => {
  const cells = [...document.querySelectorAll('.dashboard-component-chart-holder')];
  if (cells.length === 0 || document.querySelector('.loading')) return false;
  return cells.every(c => c.querySelector(
    'canvas, table tbody tr, .header-line, .alert, [role=alert], .ant-empty'));
}"""
# True once every ECharts chart has its option and ECharts has said "finished" (nothing left
# to animate or draw; its first draw animates for about a second). Superset keeps no global
# echarts: each instance is found in the ref of the React component that holds its element.
# The first time a chart is seen it gets a listener and one more frame (zrender's refresh),
# so a chart that finished before anyone listened says so again.
SETTLED_JS = """() => {
  const states = [...document.querySelectorAll('[_echarts_instance_]')].map(el => {
    const key = Object.keys(el).find(k => k.startsWith('__reactFiber$'));
    let chart = null;
    for (let fiber = key && el[key]; fiber && !chart; fiber = fiber.return) {
      for (let hook = fiber.memoizedState; hook && typeof hook === 'object' && !chart;
           hook = hook.next) {
        const ref = hook.memoizedState;
        if (ref && typeof ref === 'object' && ref.current
            && typeof ref.current.getZr === 'function') chart = ref.current;
      }
    }
    if (!chart) throw new Error('no ECharts instance found behind a chart element');
    if (!chart.getModel()) return false;
    if (!chart.__opslakeSettling) {
      chart.__opslakeSettling = true;
      chart.on('finished', () => { chart.__opslakeFinished = true; });
      chart.getZr().refresh();
    }
    return chart.__opslakeFinished === true;
  });
  return states.every(Boolean);
}"""
# Charts that drew an error or "no results" instead of data: their titles.
FAILED_JS = """() => [...document.querySelectorAll('.dashboard-component-chart-holder')]
  .filter(c => c.querySelector('.alert, [role=alert], .ant-empty, .error-message'))
  .map(c => (c.querySelector('.header-title, .editable-title, [data-test=editable-title]')
             || {}).textContent || c.innerText.slice(0, 60))"""


def chromium_path(configured: Path | None = None) -> str:
    """The browser to drive: ``configured`` (``OPSLAKE_BROWSER``, any Chromium-based build),
    else Debian's Chromium (installed by ``infra/install-services.sh``) from ``PATH``."""
    if configured is not None:
        if not (configured.is_file() and os.access(configured, os.X_OK)):
            raise ConfigError(
                f"OPSLAKE_BROWSER={str(configured)!r} is not an executable file; point it at a "
                "Chromium-based browser's binary (e.g. /usr/lib/chromium/chromium), or unset it "
                "to use Debian's chromium from PATH"
            )
        return str(configured)
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise ConfigError(
            "Chromium is not installed; run `bash infra/install-services.sh` "
            "(Debian package 'chromium'), or set OPSLAKE_BROWSER to a Chromium-based browser"
        )
    return path


def launch(playwright: Any, executable: Path | None = None) -> Any:
    """Launch ``executable`` (else the system Chromium) headless through a
    ``sync_playwright()`` handle."""
    return playwright.chromium.launch(
        executable_path=chromium_path(executable), headless=True, args=list(CHROMIUM_ARGS)
    )


def log_in(
    page: Any, config: SupersetConfig, username: str, password: str, timeout_ms: int = 120_000
) -> None:
    """Log in through Superset's login form, as a person would; behind OpsLake's door (no
    form), as the door does: the page's context sends the user with the door's secret."""
    if config.door:
        door = {
            "x-opslake-gateway-secret": gateway_secret(config),
            "x-opslake-user": quote(username),
        }
        # Only requests to Superset carry them: a screen may load from other hosts too.
        page.context.route(
            f"{config.url}/**",
            lambda route: route.continue_(headers={**route.request.headers, **door}),
        )
        answer = page.goto(f"{config.url}/api/v1/me/", timeout=timeout_ms)
        if answer is None or answer.status != 200:
            raise SupersetError(
                f"Superset at {config.url} did not take {username!r} from the "
                "door's headers; restart it with `opslake screens stop` and "
                "`start` so it reads the current gateway-secret"
            )
        return
    page.goto(f"{config.url}/login/", timeout=timeout_ms)
    page.fill("input[name=username], #username", username)
    page.fill("input[name=password], #password", password)
    page.click("button[type=submit], input[type=submit]")
    try:
        # "commit": leaving the login page is the answer; the welcome page need not finish
        # loading (slow on a busy machine, and never looked at).
        page.wait_for_url(lambda url: "/login" not in url, wait_until="commit", timeout=timeout_ms)
    except Exception as exc:  # playwright's TimeoutError
        raise SupersetError(
            f"logging in as {username!r} at {config.url}/login/ did not "
            f"succeed within {timeout_ms / 1000:.0f} s; check the password"
        ) from exc


def open_dashboard(
    page: Any,
    config: SupersetConfig,
    slug: str,
    timeout_ms: int = 120_000,
    filter_bar: bool = True,
) -> list[str]:
    """Open a dashboard full screen, wait until every chart is drawn; titles of failed charts.

    ``filter_bar=False`` folds the native filter bar away (a printed page has no use for it,
    and beside the charts it pushes them off the first page)."""
    _go(page, config, slug, timeout_ms, filter_bar)
    return _drawn(page, timeout_ms)


def open_dashboards(
    pages: Sequence[Any],
    config: SupersetConfig,
    slugs: Iterable[str],
    timeout_ms: int = 120_000,
    filter_bar: bool = True,
) -> Iterator[tuple[str, Any, list[str]]]:
    """Open ``slugs`` as :func:`open_dashboard` does, as many at once as there are ``pages``;
    yields ``(slug, page, titles of failed charts)`` in the order of ``slugs``, each while
    ``page`` still shows that dashboard (screenshot or print it then).

    Most of a dashboard's time is Superset answering its charts' queries, which it does for
    several dashboards at once; the pages load meanwhile, while this waits on the oldest."""
    waiting = iter(slugs)
    drawing: deque[tuple[str, Any]] = deque()
    for page in pages:
        slug = next(waiting, None)
        if slug is None:
            break
        _go(page, config, slug, timeout_ms, filter_bar)
        drawing.append((slug, page))
    while drawing:
        slug, page = drawing.popleft()
        yield slug, page, _drawn(page, timeout_ms)
        following = next(waiting, None)
        if following is not None:
            _go(page, config, following, timeout_ms, filter_bar)
            drawing.append((following, page))


def _go(page: Any, config: SupersetConfig, slug: str, timeout_ms: int, filter_bar: bool) -> None:
    """Start opening a dashboard on ``page``: back once the server answered the navigation."""
    folded = "" if filter_bar else "&expand_filters=0"
    page.goto(
        f"{config.url}/superset/dashboard/{slug}/?standalone=1{folded}",
        timeout=timeout_ms,
        wait_until="commit",
    )


def _drawn(page: Any, timeout_ms: int) -> list[str]:
    """Wait until the dashboard on ``page`` has drawn every chart; titles of failed charts."""
    page.wait_for_selector(".dashboard-component-chart-holder", timeout=timeout_ms)
    wait_until_drawn(page, timeout_ms)
    return page.evaluate(FAILED_JS)


def wait_until_drawn(page: Any, timeout_ms: int = 120_000) -> None:
    """Wait until every chart cell holds drawn content and every ECharts chart has finished
    its first (animated) draw: what a screenshot then shows is what stays on the screen."""
    page.wait_for_function(DRAWN_JS, timeout=timeout_ms)
    page.wait_for_function(SETTLED_JS, timeout=timeout_ms)
