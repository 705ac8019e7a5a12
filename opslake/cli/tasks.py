"""``opslake tasks``: the collection tasks (list, enable, disable, run once, reset)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from opslake.cli._common import console, current_settings, stdout
from opslake.errors import ConfigError

tasks_app = typer.Typer(
    help="Collection tasks (collection/tasks/*.yaml): list, enable, "
    "disable, run once, reset a tripped breaker.",
    no_args_is_help=True,
)


def _tasks(names: list[str] | None = None, all_: bool = False) -> list:
    from opslake.ingest import collect
    from opslake.ingest.tasks import load_tasks

    tasks = load_tasks()
    if all_:
        return tasks
    if not names:
        raise ConfigError("name at least one task, or pass --all; see `opslake tasks list`")
    return collect.select(tasks, names)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


@tasks_app.command("list")
def tasks_list() -> None:
    """Every task: connector, frequency, enabled, health, last success and lag."""
    from opslake.ingest import collect
    from opslake.ingest.tasks import load_tasks, tasks_dir

    tasks = load_tasks()
    table = Table(
        "task",
        "connector",
        "every",
        "enabled",
        "state",
        "last success",
        "lag",
        "reason",
        title=f"collection tasks in {tasks_dir()}",
    )
    for s in collect.inventory(current_settings(), tasks):
        last = s.last_success.isoformat(timespec="seconds") if s.last_success else "-"
        table.add_row(
            s.name,
            s.connector,
            f"{s.every_seconds}s",
            "yes" if s.enabled else "no",
            s.state,
            last,
            _ago(s.lag_seconds),
            s.reason or "",
        )
    stdout.print(table)


@tasks_app.command("enable")
def tasks_enable(
    names: Annotated[list[str] | None, typer.Argument(help="Task names.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every task.")] = False,
) -> None:
    """Enable tasks: their schedules collect (overrides `enabled` in the task file)."""
    from opslake.ingest import collect

    chosen = [t.name for t in _tasks(names, all_)]
    collect.set_enabled(current_settings(), chosen, True)
    console.print(f"enabled: {', '.join(chosen) or 'none'}")


@tasks_app.command("disable")
def tasks_disable(
    names: Annotated[list[str] | None, typer.Argument(help="Task names.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every task.")] = False,
) -> None:
    """Disable tasks: their schedules skip (overrides `enabled` in the task file)."""
    from opslake.ingest import collect

    chosen = [t.name for t in _tasks(names, all_)]
    collect.set_enabled(current_settings(), chosen, False)
    console.print(f"disabled: {', '.join(chosen) or 'none'}")


@tasks_app.command("run")
def tasks_run(names: Annotated[list[str], typer.Argument(help="Task names.")]) -> None:
    """Run tasks once now, enabled or not (a paused one is skipped); print what landed."""
    from opslake.ingest import collect

    settings = current_settings()
    table = Table("task", "source", "batch", "bytes", "connector", title="landed")
    failed = []
    for task in _tasks(names):
        result = collect.run_task(task, settings)
        if result.skipped:
            console.print(f"[yellow]skipped[/] {task.name}: {result.skipped}")
            continue
        record = result.record
        for b in [*result.landed, result.metrics_batch, result.alert_batch]:
            if b is not None:
                table.add_row(task.name, b.source, b.batch_id, f"{b.bytes:,}", b.connector)
        status = "[green]ok[/]" if record.ok else f"[red]failed[/] {record.error}"
        console.print(
            f"{task.name}: {status} ({record.wall_s:.2f} s, cpu {record.cpu_s:.2f} s,"
            f" {record.bytes:,} bytes, peak RSS {record.rss_mb:.0f} MiB)"
        )
        if result.paused_reason:
            console.print(
                f"[red]paused[/] {task.name}: {result.paused_reason}; fix the cause, "
                f"then `opslake tasks reset {task.name}`"
            )
        if not record.ok:
            failed.append(task.name)
    stdout.print(table)
    if failed:
        from opslake.errors import CollectionError

        raise CollectionError(
            f"{', '.join(failed)} failed (see above); "
            "`opslake tasks list` shows each task's last error"
        )


@tasks_app.command("reset")
def tasks_reset(names: Annotated[list[str], typer.Argument(help="Task names.")]) -> None:
    """Close tripped circuit breakers so the tasks run again."""
    from opslake.ingest import collect

    settings = current_settings()
    for task in _tasks(names):
        result = collect.reset(settings, task)
        note = " (resolved alert landed)" if result.alert_batch else " (was not paused)"
        console.print(f"reset {task.name}{note}")
