"""``opslake screens …``: the Superset large screens: start, stop, status, import, users.

The logic lives in :mod:`opslake.screens`; these commands only call it and print.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from opslake.cli._common import console, stdout

app = typer.Typer(
    help="Superset large screens: start/stop the server, import dashboards/, "
    "roles with row-level security, users.",
    no_args_is_help=True,
)


def _config():
    from opslake.screens import service

    return service.config_for()


@app.command("start")
def start() -> None:
    """Start Superset (own venv), import dashboards/ if changed, provision roles; print the URL."""
    from opslake.screens import service

    config = _config()
    service.start(config, say=console.print)
    url()


@app.command("stop")
def stop() -> None:
    """Stop Superset by its PID (the whole process group)."""
    from opslake.screens import service

    service.stop(_config(), say=console.print)


@app.command("status")
def status() -> None:
    """Whether Superset runs (exit 3 when it does not) and where."""
    from opslake.screens.server import running_pid

    config = _config()
    pid = running_pid(config)
    if pid is None:
        typer.echo(f"superset stopped (state {config.state})")
        raise typer.Exit(3)
    typer.echo(f"superset running pid={pid} url={config.url} state={config.state}")


@app.command("url")
def url() -> None:
    """Print where the screens are (the dashboard list) and how to log in."""
    from opslake.settings import Settings

    config = _config()
    door = Settings.from_env().superset_door_port
    if door:
        # Behind the door there is no Superset login form: the data service signs users in.
        typer.echo(
            f"http://{config.host}:{door}/dashboard/list/ (through the door: sign in "
            "at the data service's /login; https when OPSLAKE_TLS_CERT is set)"
        )
        return
    password = (
        "OPSLAKE_SUPERSET_ADMIN_PASSWORD"
        if config.admin_password
        else str(config.state / "admin-password")
    )
    typer.echo(f"{config.url}/dashboard/list/ (user {config.admin_username}, password: {password})")


@app.command("import")
def import_(
    force: Annotated[
        bool, typer.Option(help="Import even when Superset already holds exactly dashboards/.")
    ] = False,
) -> None:
    """Import dashboards/ into the running Superset and provision roles (idempotent)."""
    from opslake.screens import service
    from opslake.screens.access import provision_access

    config = _config()
    with service.admin_client(config) as client:
        result = service.sync_dashboards(client, config, force=force)
        access = provision_access(
            client, service.screen_datasets(), service.departments(config.warehouse)
        )
    table = Table(
        "resource",
        "objects",
        title="dashboards/ " + (f"imported ({result.reason})" if result.imported else "unchanged"),
    )
    for resource, objects in result.objects.items():
        table.add_row(resource, str(len(objects)))
    stdout.print(table)
    console.print(f"roles: {access}" if access.changed else "roles: unchanged")


@app.command("generate")
def generate() -> None:
    """Regenerate dashboards/ from opslake/screens and the metrics catalog."""
    from opslake.screens.bundle import DASHBOARDS_DIR
    from opslake.screens.bundle import generate as write

    files = write()
    typer.echo(f"{len(files)} files in {DASHBOARDS_DIR}")


@app.command("user")
def user(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[
        list[str], typer.Option("--role", help="Role (repeatable), e.g. 'OpsLake 领导'.")
    ],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create a Superset user with OpsLake roles (or reset its roles and password)."""
    from opslake.screens import service
    from opslake.screens.access import ensure_user

    with service.admin_client(_config()) as client:
        user_id = ensure_user(client, username, password, role)
    typer.echo(f"user {username} (id {user_id}): {', '.join(role)}")
