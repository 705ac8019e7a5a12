"""The whole graph on a small simulated estate, through real Dagster, in a temporary lake."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc

from opslake.lake import quarantine
from opslake.lake.storage import Lake
from opslake.lake.warehouse import open_read_only
from opslake.metrics_catalog.usage import read_usage
from opslake.orchestration import runner
from opslake.orchestration.definitions import defs
from tests.integration.conftest import DAYS, START
from tests.integration.services import free_port, running

SILVER_COUNTS = {
    "metric_points": "metric_points",
    "events": "events",
    "tickets": "tickets",
    "logs": "logs",
    "probes": "probes",
}
#: Bronze table each landing source is parsed into (for the quarantine check).
BRONZE_OF = {
    "prometheus": "prometheus_samples",
    "alertmanager": "alertmanager_alerts",
    "itsm": "itsm_tickets",
    "syslog": "syslog_lines",
    "probes": "probe_results",
    "cmdb": "cmdb_cis",
}


#: Events OpsLake raises itself (anomalies, failed quality checks), not the simulator's.
OWN_SOURCES = ("opslake-ml", "opslake-quality")


def _rows(lake: Lake, layer: str, table: str, dt: str) -> int:
    rows = lake.read_table(layer, table, dts=[dt])
    if table == "events":
        rows = rows.filter(pc.invert(pc.is_in(rows["source"], pa.array(OWN_SOURCES))))
    return rows.num_rows


def test_silver_counts_equal_the_simulators_ground_truth(estate) -> None:
    settings, truth = estate
    lake = Lake.from_settings(settings)
    for day in DAYS:
        for table, name in SILVER_COUNTS.items():
            assert _rows(lake, "silver", table, day) == truth.count(name, day), (table, day)
    last = DAYS[-1]
    assert _rows(lake, "silver", "assets", last) == truth.count("asset_versions")
    assert _rows(lake, "silver", "relations", last) == truth.count("relations")
    kinds = set(lake.read_table("silver", "assets", dts=[last]).column("kind").to_pylist())
    assert kinds == {"facility", "cloud", "application", "platform", "security"}


def test_malformed_lines_are_quarantined_with_reasons_and_good_lines_flow(estate) -> None:
    settings, truth = estate
    lake = Lake.from_settings(settings)
    rejected = quarantine.read(lake)
    assert rejected.num_rows > 0
    assert pc.all(pc.greater(pc.utf8_length(rejected.column("reason")), 5)).as_py()
    for source, entry in truth.malformed.items():
        got = pc.sum(pc.equal(rejected.column("source"), source)).as_py() or 0
        assert got == entry["total"], source
    # The batches that carried bad lines also delivered their good lines to silver.
    bad_batches = set(rejected.column("batch_id").to_pylist())
    silver_batches = set()
    for table in ("metric_points", "logs", "events", "tickets"):
        silver_batches |= set(lake.read_table("silver", table).column("batch_id").to_pylist())
    assert bad_batches & silver_batches


def test_gold_is_byte_identical_when_a_partition_is_materialized_again(estate) -> None:
    settings, _ = estate
    lake = Lake.from_settings(settings)

    def digests() -> dict[str, str]:
        files = lake.list_files(lake.path("gold"), recursive=True)
        files += lake.list_files(lake.path("silver"), recursive=True)
        # Logs of what happened are not derived data: the usage log and the quality log are
        # append-only, and quality results and the report say when the checks ran.
        skip = (
            "/gold/metric_usage/",
            "/gold/quality_log/",
            "/gold/quality_results/",
            "/gold/quality_report/",
        )
        return {
            f: hashlib.sha256(Path(f).read_bytes()).hexdigest()
            for f in files
            if not any(s in f for s in skip)
        }

    before = digests()
    uses = read_usage(lake).num_rows
    runner.materialize(settings, DAYS[:1])
    assert digests() == before
    assert read_usage(lake).num_rows > uses


def test_warehouse_answers_every_gold_table_read_only(estate) -> None:
    settings, _ = estate
    lake = Lake.from_settings(settings)
    gold_tables = [
        t for t in lake.list_dirs(lake.path("gold")) if t != "quality_report"
    ]  # HTML pages, not a table
    assert {
        "metric_rollup_5m",
        "metric_rollup_1h",
        "entity_health",
        "business_health",
        "service_levels",
        "quality_results",
        "quality_scores",
    } <= set(gold_tables)
    con = open_read_only(settings.warehouse_path)
    try:
        for table in gold_tables:
            (count,) = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            # Incidents acted on (gold/incident_state): none until someone handles one.
            assert count > 0 or table == "incident_state", table
        days = con.execute("SELECT DISTINCT dt FROM entity_health ORDER BY dt").fetchall()
        assert [d for (d,) in days] == DAYS
    finally:
        con.close()


def _graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)["data"]


def test_dagster_ui_lists_every_asset_materialized_for_every_day(estate, tmp_path: Path) -> None:
    """`opslake ui` serves the instance the runs were recorded in, and stops on SIGTERM."""
    settings, _ = estate
    port = free_port()
    env = {**os.environ, "OPSLAKE_HOME": settings.home}
    query = (
        "{ assetsOrError { ... on AssetConnection { nodes { key { path } "
        "assetMaterializations(limit: 20) { partition } } } } }"
    )
    with running(
        [sys.executable, "-m", "opslake", "ui", "--port", str(port)],
        f"http://127.0.0.1:{port}/server_info",
        tmp_path / "ui.log",
        env=env,
        timeout=180,
    ) as proc:
        nodes = _graphql(port, query)["assetsOrError"]["nodes"]
        keys = _graphql(
            port,
            '{ assetNodes(assetKeys: [{path: ["silver", "metric_points"]}]) '
            "{ partitionKeysByDimension { partitionKeys } } }",
        )
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2, "webserver and daemon run as children"
    materialized = {
        "/".join(n["key"]["path"]): {m["partition"] for m in n["assetMaterializations"]}
        for n in nodes
    }
    groups = {s.key.to_user_string(): s.group_name for s in defs.resolve_all_asset_specs()}
    assert set(materialized) == set(groups)
    for asset, partitions in materialized.items():
        if groups[asset] in ("serving", "catalog"):  # unpartitioned, rebuilt with serving
            assert partitions == {None}, asset
        elif groups[asset] in ("live", "models", "reports"):
            # Run by the live sensors, the training schedule, the report schedules (which
            # need Superset), never by the daily pipeline.
            assert partitions == set(), asset
        else:
            assert set(DAYS) <= partitions, asset
    # The days begin at the first landed one, not at the default start (2025-01-01).
    [[dimension]] = [n["partitionKeysByDimension"] for n in keys["assetNodes"]]
    assert dimension["partitionKeys"][: len(DAYS)] == DAYS
    # Stopping `opslake ui` by its PID (SIGTERM) stops the webserver and the daemon with it.
    _gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]


def test_injected_faults_show_up_as_anomaly_events_in_silver(estate) -> None:
    settings, truth = estate
    lake = Lake.from_settings(settings)
    for day in DAYS:
        assert lake.exists(lake.path("ml", "detector_state", f"dt={day}.npz")), day
    found = lake.read_table("gold", "anomalies", dts=DAYS).to_pylist()
    events = [
        e
        for e in lake.read_table("silver", "events", dts=DAYS).to_pylist()
        if e["source"] == "opslake-ml"
    ]
    assert events and all(e["entity_id"] for e in events)
    assert {
        e["labels"]["alertname"]
        if isinstance(e["labels"], dict)
        else dict(e["labels"])["alertname"]
        for e in events
    } == {"MetricAnomaly"}
    # Faults after the detector's warm-up on the first day: the cause CI or a CI it reached
    # must have an event-level point between the fault's start and its end.
    hits, judged = 0, 0
    for fault in truth.faults:
        start = datetime.fromisoformat(fault["start"])
        end = datetime.fromisoformat(fault["end"])
        if start.hour < 10 and start.date() == START:
            continue
        judged += 1
        reached = {fault["cause_entity"], *fault["affected"]}
        hits += any(
            a["is_event"]
            and a["entity_id"] in reached
            and start <= a["ts"] <= end + timedelta(minutes=10)
            for a in found
        )
    print(f"faults found by the detector: {hits}/{judged}")
    # Two days at 5-minute resolution from a cold detector (a day to learn the daily profile,
    # then warm-up of each feature): at least one judged fault must be found here. Detection
    # quality is measured on a 10-day estate (docs/ml.md: 5 of 6 faults at 0.7).
    assert judged and hits >= 1
