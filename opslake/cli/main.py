"""The ``opslake`` command: assembles the command groups and turns every error into one
line and an exit code."""

from __future__ import annotations

import sys
import warnings

import typer

from opslake.cli import pipeline, service
from opslake.cli._common import console
from opslake.cli.alerts import app as alerts_app
from opslake.cli.backup import app as backup_app
from opslake.cli.catalog import app as catalog_app
from opslake.cli.cluster import app as cluster_app
from opslake.cli.landing import app as landing_app
from opslake.cli.ml import app as ml_app
from opslake.cli.quality import app as quality_app
from opslake.cli.reports import app as reports_app
from opslake.cli.screens import app as screens_app
from opslake.cli.security import app as security_app
from opslake.cli.security import audit_app
from opslake.cli.subscriptions import app as subscriptions_app
from opslake.cli.tasks import tasks_app
from opslake.errors import OpsLakeError

# Great Expectations imports pyspark when it is installed (the tests' Spark reader is), and
# pyspark warns on import about pandas 3, which nothing here asks pyspark to handle.
warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)

app = typer.Typer(
    help="OpsLake: the AIOps lakehouse of a unified government ops centre.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for command in (
    pipeline.simulate,
    pipeline.materialize,
    pipeline.status,
    service.ui,
    service.serve,
):
    app.command()(command)
app.command("quarantine")(pipeline.quarantine_show)
for name, group in (
    ("warehouse", pipeline.warehouse_app),
    ("catalog", catalog_app),
    ("quality", quality_app),
    ("ml", ml_app),
    ("alerts", alerts_app),
    ("security", security_app),
    ("audit", audit_app),
    ("subscriptions", subscriptions_app),
    ("screens", screens_app),
    ("reports", reports_app),
    ("cluster", cluster_app),
    ("backup", backup_app),
    ("landing", landing_app),
    ("tls", service.tls_app),
    ("tasks", tasks_app),
):
    app.add_typer(group, name=name)


def main() -> None:
    """Entry point that turns OpsLake errors into a message and an exit code."""
    try:
        app(standalone_mode=False)
    except OpsLakeError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (typer's own click): one line, exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:  # the lake's file system or object store failed under a command
        console.print(
            f"[red]error:[/] the lake's storage failed: {exc}. Check OPSLAKE_HOME "
            "(and OPSLAKE_S3_ENDPOINT for S3), free space and permissions, then run "
            "the command again: landing writes are atomic, so nothing half-written "
            "is kept"
        )
        sys.exit(1)
