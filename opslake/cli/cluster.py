"""``opslake cluster …``: the local scale-out cluster: up, down, status, env.

The logic lives in :mod:`opslake.orchestration.cluster`; these commands only call it and print.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from opslake.cli._admin import audited
from opslake.cli._common import console, stdout
from opslake.settings import Settings

if TYPE_CHECKING:
    from opslake.orchestration.cluster import Cluster, StepRun

app = typer.Typer(
    help="Local scale-out cluster: PostgreSQL (Dagster's instance), an S3 "
    "endpoint (the lake), a Dask scheduler and workers.",
    no_args_is_help=True,
)
# Piped output (make, CI logs, tests) gets wide lines instead of rich's 80-column default.


def _cluster() -> Cluster:
    # Imported here: Dagster and Dask are slow to import, and `--help` should not wait.
    from opslake.orchestration.cluster import Cluster

    return Cluster(Settings.from_env())


@app.command("up")
def up(
    workers: Annotated[int, typer.Option(min=1, help="Number of Dask workers.")] = 2,
) -> None:
    """Start PostgreSQL, S3 (unless the lake is on S3), the scheduler and N workers (idempotent)."""
    cluster = _cluster()
    with audited("opslake cluster up", workers=workers):
        cluster.up(workers, say=console.print)
    status()


@app.command("down")
def down() -> None:
    """Stop every part by its PID; PostgreSQL's data and the lake stay for the next `up`."""
    with audited("opslake cluster down"):
        _cluster().down(say=console.print)


@app.command("status")
def status() -> None:
    """Each part, its PID, port and health (exit 1 when a part is not up)."""
    from opslake.errors import ClusterError

    parts = _cluster().status()
    table = Table("part", "pid", "port", "health", "detail", title="opslake cluster")
    for part in parts:
        table.add_row(
            part.name, str(part.pid or "–"), str(part.port or "–"), part.health, part.detail
        )
    stdout.print(table)
    if down := [p.name for p in parts if p.health not in ("up", "external")]:
        raise ClusterError(
            f"not up: {', '.join(down)}; run `opslake cluster up --workers N` "
            "(logs under the state dir, cluster/logs/)"
        )


@app.command("env")
def env() -> None:
    """Print `export` lines that point this shell at the cluster's lake (eval them)."""
    for name, value in _cluster().environment().items():
        typer.echo(f"export {name}={shlex.quote(value)}")


def print_steps(steps: Sequence[StepRun]) -> None:
    """The per-step table of a cluster run: which worker ran each step, for how long."""
    table = Table("day", "job", "step", "worker", "seconds", title="steps on the cluster")
    for step in sorted(steps, key=lambda s: (s.day, s.job, s.step)):
        table.add_row(step.day, step.job, step.step, step.worker, f"{step.seconds:.2f}")
    stdout.print(table)
    per_worker: dict[str, int] = {}
    for step in steps:
        per_worker[step.worker] = per_worker.get(step.worker, 0) + 1
    console.print(
        "steps per worker: " + ", ".join(f"{w}={n}" for w, n in sorted(per_worker.items()))
    )
