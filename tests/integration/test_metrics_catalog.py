"""The metrics catalog on a small simulated estate, through real Dagster (S6.2c, S6.2f).

Day 1 is computed from the catalog as in the repository; then one metric's measure is edited
(a breaking change) and day 2 is computed, so the two days' rows carry different versions.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from opslake.assets.metric_catalog import QUALITY, VALUES, family_key
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.lake.warehouse import open_read_only
from opslake.metrics_catalog.completeness import METRIC_QUALITY_SCHEMA
from opslake.metrics_catalog.compute import METRIC_VALUES
from opslake.metrics_catalog.loader import MetricSet, load
from opslake.metrics_catalog.usage import read_usage
from opslake.orchestration import runner
from opslake.settings import Settings
from opslake.simulate import SimulationConfig, simulate

REPO_METRICS = Path(__file__).resolve().parents[2] / "metrics"
DAY1, DAY2 = "2026-03-02", "2026-03-03"
EDITED = "cloud.host.cpu_utilisation"
CPU = "node_cpu_utilisation_ratio"


@dataclass
class Estate:
    settings: Settings
    lake: Lake
    metrics: MetricSet  # the catalog of day 1 (before the edit)
    metrics_dir: Path


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    """40 objects, two days at 10-minute resolution; day 1 computed, the catalog edited,
    day 2 computed, then the serving warehouse built."""
    home = tmp_path_factory.mktemp("lake")
    metrics_dir = tmp_path_factory.mktemp("catalog") / "metrics"
    shutil.copytree(REPO_METRICS, metrics_dir)
    with pytest.MonkeyPatch.context() as env:
        # Family assets re-read the definitions from the environment's OPSLAKE_METRICS_DIR
        # when they run (the run config only carries home and state_dir).
        env.setenv("OPSLAKE_HOME", str(home))
        env.setenv("OPSLAKE_METRICS_DIR", str(metrics_dir))
        env.delenv("OPSLAKE_STATE_DIR", raising=False)
        env.delenv("OPSLAKE_S3_ENDPOINT", raising=False)
        settings = Settings.from_env()
        assert settings.metrics_dir == metrics_dir.resolve()
        lake = Lake.from_settings(settings)
        simulate(
            SimulationConfig(seed=5, entities=40, days=2, start=date(2026, 3, 2), step_seconds=600),
            LandingZone.from_settings(settings, lake),
        )
        metrics = load(metrics_dir)
        runner.materialize(settings, [DAY1])

        path = metrics_dir / "cloud" / "compute.yaml"
        text = path.read_text(encoding="utf-8")
        edited = text.replace(
            "    description: Mean CPU busy ratio of physical hosts.\n    unit: ratio\n",
            "    description: Mean CPU busy ratio of physical hosts.\n    unit: percent\n",
            1,
        ).replace("measure: {agg: avg, expr: value}", "measure: {agg: avg, expr: value * 100}", 1)
        assert edited.count("unit: percent") == 1 and "value * 100" in edited
        path.write_text(edited, encoding="utf-8")
        runner.materialize(settings, [DAY2])
        runner.refresh_serving(settings)
        yield Estate(settings, lake, metrics, metrics_dir)


def gold(estate: Estate, table: str, day: str) -> pa.Table:
    schema = METRIC_VALUES if table == VALUES else METRIC_QUALITY_SCHEMA
    return estate.lake.read_table("gold", table, schema=schema, dts=[day])


def silver_sql(estate: Estate, day: str, sql: str) -> list[tuple]:
    """``sql`` over the day's silver metric points ``p`` (ts in the UTC day) and the CMDB
    ``c`` as current at the end of the day, straight from the silver files."""
    lake = estate.lake
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    end = start + timedelta(days=1)
    known = [d for d in lake.partitions("silver", "assets") if d <= day]
    points = lake.read_table("silver", "metric_points", dts=[day])  # noqa: F841
    assets = lake.read_table("silver", "assets", dts=known[-1:])  # noqa: F841
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            f"CREATE TEMP VIEW p AS SELECT * FROM points WHERE ts >= TIMESTAMPTZ "
            f"'{start.isoformat()}' AND ts < TIMESTAMPTZ '{end.isoformat()}'"
        )
        con.execute(
            f"CREATE TEMP VIEW c AS SELECT * FROM assets WHERE valid_from <= "
            f"TIMESTAMPTZ '{end.isoformat()}' AND (valid_to IS NULL OR valid_to > "
            f"TIMESTAMPTZ '{end.isoformat()}')"
        )
        return con.execute(sql).fetchall()
    finally:
        con.close()


def value_of(
    values: pa.Table,
    metric_id: str,
    grain: str = "1d",
    scope: str = "all",
    entity: str | None = None,
) -> float:
    rows = [
        r
        for r in values.to_pylist()
        if r["metric_id"] == metric_id
        and r["grain"] == grain
        and r["scope"] == scope
        and r["entity_id"] == entity
    ]
    assert len(rows) == 1, (metric_id, grain, scope, entity, len(rows))
    return rows[0]["value"]


def rows_by_key(values: pa.Table, metric_id: str) -> dict[tuple, dict]:
    """A metric's rows by (grain, bucket, scope, entity, business, department, region, …)."""
    out = {}
    for r in values.to_pylist():
        if r["metric_id"] == metric_id:
            key = (
                r["grain"],
                r["bucket_start"],
                r["scope"],
                r["entity_id"],
                r["business"],
                r["department"],
                r["region"],
                r["object_kind"],
                r["object_type"],
            )
            assert key not in out, key
            out[key] = r
    return out


# -- day 1 ---------------------------------------------------------------------------------


def test_every_family_is_materialized_and_every_metric_has_quality_rows(estate) -> None:
    metrics = estate.metrics
    inst = runner.instance(estate.settings)
    for family in metrics.families:
        done = inst.get_materialized_partitions(family_key(family))
        assert {DAY1, DAY2} <= set(done), family
    for table in (VALUES, QUALITY):
        parts = estate.lake.list_dirs(estate.lake.table_path("gold", table, {"dt": DAY1}))
        assert sorted(parts) == sorted(f"family={f}" for f in metrics.families), table

    quality = gold(estate, QUALITY, DAY1)
    assert sorted(quality.column("metric_id").to_pylist()) == sorted(metrics.metrics)
    assert set(quality.column("metric_version").to_pylist()) == {"1.0"}
    assert set(quality.column("day").to_pylist()) == {date(2026, 3, 2)}
    # Sampled metrics are judged by completeness; this estate reports every host's CPU.
    by_id = {r["metric_id"]: r for r in quality.to_pylist()}
    assert by_id[EDITED]["completeness"] == pytest.approx(1.0, abs=0.05)
    assert by_id[EDITED]["expected"] > 0

    values = gold(estate, VALUES, DAY1)
    assert values.num_rows > 0
    assert set(values.column("metric_version").to_pylist()) == {"1.0"}
    with_rows = set(values.column("metric_id").to_pylist())
    assert with_rows <= set(metrics.metrics)
    assert len(with_rows) >= 0.9 * len(metrics.metrics), sorted(set(metrics.metrics) - with_rows)
    assert {r["rows"] > 0 for r in quality.to_pylist() if r["metric_id"] in with_rows} == {True}


def test_a_simple_metric_equals_the_mean_straight_from_silver(estate) -> None:
    values = gold(estate, VALUES, DAY1)
    host = f"FROM p JOIN c USING (entity_id) WHERE p.metric = '{CPU}' AND c.type = 'host'"
    ((mean, n),) = silver_sql(estate, DAY1, f"SELECT avg(value), count(*) {host}")
    assert n > 100
    assert value_of(values, EDITED) == pytest.approx(mean)
    per_entity = dict(silver_sql(estate, DAY1, f"SELECT entity_id, avg(value) {host} GROUP BY 1"))
    assert len(per_entity) >= 2
    for entity, expected in per_entity.items():
        assert value_of(values, EDITED, scope="entity", entity=entity) == pytest.approx(expected)
    hourly = dict(
        silver_sql(estate, DAY1, f"SELECT date_trunc('hour', ts), avg(value) {host} GROUP BY 1")
    )
    got = {
        r["bucket_start"]: r["value"]
        for r in values.to_pylist()
        if r["metric_id"] == EDITED and r["grain"] == "1h" and r["scope"] == "all"
    }
    assert len(got) == 24 and got == pytest.approx(hourly)


def test_ratio_derived_and_cumulative_metrics_match_their_inputs_and_silver(estate) -> None:
    values = gold(estate, VALUES, DAY1)
    vm = f"FROM p JOIN c USING (entity_id) WHERE p.metric = '{CPU}' AND c.type = 'vm'"
    ((saturated, samples),) = silver_sql(
        estate, DAY1, f"SELECT count(*) FILTER (WHERE value > 0.9), count(*) {vm}"
    )
    assert samples > 100

    # Ratio: numerator / denominator, equal to its inputs' rows at every grain and scope.
    ratio = rows_by_key(values, "cloud.vm.cpu_saturation_ratio")
    inputs = {
        m: {k: r["value"] for k, r in rows_by_key(values, m).items()}
        for m in ("cloud.vm.saturated_samples", "cloud.vm.cpu_samples")
    }
    assert ratio and set(ratio) == set(inputs["cloud.vm.cpu_samples"])
    assert {k[2] for k in ratio} == {"entity", "business", "department", "region", "all"}
    for k, r in ratio.items():
        num = inputs["cloud.vm.saturated_samples"].get(k, 0.0)
        den = inputs["cloud.vm.cpu_samples"][k]
        assert (r["numerator"], r["denominator"]) == (num, den)
        assert r["value"] == pytest.approx(num / den)
    assert value_of(values, "cloud.vm.cpu_saturation_ratio") == pytest.approx(saturated / samples)

    # Derived: 1 - p95, from silver with numpy's linear percentile.
    vm_values = [v for (v,) in silver_sql(estate, DAY1, f"SELECT value {vm}")]
    assert value_of(values, "cloud.vm.cpu_headroom") == pytest.approx(
        1 - float(np.percentile(vm_values, 95))
    )

    # Cumulative (7 days): day 2 adds day 1's gold rows to its own.
    assert value_of(values, "cloud.vm.saturated_samples_7d") == saturated
    day2 = gold(estate, VALUES, DAY2)
    ((saturated2,),) = silver_sql(estate, DAY2, f"SELECT count(*) FILTER (WHERE value > 0.9) {vm}")
    assert value_of(day2, "cloud.vm.saturated_samples_7d") == saturated + saturated2


# -- the edit: a breaking change is a new major version from the next day on -----------------


def test_an_edited_measure_is_version_2_from_the_next_day_and_day_1_keeps_1(estate) -> None:
    day1, day2 = gold(estate, VALUES, DAY1), gold(estate, VALUES, DAY2)
    v1 = {r["metric_version"] for r in day1.to_pylist() if r["metric_id"] == EDITED}
    v2 = {r["metric_version"] for r in day2.to_pylist() if r["metric_id"] == EDITED}
    assert (v1, v2) == ({"1.0"}, {"2.0"})
    others = {r["metric_version"] for r in day2.to_pylist() if r["metric_id"] != EDITED}
    assert others == {"1.0"}
    host = f"FROM p JOIN c USING (entity_id) WHERE p.metric = '{CPU}' AND c.type = 'host'"
    ((mean1,),) = silver_sql(estate, DAY1, f"SELECT avg(value) {host}")
    ((mean2,),) = silver_sql(estate, DAY2, f"SELECT avg(value) {host}")
    assert value_of(day1, EDITED) == pytest.approx(mean1)
    assert value_of(day2, EDITED) == pytest.approx(100 * mean2)
    assert 0 < value_of(day1, EDITED) <= 1 < value_of(day2, EDITED)
    quality2 = {
        r["metric_id"]: r["metric_version"] for r in gold(estate, QUALITY, DAY2).to_pylist()
    }
    assert quality2[EDITED] == "2.0"


# -- serving -------------------------------------------------------------------------------


def test_the_warehouse_serves_the_catalog_values_quality_and_usage(estate) -> None:
    con = open_read_only(estate.settings.warehouse_path)
    try:

        def rows(sql: str) -> list[tuple]:
            return con.execute(sql).fetchall()

        objects = {n for (n,) in rows("SELECT table_name FROM information_schema.tables")}
        assert {
            "catalog_metrics",
            "catalog_versions",
            "catalog_lineage",
            "catalog_dimensions",
            "metric_values",
            "metric_quality",
            "metric_usage",
        } <= objects

        n = len(estate.metrics.metrics)
        assert n >= 60
        assert rows("SELECT count(*), count(DISTINCT metric_id) FROM catalog_metrics") == [(n, n)]
        assert rows(
            f"SELECT current_version, unit FROM catalog_metrics WHERE metric_id = '{EDITED}'"
        ) == [("2.0", "percent")]
        assert rows(
            f"SELECT version, change FROM catalog_versions WHERE metric_id = '{EDITED}' "
            "ORDER BY major, minor"
        ) == [("1.0", "new"), ("2.0", "breaking")]
        assert rows("SELECT count(DISTINCT metric_id) FROM catalog_versions") == [(n,)]
        assert rows(
            "SELECT count(*) FROM catalog_lineage WHERE metric_id = "
            "'cloud.vm.cpu_headroom' AND upstream = 'landing/prometheus'"
        ) == [(1,)]

        assert rows("SELECT DISTINCT dt FROM metric_values ORDER BY dt") == [(DAY1,), (DAY2,)]
        assert rows("SELECT count(DISTINCT metric_id) FROM metric_quality") == [(n,)]
        (count,) = rows(
            f"SELECT count(*) FROM metric_values WHERE metric_id = '{EDITED}' "
            f"AND metric_version = '2.0' AND dt = '{DAY2}'"
        )[0]
        assert count > 0
        jobs = rows(
            "SELECT count(DISTINCT metric_id), min(principal) FROM metric_usage "
            "WHERE principal_kind = 'job' AND action = 'compute'"
        )
        assert jobs[0][0] == n and jobs[0][1].startswith("dagster:")
    finally:
        con.close()
    usage = read_usage(estate.lake)
    assert set(usage.column("principal_kind").to_pylist()) == {"job"}
    assert {(r["metric_version"]) for r in usage.to_pylist() if r["metric_id"] == EDITED} == {
        "1.0",
        "2.0",
    }
