"""Pull connectors against real node_exporter, Prometheus and Alertmanager on loopback.

The services are installed by ``infra/install-services.sh`` (a failed install fails the
module, it is not skipped) and started and stopped by PID with ``infra/services.sh`` on
free ports in a temporary run directory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pyarrow.compute as pc
import pytest

from opslake.errors import CollectionError
from opslake.ingest.connectors.base import Connector
from opslake.ingest.connectors.probes import HttpProbe, ProbeSuite, TcpProbe
from opslake.ingest.connectors.prometheus_pull import (
    ExporterScrape,
    Federate,
    QueryRange,
    matrix_to_exposition,
)
from opslake.ingest.connectors.registry import available
from opslake.ingest.parsers import probes as probes_parser
from opslake.ingest.parsers import prometheus_text
from opslake.lake.landing import LandedBatch, LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.settings import Settings
from tests.integration.services import (
    free_port,
    install_services,
    pid_running,
    services_sh,
    wait_http,
)

NAMES = ("node_exporter", "prometheus", "alertmanager")


@dataclass(frozen=True)
class Services:
    run_dir: Path
    env: dict[str, str]
    pids: dict[str, int]
    node: str  # node_exporter base URL
    prom: str  # Prometheus base URL
    alertmanager: str


def _query(prom: str, query: str, at: float | None = None) -> list[dict]:
    params = {"query": query} | ({"time": f"{at:.3f}"} if at is not None else {})
    body = httpx.get(f"{prom}/api/v1/query", params=params, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    install_services()
    run_dir = tmp_path_factory.mktemp("services")
    ports = {"node_exporter": free_port(), "prometheus": free_port(), "alertmanager": free_port()}
    env = {
        **os.environ,
        "OPSLAKE_SERVICES_DIR": str(run_dir),
        "OPSLAKE_NODE_EXPORTER_PORT": str(ports["node_exporter"]),
        "OPSLAKE_PROMETHEUS_PORT": str(ports["prometheus"]),
        "OPSLAKE_ALERTMANAGER_PORT": str(ports["alertmanager"]),
        "OPSLAKE_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/v1/ingest/alertmanager",
    }
    env.pop("OPSLAKE_REMOTE_WRITE_URL", None)
    pids: dict[str, int] = {}
    try:
        started = services_sh(env, "start", *NAMES)
        assert started.returncode == 0, started.stdout + started.stderr
        pids = {n: int((run_dir / f"{n}.pid").read_text()) for n in NAMES}
        urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        wait_http(f"{urls['prometheus']}/-/ready", timeout=30)
        wait_http(f"{urls['alertmanager']}/-/ready", timeout=30)
        status = services_sh(env, "status", *NAMES)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in NAMES:
            assert f"{name} running pid={pids[name]}" in status.stdout
        yield Services(
            run_dir, env, pids, urls["node_exporter"], urls["prometheus"], urls["alertmanager"]
        )
    finally:
        stopped = services_sh(env, "stop", *NAMES)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    status = services_sh(env, "status", *NAMES)
    assert status.returncode == 3, status.stdout
    assert all(f"{n} stopped" in status.stdout for n in NAMES), status.stdout
    alive = [n for n, pid in pids.items() if pid_running(pid)]
    assert not alive, f"still running after stop: {alive}"


@pytest.fixture(scope="module")
def scraped_twice(services: Services) -> Services:
    """Prometheus has scraped node_exporter at least twice (deadline 40 s)."""
    deadline = time.monotonic() + 40
    while True:
        result = _query(services.prom, 'count_over_time(up{job="node"}[1m])')
        if result and float(result[0]["value"][1]) >= 2:
            up = _query(services.prom, 'up{job="node"}')
            assert up and up[0]["value"][1] == "1", up
            return services
        if time.monotonic() > deadline:
            log = (services.run_dir / "prometheus.log").read_text()[-2000:]
            pytest.fail(f"Prometheus did not scrape node_exporter twice in 40 s: {result}\n{log}")
        time.sleep(0.5)


def _landing(tmp_path: Path) -> tuple[Settings, LandingZone]:
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path / "lake")})
    return settings, LandingZone.from_settings(settings)


def _parse_prom(landing: LandingZone, batch: LandedBatch) -> prometheus_text.ParseResult:
    return prometheus_text.parse(landing.read(batch), batch)


def test_exporter_scrape_lands_node_metrics_that_parse(services: Services, tmp_path: Path) -> None:
    _, landing = _landing(tmp_path)
    now = datetime.now(UTC)
    [batch] = ExporterScrape(f"{services.node}/metrics").collect(landing, now)
    assert (batch.source, batch.fmt, batch.connector) == (
        "prometheus",
        "prom",
        "prometheus-exporter-scrape/1",
    )
    assert batch.received == now and not batch.duplicate
    parsed = _parse_prom(landing, batch)
    assert parsed.rejects == []
    table = parsed.table
    assert table.num_rows > 100
    metrics = set(table.column("metric").to_pylist())
    assert sum(m.startswith("node_") for m in metrics) > 20
    # No timestamps in an exporter's answer: every sample takes the batch's received time.
    assert set(table.column("ts").to_pylist()) == {
        now.replace(microsecond=now.microsecond // 1000 * 1000)
    }
    # A closed port is a CollectionError naming the URL.
    dead = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(CollectionError, match=dead.replace(".", r"\.")):
        ExporterScrape(dead).collect(landing, now)


def test_federate_to_silver_matches_what_prometheus_answers(
    scraped_twice: Services, tmp_path: Path
) -> None:
    prom = scraped_twice.prom
    settings, landing = _landing(tmp_path)
    [batch] = Federate(prom, ['{job="node"}']).collect(landing, datetime.now(UTC))
    assert batch.connector == "prometheus-federate/1"
    parsed = _parse_prom(landing, batch)
    assert parsed.rejects == [] and parsed.table.num_rows > 100

    # Today's daily partition only exists once the day is over (DAILY has end_offset=0), so
    # the run is made as of the end of the batch's day; harmless once end_offset is 1.
    day_end = datetime.fromisoformat(batch.dt).replace(tzinfo=UTC) + timedelta(days=1)
    with dg.partition_loading_context(effective_dt=day_end):
        runner.materialize(settings, [batch.dt], ["landing", "bronze", "silver"])
    points = Lake.from_settings(settings).read_table("silver", "metric_points", dts=[batch.dt])
    # One sample per federated series, none lost or duplicated on the way to silver.
    assert points.num_rows == parsed.table.num_rows
    assert set(points.column("batch_id").to_pylist()) == {batch.batch_id}
    load = points.filter(pc.equal(points.column("metric"), "node_load1")).to_pylist()
    assert len(load) == 1, load
    point = load[0]
    labels = dict(point["labels"])
    assert labels["job"] == "node"
    assert labels["instance"] == scraped_twice.node.removeprefix("http://")
    at = point["ts"].timestamp()
    selector = f'node_load1{{job="node",instance="{labels["instance"]}"}}'
    [answer] = _query(prom, selector, at=at)
    assert answer["value"][0] == pytest.approx(at, abs=1e-3)
    assert float(answer["value"][1]) == point["value"]


def _range_result(prom: str, start: datetime, end: datetime) -> list[dict]:
    """What Prometheus answers for `up` over [start, end] at a 5 s step."""
    body = httpx.get(
        f"{prom}/api/v1/query_range",
        timeout=10,
        params={
            "query": "up",
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": "5",
        },
    ).json()
    return body["data"]["result"]


def test_query_range_lands_and_parses_with_consistent_counts(
    scraped_twice: Services, tmp_path: Path
) -> None:
    prom = scraped_twice.prom
    _, landing = _landing(tmp_path)
    # Two scrapes exist, but the newest may be later than `end` (samples up to `end` are all
    # stored); wait until the window itself holds two steps so the comparison means something.
    deadline = time.monotonic() + 30
    while True:
        end = datetime.now(UTC) - timedelta(seconds=5)
        start = end - timedelta(minutes=1)
        result = _range_result(prom, start, end)
        expected = sum(len(s["values"]) for s in result)
        if expected >= 2 or time.monotonic() > deadline:
            break
        time.sleep(1)
    connector = QueryRange(prom, "up", start, end, step=5)
    [batch] = connector.collect(landing, datetime.now(UTC))
    assert (batch.source, batch.fmt, batch.connector) == (
        "prometheus",
        "prom",
        "prometheus-query-range/1",
    )
    parsed = _parse_prom(landing, batch)
    assert parsed.rejects == []
    assert expected >= 2 and parsed.table.num_rows == expected
    assert set(parsed.table.column("metric").to_pylist()) == {"up"}
    jobs = {
        prometheus_text.parse_label_set(s)["job"]
        for s in parsed.table.column("label_set").to_pylist()
    }
    assert jobs == {s["metric"]["job"] for s in result} and "node" in jobs
    stamps = [t.timestamp() for t in parsed.table.column("ts").to_pylist()]
    assert start.timestamp() - 1e-3 <= min(stamps) and max(stamps) <= end.timestamp() + 1e-3

    # An expression without __name__ needs name_as; a bad query is an HTTP 400 error.
    summed = QueryRange(prom, "sum by (job) (up)", start, end, 5, name_as="opslake_up_sum")
    [batch] = summed.collect(landing, datetime.now(UTC))
    table = _parse_prom(landing, batch).table
    assert set(table.column("metric").to_pylist()) == {"opslake_up_sum"}
    with pytest.raises(CollectionError, match="name_as"):
        QueryRange(prom, "sum by (job) (up)", start, end, 5).collect(landing, datetime.now(UTC))
    with pytest.raises(CollectionError, match=r"query_range.*HTTP 400"):
        QueryRange(prom, "up{", start, end, 5).collect(landing, datetime.now(UTC))


def test_probes_land_results_in_the_probes_format(services: Services, tmp_path: Path) -> None:
    _, landing = _landing(tmp_path)
    now = datetime.now(UTC)
    healthy = HttpProbe(f"{services.prom}/-/healthy", "http-prometheus", "prometheus-local")
    closed = TcpProbe("127.0.0.1", free_port(), "tcp-closed", "nothing-local", timeout=2)
    [batch] = healthy.collect(landing, now)
    assert (batch.source, batch.fmt, batch.connector) == ("probes", "json", "probe-http/1")
    [batch_closed] = closed.collect(landing, now)
    [suite] = ProbeSuite([healthy, closed]).collect(landing, now)

    rows = []
    for b in (batch, batch_closed, suite):
        parsed = probes_parser.parse(landing.read(b), b)
        assert parsed.rejects == []
        rows.append(parsed.table.to_pylist())
    [ok], [down], both = rows
    assert ok["ok"] is True and ok["status_code"] == 200 and ok["error"] is None
    assert ok["latency_ms"] > 0 and ok["kind"] == "http"
    assert ok["entity_id"] == "prometheus-local" and ok["ts"] == now.replace(
        microsecond=now.microsecond // 1000 * 1000
    )
    assert down["ok"] is False and down["kind"] == "tcp" and down["status_code"] is None
    assert "refused" in down["error"].lower() and down["target"].startswith("tcp://127.0.0.1:")
    assert [r["probe_id"] for r in both] == ["http-prometheus", "tcp-closed"]
    line = json.loads(landing.read(batch))
    assert set(line) == {
        "ts",
        "probe_id",
        "target",
        "entity_id",
        "kind",
        "ok",
        "latency_ms",
        "status_code",
        "error",
    }


def test_matrix_conversion_escapes_labels_and_keeps_special_values(tmp_path: Path) -> None:
    result = [
        {
            "metric": {"__name__": "x", "path": 'C:\\a "b"\nc', "job": "j"},
            "values": [[1764115200.123, "1.5"], [1764115205, "NaN"]],
        },
        {"metric": {"__name__": "y"}, "values": [[1764115200, "+Inf"]]},
    ]
    text = matrix_to_exposition(result)
    _, landing = _landing(tmp_path)
    batch = landing.write("prometheus", text.encode(), fmt="prom")
    parsed = prometheus_text.parse(text.encode(), batch)
    assert parsed.rejects == []
    rows = parsed.table.to_pylist()
    assert [r["metric"] for r in rows] == ["x", "x", "y"]
    assert prometheus_text.parse_label_set(rows[0]["label_set"]) == {
        "job": "j",
        "path": 'C:\\a "b"\nc',
    }
    assert rows[0]["ts"].timestamp() == pytest.approx(1764115200.123)
    assert rows[0]["value"] == 1.5 and rows[1]["value"] != rows[1]["value"]
    assert rows[2]["value"] == float("inf") and rows[2]["label_set"] == "{}"


def test_registry_lists_only_connector_classes() -> None:
    found = available()
    assert all(isinstance(c, type) and issubclass(c, Connector) for c in found.values())
    expected = {
        "prometheus-exporter-scrape": ExporterScrape,
        "prometheus-federate": Federate,
        "prometheus-query-range": QueryRange,
        "probe-http": HttpProbe,
        "probe-tcp": TcpProbe,
        "probe-suite": ProbeSuite,
    }
    for name, cls in expected.items():
        if name in found:  # declared once pyproject.toml has the entry points
            assert found[name] is cls
