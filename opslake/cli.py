"""The ``opslake`` command: simulate, materialize, build the warehouse, serve the UI and API, status."""

from __future__ import annotations

import sys
import warnings
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from opslake.cli_alerts import app as alerts_app
from opslake.cli_backup import app as backup_app
from opslake.cli_catalog import app as catalog_app
from opslake.cli_cluster import app as cluster_app
from opslake.cli_landing import app as landing_app
from opslake.cli_ml import app as ml_app
from opslake.cli_quality import app as quality_app
from opslake.cli_reports import app as reports_app
from opslake.cli_screens import app as screens_app
from opslake.cli_security import app as security_app
from opslake.cli_security import audit_app
from opslake.cli_subscriptions import app as subscriptions_app
from opslake.errors import ConfigError, OpsLakeError
from opslake.settings import Settings, host_port

if TYPE_CHECKING:
    from opslake.orchestration.progress import Step
    from opslake.orchestration.runner import RunDay

# Great Expectations imports pyspark when it is installed (the tests' Spark reader is), and
# pyspark warns on import about pandas 3, which nothing here asks pyspark to handle.
warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)

app = typer.Typer(help="OpsLake: the AIOps lakehouse of a unified government ops centre.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
warehouse_app = typer.Typer(help="The serving warehouse (DuckDB, read-only for readers).",
                            no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")
app.add_typer(catalog_app, name="catalog")
app.add_typer(quality_app, name="quality")
app.add_typer(ml_app, name="ml")
app.add_typer(alerts_app, name="alerts")
app.add_typer(security_app, name="security")
app.add_typer(audit_app, name="audit")
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(screens_app, name="screens")
app.add_typer(reports_app, name="reports")
app.add_typer(cluster_app, name="cluster")
app.add_typer(backup_app, name="backup")
app.add_typer(landing_app, name="landing")
# Piped output (make, CI logs) gets wide lines instead of rich's 80-column default.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
stdout = Console(width=None if sys.stdout.isatty() else 160)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=console, disable=not console.is_terminal)


def _settings() -> Settings:
    return Settings.from_env()


def _parse_day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a date; use YYYY-MM-DD") from None


@app.command()
def simulate(
    entities: Annotated[int, typer.Option(min=30, help="Approximate number of managed objects.")] = 500,
    days: Annotated[int, typer.Option(min=1, help="Number of days to simulate.")] = 3,
    start: Annotated[str | None, typer.Option(help="First day (YYYY-MM-DD); default: "
                                              "so that the last day is yesterday (UTC).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 7,
    step: Annotated[int, typer.Option(min=10, help="Metric resolution in seconds.")] = 60,
    realistic: Annotated[bool, typer.Option(
        "--realistic", help="An imperfect CMDB (about 10 % of relations missing or stale, "
        "some unknown VMs and containers), faults that also reach CIs off the recorded "
        "topology, and unrelated anomalies overlapping faults; the ground truth records "
        "the real topology.")] = False,
) -> None:
    """Land a simulated province estate (all five object kinds) in the real source formats."""
    from opslake.lake.landing import LandingZone
    from opslake.simulate import SimulationConfig
    from opslake.simulate import simulate as run_simulation

    first = _parse_day(start, "--start") or datetime.now(UTC).date() - timedelta(days=days)
    settings = _settings()
    zone = LandingZone.from_settings(settings)
    make = SimulationConfig.realistic if realistic else SimulationConfig
    config = make(seed=seed, entities=entities, days=days, start=first, step_seconds=step)
    with _progress() as progress:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        truth = run_simulation(config, zone, progress=report)
    console.print(f"[green]simulated[/] {days} day(s) from {first} into {settings.home}: "
                  + ", ".join(f"{name}={truth.count(name):,}" for name in truth.counts)
                  + f"; {len(truth.faults)} faults with known root causes")
    if truth.realism:
        r = truth.realism
        console.print(f"realistic: the CMDB misses {len(r['missing_relations']):,} relations, "
                      f"records {len(r['stale_relations']):,} wrongly and lacks "
                      f"{len(r['unknown_cis']):,} CIs; "
                      f"{sum(1 for f in truth.faults if f['off_topology'])} faults reach CIs "
                      f"off its topology; {len(r['noise']):,} unrelated anomalies overlap faults")


@app.command()
def materialize(
    select: Annotated[list[str] | None, typer.Option(
        "--select", "-s", help="A layer (bronze) or an asset key (silver/events); '+' suffix "
        "adds downstream. Repeatable. Default: every layer.")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First day (default: first "
                                              "landed day).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Last day (default: last landed day).")] = None,
    cluster: Annotated[bool, typer.Option(
        "--cluster", help="Run each step on the Dask workers of `opslake cluster up`, the "
        "Dagster instance on its PostgreSQL, the lake on S3; print who ran what.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Stream every Dagster event (DEBUG) to the console too; "
        "they are always in state_dir/logs/dagster-events.log.")] = False,
) -> None:
    """Materialize landing → bronze → silver → gold for a range of days."""
    settings = _settings()
    if verbose:
        settings = replace(settings, log_level="DEBUG")
    if not cluster:
        _materialize(settings, select, from_, to)
        return
    from opslake.cli_cluster import print_steps
    from opslake.orchestration.cluster import Cluster, ClusterRuns

    with ClusterRuns(Cluster(settings)) as runs:
        try:
            _materialize(runs.settings, select, from_, to, runs)
        finally:
            # Who ran what, also when a day failed.
            print_steps(runs.steps)


def _materialize(settings: Settings, select: list[str] | None, from_: str | None,
                 to: str | None, run: RunDay | None = None) -> None:
    from opslake.lake.landing import LandingZone
    from opslake.orchestration import runner
    from opslake.orchestration.progress import StepWatcher

    landed = LandingZone.from_settings(settings).landed_days()
    first = _parse_day(from_, "--from") or (date.fromisoformat(landed[0]) if landed else None)
    last = _parse_day(to, "--to") or (date.fromisoformat(landed[-1]) if landed else None)
    if first is None or last is None:
        raise ConfigError("nothing has landed yet; run `opslake simulate` or give --from/--to")
    if first < settings.partition_start:
        raise ConfigError(f"{first} is before the first partition ({settings.partition_start}); "
                          "set OPSLAKE_PARTITION_START earlier")
    days = runner.day_range(first, last)
    with _progress() as progress:
        task = progress.add_task("materializing", total=len(days))
        step_task = progress.add_task("", total=None)

        def step(change: Step) -> None:
            state = "" if change.status == "running" else f" {change.status}"
            progress.update(step_task, description=f"  {change.partition} {change.key}{state}")

        def done(day: str, result: object) -> None:
            progress.advance(task)
            console.print(f"[green]✓[/] {day}")

        with StepWatcher(step) as watcher:
            try:
                runner.materialize(settings, days, select or (), on_day=done, run=run)
            finally:
                progress.remove_task(step_task)
                if watcher.steps:
                    console.print(_step_summary(watcher.steps))
    console.print(f"every event: {settings.events_log}")


def _step_summary(steps: list[Step]) -> Table:
    """Steps per layer: how many, how they ended, their time and the slowest."""
    table = Table(title="steps by layer", title_justify="left")
    for column in ("layer", "steps", "ok", "not ok", "seconds", "slowest"):
        table.add_column(column, justify="left" if column in ("layer", "slowest") else "right")
    layers: dict[str, list[Step]] = {}
    for s in steps:
        layers.setdefault(s.key.split("__", 1)[0], []).append(s)
    for layer, group in layers.items():
        slowest = max(group, key=lambda s: s.seconds)
        bad = [s for s in group if s.status != "ok"]
        table.add_row(layer, str(len(group)), str(len(group) - len(bad)),
                      f"[red]{len(bad)}[/]" if bad else "0",
                      f"{sum(s.seconds for s in group):.1f}",
                      f"{slowest.key} {slowest.partition} ({slowest.seconds:.1f} s)")
    return table


@warehouse_app.command("build")
def warehouse_build() -> None:
    """Rebuild warehouse.duckdb from gold and swap it in atomically."""
    from opslake.lake.warehouse import open_read_only
    from opslake.orchestration import runner

    settings = _settings()
    runner.refresh_serving(settings)
    con = open_read_only(settings.warehouse_path)
    try:
        rows = con.execute("SELECT name, rows FROM _opslake_warehouse ORDER BY name").fetchall()
    finally:
        con.close()
    table = Table("view", "rows", title=str(settings.warehouse_path))
    for name, count in rows:
        table.add_row(name, f"{count:,}")
    stdout.print(table)


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the Dagster UI.")] = 3000,
    cluster: Annotated[bool, typer.Option(
        "--cluster", help="Show the instance of `opslake cluster up` (its PostgreSQL, the "
                          "lake on its S3): the runs of `materialize --cluster`.")] = False,
) -> None:
    """Serve the Dagster UI (webserver + daemon) until Ctrl-C, then stop both cleanly."""
    from opslake.orchestration.ui import serve

    serve(_settings(), host=host, port=port, console=console, cluster=cluster)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the data service (HTTPS when "
                                      "OPSLAKE_TLS_CERT and OPSLAKE_TLS_KEY are set).")] = 8700,
    syslog_port: Annotated[int | None, typer.Option(
        help="Also receive syslog (RFC 5424/3164, UDP and TCP) on this port.")] = None,
    syslog_tls_port: Annotated[int | None, typer.Option(
        help="Also receive syslog over TLS (RFC 5425: TLS 1.2+, octet-counted) on this TCP "
             "port, with OPSLAKE_TLS_CERT and OPSLAKE_TLS_KEY.")] = None,
    mqtt: Annotated[str | None, typer.Option(
        "--mqtt", metavar="HOST:PORT",
        help="Also subscribe to this MQTT broker (QoS 1) and land metric/event messages.")
    ] = None,
    mqtt_topic: Annotated[list[str] | None, typer.Option(
        "--mqtt-topic", help="Topic filter to subscribe to (repeatable) [default: opslake/#].")
    ] = None,
    mqtt_username: Annotated[str | None, typer.Option(
        help="Sign in to the broker as this user; the password comes from the environment "
             "variable OPSLAKE_MQTT_PASSWORD, never the command line.")] = None,
    mqtt_tls: Annotated[bool, typer.Option(
        "--mqtt-tls", help="Speak TLS 1.2+ to the broker, verified against --mqtt-ca (or the "
                           "system's CAs).")] = False,
    mqtt_ca: Annotated[Path | None, typer.Option(
        help="CA certificate (PEM) the broker's certificate must chain to; implies "
             "--mqtt-tls.")] = None,
    mqtt_cert: Annotated[Path | None, typer.Option(
        help="Client certificate (PEM) to present to the broker, with --mqtt-key; implies "
             "--mqtt-tls.")] = None,
    mqtt_key: Annotated[Path | None, typer.Option(
        help="Private key (PEM, mode 600) of --mqtt-cert.")] = None,
    dagster_door: Annotated[int | None, typer.Option(
        help="Open the Dagster UI's door on this port: sign-in required, data engineers and "
             "administrators only, proxied to OPSLAKE_DAGSTER_UPSTREAM [default: "
             "OPSLAKE_DAGSTER_DOOR_PORT, else shut].")] = None,
    superset_door: Annotated[int | None, typer.Option(
        help="Open Superset's door on this port: sign-in required, roles mapped, proxied to "
             "OPSLAKE_SUPERSET_UPSTREAM [default: OPSLAKE_SUPERSET_DOOR_PORT, else shut]; "
             "Superset must run with OPSLAKE_SUPERSET_DOOR_PORT set.")] = None,
) -> None:
    """Serve the data service (push ingestion, /docs, /login) and its doors until Ctrl-C or
    SIGTERM."""
    import dataclasses

    from opslake.api import gateway
    from opslake.api.app import Listeners, create_app
    from opslake.ingest.listeners import mqtt as mqtt_listener
    from opslake.security import tls

    settings = _settings()
    settings = dataclasses.replace(
        settings, dagster_door_port=dagster_door or settings.dagster_door_port,
        superset_door_port=superset_door or settings.superset_door_port)
    door_list = gateway.doors(settings)
    gateway.check_ports(port, door_list)
    broker = host_port(mqtt, "--mqtt") if mqtt else None
    mqtt_tls = mqtt_tls or any((mqtt_ca, mqtt_cert, mqtt_key))
    if broker is None and (mqtt_topic or mqtt_username or mqtt_tls):
        raise ConfigError("--mqtt-topic, --mqtt-username and --mqtt-tls/-ca/-cert/-key need "
                          "--mqtt HOST:PORT (the broker to subscribe to)")
    if broker is not None and (mqtt_username is None) != (settings.mqtt_password is None):
        raise ConfigError("--mqtt-username needs its password in OPSLAKE_MQTT_PASSWORD, and "
                          "OPSLAKE_MQTT_PASSWORD needs --mqtt-username; set both or neither")
    topics = mqtt_topic or ["opslake/#"]
    auth = mqtt_listener.MqttAuth(
        mqtt_username, settings.mqtt_password,
        tls.client_context(mqtt_ca, mqtt_cert, mqtt_key, what="MQTT TLS") if mqtt_tls else None)
    server_tls = (tls.server_context(settings.tls_cert, settings.tls_key,
                                     what="OPSLAKE_TLS_CERT/OPSLAKE_TLS_KEY")
                  if settings.tls_cert and settings.tls_key else None)
    if syslog_tls_port is not None and server_tls is None:
        raise ConfigError("--syslog-tls-port needs OPSLAKE_TLS_CERT and OPSLAKE_TLS_KEY (the "
                          "service's certificate and key); `opslake tls self-signed --out DIR` "
                          "makes a pair")
    if syslog_tls_port is not None and syslog_tls_port in (syslog_port, port):
        raise ConfigError(f"--syslog-tls-port {syslog_tls_port} is already the data service's "
                          "or plain syslog's port; give it a port of its own (6514 is RFC 5425's)")

    api = create_app(settings, Listeners(
        host=host, syslog_port=syslog_port, syslog_tls_port=syslog_tls_port,
        tls=server_tls if syslog_tls_port is not None else None, mqtt=broker,
        mqtt_topics=topics, mqtt_auth=auth))
    scheme = "https" if server_tls else "http"
    door_apps = [gateway.DoorApp(door, api.state.sessions, api.state.security.audit,
                                 login_port=port, scheme=scheme) for door in door_list]
    console.print(f"data service on {scheme}://{host}:{port} (API docs: /docs, sign-in: /login)"
                  + (f"; syslog on {host}:{syslog_port} UDP/TCP" if syslog_port else "")
                  + (f"; syslog over TLS on {host}:{syslog_tls_port}" if syslog_tls_port else "")
                  + (f"; MQTT {mqtt}{' (TLS)' if mqtt_tls else ''} topics {', '.join(topics)}"
                     if broker else "")
                  + "".join(f"; {d.door.name} door on {scheme}://{host}:{d.door.port} → "
                            f"{d.door.upstream}" for d in door_apps))
    gateway.run_servers([(api, port), *((d, d.door.port) for d in door_apps)], host, server_tls)


tls_app = typer.Typer(help="TLS certificates for `opslake serve` (HTTPS, syslog over TLS, "
                      "MQTT).", no_args_is_help=True)
app.add_typer(tls_app, name="tls")


@tls_app.command("self-signed")
def tls_self_signed(
    out: Annotated[Path, typer.Option(help="Directory to write opslake.crt and opslake.key "
                                           "(mode 600) into.")],
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="IP address or DNS name the certificate is for (repeatable) "
                       "[default: 127.0.0.1 and localhost].")] = None,
    days: Annotated[int, typer.Option(min=1, help="Days the certificate is valid.")] = 825,
) -> None:
    """Make a self-signed certificate and key for `opslake serve` (loopback and tests)."""
    from opslake.security import tls

    cert, key = tls.self_signed(out, host or tls.DEFAULT_HOSTS, days=days)
    console.print(f"wrote {cert} and {key} (mode 600); serve with TLS:")
    stdout.print(f"export OPSLAKE_TLS_CERT={cert} OPSLAKE_TLS_KEY={key}")


class StatusBy(StrEnum):
    """How ``opslake status`` groups the lake's partitions."""

    layer = "layer"
    table = "table"
    day = "day"


@app.command()
def status(
    by: Annotated[StatusBy, typer.Option(
        "--by", help="One row per layer, per table (its days summed) or per table and day.")
    ] = StatusBy.table,
) -> None:
    """What is in the lake: rows (landing: batches) and bytes per layer, table or day."""
    from opslake.lake.inventory import inventory, rolled_up
    from opslake.lake.storage import Lake

    settings = _settings()
    parts = inventory(Lake.from_settings(settings))
    if not parts:
        console.print(f"the lake at {settings.home} is empty; run `opslake simulate`")
        return
    table = Table("layer", "table", "days" if by != StatusBy.day else "day", "files",
                  "rows (landing: batches)", "bytes", title=f"lake at {settings.home}")
    for layer, name, days, files, rows, size in rolled_up(parts, by.value):
        table.add_row(layer, name, days, f"{files:,}", f"{rows:,}", f"{size:,}")
    stdout.print(table)
    if settings.warehouse_path.exists():
        console.print(f"warehouse: {settings.warehouse_path}")


@app.command("quarantine")
def quarantine_show(
    day: Annotated[str | None, typer.Option("--date", help="Only this day (YYYY-MM-DD).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 20,
) -> None:
    """Lines that could not be parsed, with the source, batch, line number and reason."""
    from opslake.lake import quarantine
    from opslake.lake.storage import Lake

    dts = [_parse_day(day, "--date").isoformat()] if day else None
    rows = quarantine.read(Lake.from_settings(_settings()), dts).to_pylist()
    table = Table("source", "batch", "line", "reason", "raw", title=f"{len(rows):,} quarantined")
    for row in rows[:limit]:
        table.add_row(row["source"], row["batch_id"], str(row["line_no"]), row["reason"],
                      row["raw"][:80])
    stdout.print(table)


tasks_app = typer.Typer(help="Collection tasks (collection/tasks/*.yaml): list, enable, "
                        "disable, run once, reset a tripped breaker.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")


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
    table = Table("task", "connector", "every", "enabled", "state", "last success", "lag",
                  "reason", title=f"collection tasks in {tasks_dir()}")
    for s in collect.inventory(_settings(), tasks):
        last = s.last_success.isoformat(timespec="seconds") if s.last_success else "-"
        table.add_row(s.name, s.connector, f"{s.every_seconds}s", "yes" if s.enabled else "no",
                      s.state, last, _ago(s.lag_seconds), s.reason or "")
    stdout.print(table)


@tasks_app.command("enable")
def tasks_enable(
    names: Annotated[list[str] | None, typer.Argument(help="Task names.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every task.")] = False,
) -> None:
    """Enable tasks: their schedules collect (overrides `enabled` in the task file)."""
    from opslake.ingest import collect

    chosen = [t.name for t in _tasks(names, all_)]
    collect.set_enabled(_settings(), chosen, True)
    console.print(f"enabled: {', '.join(chosen) or 'none'}")


@tasks_app.command("disable")
def tasks_disable(
    names: Annotated[list[str] | None, typer.Argument(help="Task names.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every task.")] = False,
) -> None:
    """Disable tasks: their schedules skip (overrides `enabled` in the task file)."""
    from opslake.ingest import collect

    chosen = [t.name for t in _tasks(names, all_)]
    collect.set_enabled(_settings(), chosen, False)
    console.print(f"disabled: {', '.join(chosen) or 'none'}")


@tasks_app.command("run")
def tasks_run(names: Annotated[list[str], typer.Argument(help="Task names.")]) -> None:
    """Run tasks once now, enabled or not (a paused one is skipped); print what landed."""
    from opslake.ingest import collect

    settings = _settings()
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
        console.print(f"{task.name}: {status} ({record.wall_s:.2f} s, cpu {record.cpu_s:.2f} s,"
                      f" {record.bytes:,} bytes, peak RSS {record.rss_mb:.0f} MiB)")
        if result.paused_reason:
            console.print(f"[red]paused[/] {task.name}: {result.paused_reason}; fix the cause, "
                          f"then `opslake tasks reset {task.name}`")
        if not record.ok:
            failed.append(task.name)
    stdout.print(table)
    if failed:
        from opslake.errors import CollectionError

        raise CollectionError(f"{', '.join(failed)} failed (see above); "
                              "`opslake tasks list` shows each task's last error")


@tasks_app.command("reset")
def tasks_reset(names: Annotated[list[str], typer.Argument(help="Task names.")]) -> None:
    """Close tripped circuit breakers so the tasks run again."""
    from opslake.ingest import collect

    settings = _settings()
    for task in _tasks(names):
        result = collect.reset(settings, task)
        note = " (resolved alert landed)" if result.alert_batch else " (was not paused)"
        console.print(f"reset {task.name}{note}")


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
        console.print(f"[red]error:[/] the lake's storage failed: {exc}. Check OPSLAKE_HOME "
                      "(and OPSLAKE_S3_ENDPOINT for S3), free space and permissions, then run "
                      "the command again: landing writes are atomic, so nothing half-written "
                      "is kept")
        sys.exit(1)
