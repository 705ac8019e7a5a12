"""``opslake simulate``, ``materialize``, ``status``, ``quarantine`` and ``warehouse``: the
lake's days from landing to the serving warehouse."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from opslake.cli._common import console, current_settings, parse_day, progress, stdout
from opslake.errors import ConfigError
from opslake.settings import Settings

if TYPE_CHECKING:
    from opslake.orchestration.progress import Step
    from opslake.orchestration.runner import RunDay

warehouse_app = typer.Typer(
    help="The serving warehouse (DuckDB, read-only for readers).", no_args_is_help=True
)


def simulate(
    entities: Annotated[
        int, typer.Option(min=30, help="Approximate number of managed objects.")
    ] = 500,
    days: Annotated[int, typer.Option(min=1, help="Number of days to simulate.")] = 3,
    start: Annotated[
        str | None,
        typer.Option(
            help="First day (YYYY-MM-DD); default: so that the last day is yesterday (UTC)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 7,
    step: Annotated[int, typer.Option(min=10, help="Metric resolution in seconds.")] = 60,
    realistic: Annotated[
        bool,
        typer.Option(
            "--realistic",
            help="An imperfect CMDB (about 10 % of relations missing or stale, "
            "some unknown VMs and containers), faults that also reach CIs off the recorded "
            "topology, and unrelated anomalies overlapping faults; the ground truth records "
            "the real topology.",
        ),
    ] = False,
) -> None:
    """Land a simulated province estate (all five object kinds) in the real source formats."""
    from opslake.lake.landing import LandingZone
    from opslake.simulate import SimulationConfig
    from opslake.simulate import simulate as run_simulation

    first = parse_day(start, "--start") or datetime.now(UTC).date() - timedelta(days=days)
    settings = current_settings()
    zone = LandingZone.from_settings(settings)
    make = SimulationConfig.realistic if realistic else SimulationConfig
    config = make(seed=seed, entities=entities, days=days, start=first, step_seconds=step)
    with progress() as bar:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        truth = run_simulation(config, zone, progress=report)
    console.print(
        f"[green]simulated[/] {days} day(s) from {first} into {settings.home}: "
        + ", ".join(f"{name}={truth.count(name):,}" for name in truth.counts)
        + f"; {len(truth.faults)} faults with known root causes"
    )
    if truth.realism:
        r = truth.realism
        console.print(
            f"realistic: the CMDB misses {len(r['missing_relations']):,} relations, "
            f"records {len(r['stale_relations']):,} wrongly and lacks "
            f"{len(r['unknown_cis']):,} CIs; "
            f"{sum(1 for f in truth.faults if f['off_topology'])} faults reach CIs "
            f"off its topology; {len(r['noise']):,} unrelated anomalies overlap faults"
        )


def materialize(
    select: Annotated[
        list[str] | None,
        typer.Option(
            "--select",
            "-s",
            help="A layer (bronze) or an asset key (silver/events); '+' suffix "
            "adds downstream. Repeatable. Default: every layer.",
        ),
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="First day (default: first landed day).")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Last day (default: last landed day).")
    ] = None,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Run each step on the Dask workers of `opslake cluster up`, the "
            "Dagster instance on its PostgreSQL, the lake on S3; print who ran what.",
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Stream every Dagster event (DEBUG) to the console too; "
            "they are always in state_dir/logs/dagster-events.log.",
        ),
    ] = False,
) -> None:
    """Materialize landing → bronze → silver → gold for a range of days."""
    settings = current_settings()
    if verbose:
        settings = replace(settings, log_level="DEBUG")
    if not cluster:
        _materialize(settings, select, from_, to)
        return
    from opslake.cli.cluster import print_steps
    from opslake.orchestration.cluster import Cluster, ClusterRuns

    with ClusterRuns(Cluster(settings)) as runs:
        try:
            _materialize(runs.settings, select, from_, to, runs)
        finally:
            # Who ran what, also when a day failed.
            print_steps(runs.steps)


def _materialize(
    settings: Settings,
    select: list[str] | None,
    from_: str | None,
    to: str | None,
    run: RunDay | None = None,
) -> None:
    from opslake.lake.landing import LandingZone
    from opslake.orchestration import runner
    from opslake.orchestration.progress import StepWatcher

    landed = LandingZone.from_settings(settings).landed_days()
    first = parse_day(from_, "--from") or (date.fromisoformat(landed[0]) if landed else None)
    last = parse_day(to, "--to") or (date.fromisoformat(landed[-1]) if landed else None)
    if first is None or last is None:
        raise ConfigError("nothing has landed yet; run `opslake simulate` or give --from/--to")
    if first < settings.partition_start:
        raise ConfigError(
            f"{first} is before the first partition ({settings.partition_start}); "
            "set OPSLAKE_PARTITION_START earlier"
        )
    days = runner.day_range(first, last)
    with progress() as bar:
        task = bar.add_task("materializing", total=len(days))
        step_task = bar.add_task("", total=None)

        def step(change: Step) -> None:
            state = "" if change.status == "running" else f" {change.status}"
            bar.update(step_task, description=f"  {change.partition} {change.key}{state}")

        def done(day: str, result: object) -> None:
            bar.advance(task)
            console.print(f"[green]✓[/] {day}")

        with StepWatcher(step) as watcher:
            try:
                runner.materialize(settings, days, select or (), on_day=done, run=run)
            finally:
                bar.remove_task(step_task)
                if watcher.steps:
                    console.print(_step_summary(watcher.steps))
    warned = [w for s in watcher.steps for w in s.warnings]
    if warned:
        console.print(f"[yellow]{len(warned)} warning(s)[/], the first: {warned[0]}")
    console.print(f"every event: {settings.events_log}")


def _step_summary(steps: list[Step]) -> Table:
    """Steps per layer, in layer order: how many, how they ended, warnings, time, the slowest."""
    from opslake.lake.storage import LAYERS

    table = Table(title="steps by layer", title_justify="left")
    for column in ("layer", "steps", "ok", "not ok", "warnings", "seconds", "slowest"):
        table.add_column(column, justify="left" if column in ("layer", "slowest") else "right")
    layers: dict[str, list[Step]] = {}
    for s in steps:
        layers.setdefault(s.layer, []).append(s)
    order = {layer: i for i, layer in enumerate(LAYERS)}
    for layer, group in sorted(
        layers.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])
    ):
        slowest = max(group, key=lambda s: s.seconds)
        bad = [s for s in group if s.status != "ok"]
        warned = sum(len(s.warnings) for s in group)
        table.add_row(
            layer,
            str(len(group)),
            str(len(group) - len(bad)),
            f"[red]{len(bad)}[/]" if bad else "0",
            f"[yellow]{warned}[/]" if warned else "0",
            f"{sum(s.seconds for s in group):.1f}",
            f"{slowest.key} {slowest.partition} ({slowest.seconds:.1f} s)",
        )
    return table


@warehouse_app.command("build")
def warehouse_build(
    views: Annotated[bool, typer.Option("--views", help="List every view and its rows.")] = False,
) -> None:
    """Rebuild warehouse.duckdb from gold and swap it in atomically."""
    from opslake.lake.warehouse import open_read_only
    from opslake.orchestration import runner

    settings = current_settings()
    runner.refresh_serving(settings)
    con = open_read_only(settings.warehouse_path)
    try:
        rows = con.execute("SELECT name, rows FROM _opslake_warehouse ORDER BY name").fetchall()
    finally:
        con.close()
    if not views:
        stdout.print(
            f"{settings.warehouse_path}: {len(rows)} views, "
            f"{sum(count for _, count in rows):,} rows (--views lists them)"
        )
        return
    table = Table("view", "rows", title=str(settings.warehouse_path))
    for name, count in rows:
        table.add_row(name, f"{count:,}")
    stdout.print(table)


class StatusBy(StrEnum):
    """How ``opslake status`` groups the lake's partitions."""

    layer = "layer"
    table = "table"
    day = "day"


def status(
    by: Annotated[
        StatusBy,
        typer.Option(
            "--by", help="One row per layer, per table (its days summed) or per table and day."
        ),
    ] = StatusBy.table,
) -> None:
    """What is in the lake: rows (landing: batches) and bytes per layer, table or day."""
    from opslake.lake.inventory import inventory, rolled_up
    from opslake.lake.storage import Lake

    settings = current_settings()
    parts = inventory(Lake.from_settings(settings))
    if not parts:
        console.print(f"the lake at {settings.home} is empty; run `opslake simulate`")
        return
    table = Table(
        "layer",
        "table",
        "days" if by != StatusBy.day else "day",
        "files",
        "rows (landing: batches)",
        "bytes",
        title=f"lake at {settings.home}",
    )
    for layer, name, days, files, rows, size in rolled_up(parts, by.value):
        table.add_row(layer, name, days, f"{files:,}", f"{rows:,}", f"{size:,}")
    stdout.print(table)
    if settings.warehouse_path.exists():
        console.print(f"warehouse: {settings.warehouse_path}")


def quarantine_show(
    day: Annotated[str | None, typer.Option("--date", help="Only this day (YYYY-MM-DD).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 20,
) -> None:
    """Lines that could not be parsed, with the source, batch, line number and reason."""
    from opslake.lake import quarantine
    from opslake.lake.storage import Lake

    dts = [parse_day(day, "--date").isoformat()] if day else None
    rows = quarantine.read(Lake.from_settings(current_settings()), dts).to_pylist()
    table = Table("source", "batch", "line", "reason", "raw", title=f"{len(rows):,} quarantined")
    for row in rows[:limit]:
        table.add_row(
            row["source"], row["batch_id"], str(row["line_no"]), row["reason"], row["raw"][:80]
        )
    stdout.print(table)
