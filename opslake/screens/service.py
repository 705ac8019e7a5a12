"""Bring the screens up: start Superset, import ``dashboards/``, provision roles; log in.

This is the Python entry point for everything that needs a running Superset (the CLI, the
tests, the report renderer): :func:`start` is idempotent, :func:`running` starts one for
the length of a ``with`` block, :func:`admin_client` and :func:`browser_login` log in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from opslake.errors import StorageError, SupersetError
from opslake.screens import bundle
from opslake.screens.access import AccessReport, provision_access
from opslake.screens.model import Dataset
from opslake.screens.rest import SupersetClient, browser_cookies
from opslake.screens.server import (
    SupersetConfig,
    require_warehouse,
    reset_admin_password,
    running_pid,
    start_server,
    stop_server,
    wait_healthy,
)
from opslake.settings import Settings

#: Resources the bundle imports, with the field that says when each object last changed.
TRACKED = {
    "database": "changed_on",
    "dataset": "changed_on_utc",
    "chart": "changed_on_utc",
    "dashboard": "changed_on_utc",
}
#: libyaml when the wheel has it: the bundle's 477 files parse in 0.35 s, not 2.9 s, and every
#: import check (each `opslake screens start`) reads them all.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class ImportResult:
    """What an import did: ``imported`` False means Superset already held exactly the bundle."""

    imported: bool
    reason: str
    objects: dict[str, dict[str, Any]]


def config_for(settings: Settings | None = None) -> SupersetConfig:
    """The Superset configuration of ``settings`` (default: from the environment)."""
    return SupersetConfig.from_settings(settings or Settings.from_env())


def admin_client(config: SupersetConfig) -> SupersetClient:
    """A REST session as the admin (the server must be running)."""
    return SupersetClient(config.url, config.admin_username, config.password())


def _admin_client_resetting(config: SupersetConfig, say: Callable[[str], None]) -> SupersetClient:
    """Log in as the admin; if the password was changed in the settings, apply it first."""
    try:
        return admin_client(config)
    except SupersetError as exc:
        if "refused the login" not in str(exc):
            raise
    say(f"the {config.admin_username!r} password differs from the configured one; resetting")
    reset_admin_password(config)
    return admin_client(config)


def browser_login(
    config: SupersetConfig, username: str | None = None, password: str | None = None
) -> list[dict[str, Any]]:
    """Session cookies for a headless browser, logged in through Superset's login form.

    Defaults to the admin. Give them to Playwright's ``context.add_cookies(...)`` (or any
    CDP client) and open ``{config.url}/superset/dashboard/<slug>/``.
    """
    return browser_cookies(
        config.url, username or config.admin_username, password or config.password()
    )


def _uuids(files: dict[str, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {r: set() for r in TRACKED}
    folders = {
        "databases/": "database",
        "datasets/": "dataset",
        "charts/": "chart",
        "dashboards/": "dashboard",
    }
    for rel, text in files.items():
        for folder, resource in folders.items():
            if rel.startswith(folder):
                out[resource].add(str(yaml.load(text, Loader=_LOADER)["uuid"]))
    return out


def snapshot(client: SupersetClient, uuids: dict[str, set[str]]) -> dict[str, dict[str, Any]]:
    """{resource: {uuid: [id, changed_on]}} of the bundle's objects as Superset holds them."""
    out: dict[str, dict[str, Any]] = {}
    for resource, changed in TRACKED.items():
        rows = client.list_all(resource, ["id", "uuid", changed])
        out[resource] = {
            str(r["uuid"]): [r["id"], r.get(changed)]
            for r in rows
            if str(r.get("uuid")) in uuids[resource]
        }
    return out


def sync_dashboards(
    client: SupersetClient,
    config: SupersetConfig,
    *,
    force: bool = False,
    source: Path = bundle.DASHBOARDS_DIR,
) -> ImportResult:
    """Import ``dashboards/`` unless Superset already holds exactly what it says.

    Superset's import overwrites every object it names and so touches each one's
    ``changed_on`` even when nothing differs; skipping an unchanged bundle is what keeps a
    re-run from changing anything. It imports when the rendered bundle differs from the last
    one imported, or when an object is missing or was edited in Superset since (the
    repository wins), or when ``force`` is given.
    """
    files = bundle.read_files(source)
    data = bundle.render(files, config.warehouse, config.timezone)
    digest = hashlib.sha256(data).hexdigest()
    uuids = _uuids(files)
    stamp = config.state / "dashboards-imported.json"
    before = snapshot(client, uuids)
    last = json.loads(stamp.read_text()) if stamp.exists() else None
    if force:
        reason = "forced"
    elif last is None:
        reason = "first import"
    elif last["bundle"] != digest:
        reason = "dashboards/ changed"
    elif before != last["objects"]:
        reason = "Superset's copies differ (missing or edited since the last import)"
    else:
        return ImportResult(False, "unchanged", before)
    client.import_assets(data)
    after = snapshot(client, uuids)
    missing = {r: sorted(u - set(after[r])) for r, u in uuids.items() if u - set(after[r])}
    if missing:
        raise SupersetError(f"the import left objects out: {missing}; see {config.log_file}")
    stamp.write_text(json.dumps({"bundle": digest, "objects": after}, sort_keys=True))
    return ImportResult(True, reason, after)


def departments(warehouse: Path) -> list[str]:
    """Departments in the newest asset ledger: each gets a role with row-level security."""
    from opslake.lake.warehouse import open_read_only

    con = open_read_only(warehouse)
    try:
        rows = con.execute(
            "SELECT DISTINCT department FROM asset_ledger WHERE dt = "
            "(SELECT max(dt) FROM asset_ledger) AND department IS NOT NULL "
            "ORDER BY 1"
        ).fetchall()
    except Exception as exc:  # duckdb.CatalogException when gold has no ledger yet
        raise StorageError(
            f"cannot list departments from {warehouse}: {exc}; run "
            "`opslake materialize` and `opslake warehouse build`"
        ) from exc
    finally:
        con.close()
    return [r[0] for r in rows]


def screen_datasets(metrics_dir: Path | None = None) -> list[Dataset]:
    """The datasets the screens use (for access provisioning)."""
    from opslake.metrics_catalog.loader import load
    from opslake.screens.screens import build_screens
    from opslake.settings import DEFAULT_METRICS_DIR

    catalog = load(metrics_dir or DEFAULT_METRICS_DIR, check_expressions=False)
    return build_screens(list(catalog.metrics.values()))[0]


def provision(
    config: SupersetConfig, metrics_dir: Path | None = None, say: Callable[[str], None] = print
) -> tuple[ImportResult, AccessReport]:
    """Import the dashboards and provision roles on a running Superset."""
    with _admin_client_resetting(config, say) as client:
        result = sync_dashboards(client, config)
        access = provision_access(
            client, screen_datasets(metrics_dir), departments(config.warehouse)
        )
    return result, access


def start(
    config: SupersetConfig, say: Callable[[str], None] = print, metrics_dir: Path | None = None
) -> int:
    """Start Superset (if not running), import the screens and provision roles; its PID."""
    require_warehouse(config)
    pid = start_server(config, say)
    wait_healthy(config.url, pid=pid, log=config.log_file)
    result, access = provision(config, metrics_dir, say)
    say(
        f"dashboards: {'imported (' + result.reason + ')' if result.imported else 'unchanged'}"
        f"; roles: {'updated' if access.changed else 'unchanged'}"
    )
    return pid


def stop(config: SupersetConfig, say: Callable[[str], None] = print) -> bool:
    """Stop the server by its PID; False when it was not running."""
    return stop_server(config, say)


@contextlib.contextmanager
def running(
    config: SupersetConfig, say: Callable[[str], None] = print, metrics_dir: Path | None = None
) -> Iterator[SupersetConfig]:
    """Superset up with the screens for the block; stopped after it if this call started it."""
    was_running = running_pid(config) is not None
    start(config, say, metrics_dir)
    try:
        yield config
    finally:
        if not was_running:
            stop_server(config, say)
