"""Serve the Dagster webserver and daemon as child process groups, stopped cleanly together.

``dagster dev`` started from a script ignores SIGTERM unless it runs under job control, and its
children then outlive it; running the webserver and the daemon ourselves, each in its own
session, lets Ctrl-C stop exactly what we started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from opslake.errors import OpsLakeError
from opslake.lake.landing import LandingZone
from opslake.orchestration.runner import instance
from opslake.settings import Settings

MODULE = "opslake.orchestration.definitions"


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def start(
    settings: Settings, host: str, port: int, log_dir: Path, *, cluster: bool = False
) -> list[subprocess.Popen]:
    """Start webserver and daemon (each in a new session); returns the processes.

    ``cluster``: on the instance of ``opslake cluster up`` (its PostgreSQL, its lake on S3)
    instead of this machine's, so the runs of ``materialize --cluster`` are the ones shown.
    """
    if cluster:
        from opslake.orchestration.cluster import PG_URL_ENV, Cluster

        part = Cluster(settings)
        home = part.instance_home()
        env = {
            **os.environ,
            **part.environment(),
            PG_URL_ENV: part.postgres_url(),
            "DAGSTER_HOME": str(home),
        }
    else:
        instance(settings).dispose()  # a fresh home needs its instance directory and config
        env = {**os.environ, "DAGSTER_HOME": str(settings.dagster_home)}
    env = with_partition_start(env)
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = {
        "webserver": [_bin("dagster-webserver"), "-h", host, "-p", str(port), "-m", MODULE],
        "daemon": [_bin("dagster-daemon"), "run", "-m", MODULE],
    }
    procs = []
    for name, cmd in commands.items():
        log = open(log_dir / f"dagster-{name}.log", "ab")  # noqa: SIM115 (child owns it)
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
    return procs


def with_partition_start(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``OPSLAKE_PARTITION_START`` at the first day landed in its lake, unless
    it names one: the UI then lists the days there are, not every day since the default."""
    if env.get("OPSLAKE_PARTITION_START"):
        return env
    landed = LandingZone.from_settings(Settings.from_env(env)).landed_days()
    return {**env, "OPSLAKE_PARTITION_START": landed[0]} if landed else env


def stop(procs: list[subprocess.Popen], timeout: float = 15.0) -> None:
    """Terminate each process group, then kill what is left after ``timeout``."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def serve(
    settings: Settings, host: str, port: int, console: Console, *, cluster: bool = False
) -> None:
    """Run until Ctrl-C (or until a child dies), then stop both children."""
    log_dir = settings.state_dir / "logs"
    # A supervisor stopping us with SIGTERM gets the same clean shutdown as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    procs = start(settings, host, port, log_dir, cluster=cluster)
    which = "the cluster's instance" if cluster else "this machine's instance"
    console.print(
        f"Dagster UI of {which} on http://{host}:{port} (logs in {log_dir}); Ctrl-C stops it"
    )
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        dead = next(p for p in procs if p.poll() is not None)
        raise OpsLakeError(
            f"{' '.join(dead.args[:2])} exited with {dead.returncode}; see {log_dir}"
        )
    except KeyboardInterrupt:
        console.print("stopping Dagster…")
    finally:
        stop(procs)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
