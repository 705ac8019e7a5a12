"""Collection tasks against a real node_exporter, through the real ``opslake tasks`` CLI.

node_exporter is installed by ``infra/install-services.sh`` (a failed install fails the
module) and started and stopped by PID with ``infra/services.sh`` on a free port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from opslake.ingest import collect
from opslake.ingest.parsers import alertmanager, prometheus_text
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.settings import Settings
from tests.integration.services import free_port, install_services, services_sh, wait_http

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "opslake"]
SERIES = {
    "opslake_collection_duration_seconds",
    "opslake_collection_cpu_seconds",
    "opslake_collection_bytes",
    "opslake_collection_rss_bytes",
    "opslake_collection_success",
}


@pytest.fixture(scope="module")
def node_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real node_exporter on a free loopback port."""
    install_services()
    run_dir = tmp_path_factory.mktemp("services")
    port = free_port()
    env = {
        **os.environ,
        "OPSLAKE_SERVICES_DIR": str(run_dir),
        "OPSLAKE_NODE_EXPORTER_PORT": str(port),
    }

    def services(*args: str) -> subprocess.CompletedProcess[str]:
        return services_sh(env, *args, "node_exporter")

    pid = None
    try:
        started = services("start")
        assert started.returncode == 0, started.stdout + started.stderr
        pid = int((run_dir / "node_exporter.pid").read_text())
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/metrics", timeout=30)
        yield url
    finally:
        stopped = services("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    if pid is not None:
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            alive = False
        assert not alive, f"node_exporter (pid {pid}) still runs after stop"


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "tasks", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def _row(listing: str, name: str) -> str:
    [line] = [ln for ln in listing.splitlines() if f" {name} " in ln]
    return line


def _batches(zone: LandingZone, source: str) -> list[LandedBatch]:
    return [b for d in zone.days(source) for b in zone.batches(source, d)]


def test_tasks_collect_from_node_exporter_and_the_breaker_pauses(
    node_exporter: str, tmp_path: Path
) -> None:
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    for name, max_bytes in (("node-live", 64 * 2**20), ("node-tiny", 10)):
        (tasks_dir / f"{name}.yaml").write_text(
            f"name: {name}\nconnector: prometheus-exporter-scrape\n"
            f"params:\n  url: {node_exporter}/metrics\nevery_seconds: 60\n"
            f"target: prometheus\nparse: prometheus_text\n"
            f"limits: {{max_bytes: {max_bytes}, max_seconds: 30}}\nenabled: false\n"
        )
    home = tmp_path / "lake"
    env = {
        **os.environ,
        "OPSLAKE_HOME": str(home),
        "OPSLAKE_TASKS_DIR": str(tasks_dir),
        "COLUMNS": "250",
    }
    env.pop("OPSLAKE_STATE_DIR", None)
    settings = Settings.from_env(env)
    zone = LandingZone.from_settings(settings)

    listed = _cli(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert "never" in _row(listed.stdout, "node-live")
    assert " no " in _row(listed.stdout, "node-live")

    enabled = _cli(env, "enable", "node-live")
    assert enabled.returncode == 0 and "enabled: node-live" in enabled.stderr
    assert collect.read_state(settings)["tasks"]["node-live"]["enabled"] is True

    ran = _cli(env, "run", "node-live")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "prometheus-exporter-scrape/1" in ran.stdout and "opslake-collector/1.0" in ran.stdout
    batches = _batches(zone, "prometheus")
    [scrape] = [b for b in batches if b.connector == "prometheus-exporter-scrape/1"]
    assert scrape.batch_id in ran.stdout
    parsed = prometheus_text.parse(zone.read(scrape), scrape)
    assert parsed.rejects == [] and parsed.table.num_rows > 100
    [own] = [b for b in batches if b.connector == "opslake-collector/1.0"]
    rows = prometheus_text.parse(zone.read(own), own).table.to_pylist()
    assert {r["metric"] for r in rows} == SERIES
    values = {r["metric"]: r["value"] for r in rows}
    assert values["opslake_collection_bytes"] == scrape.bytes
    assert values["opslake_collection_success"] == 1
    assert values["opslake_collection_rss_bytes"] > 10 * 2**20
    assert {prometheus_text.parse_label_set(r["label_set"])["entity_id"] for r in rows} == {
        "collector-node-live"
    }

    listed = _cli(env, "list")
    row = _row(listed.stdout, "node-live")
    assert " yes " in row and "healthy" in row
    assert scrape.received_at[:10] in row  # the last success, as an ISO date and time

    # node-tiny lands the scrape (the limit is judged on what a run cost) and then pauses.
    tripped = _cli(env, "run", "node-tiny")
    assert tripped.returncode == 0, tripped.stdout + tripped.stderr
    assert "paused" in tripped.stderr and "over max_bytes 10" in tripped.stderr
    listed = _cli(
        env,
        "list",
    )
    row = _row(listed.stdout, "node-tiny")
    assert "paused" in row and "over max_bytes 10" in row
    [event] = _batches(zone, "alertmanager")
    assert event.connector == "opslake-collector/1.0"
    [alert] = alertmanager.parse(zone.read(event), event).table.to_pylist()
    labels = dict(alert["labels"])
    assert labels["alertname"] == "CollectionTaskPaused" and alert["status"] == "firing"
    assert labels["entity_id"] == "collector-node-tiny"
    assert "over max_bytes 10" in dict(alert["annotations"])["summary"]

    skipped = _cli(env, "run", "node-tiny")
    assert skipped.returncode == 0 and "skipped" in skipped.stderr
    assert "opslake tasks reset node-tiny" in skipped.stderr

    reset = _cli(env, "reset", "node-tiny")
    assert reset.returncode == 0 and "resolved alert landed" in reset.stderr
    row = _row(_cli(env, "list").stdout, "node-tiny")
    assert "paused" not in row and "healthy" in row
    statuses = {
        a["status"]
        for b in _batches(zone, "alertmanager")
        for a in alertmanager.parse(zone.read(b), b).table.to_pylist()
    }
    assert statuses == {"firing", "resolved"}

    # Errors: an unknown task name, and --all for disable.
    unknown = _cli(env, "run", "nope")
    assert unknown.returncode == 5 and "no collection task named 'nope'" in unknown.stderr
    assert _cli(env, "disable", "--all").returncode == 0
    row = _row(_cli(env, "list").stdout, "node-live")
    assert " no " in row
