"""The code location loads cleanly, and the CLI gives clear errors with exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from opslake.orchestration.definitions import defs

CLI = [sys.executable, "-m", "opslake"]
LAYERS = {"landing", "bronze", "silver", "gold", "serving", "models"}
SIDE_GROUPS = {
    "gold/catalog_metrics": "catalog",
    "gold/catalog_versions": "catalog",
    "gold/catalog_dimensions": "catalog",
    "gold/catalog_lineage": "catalog",
    "silver/metric_points_live": "live",
    "gold/metric_values_live": "live",
    "gold/anomalies_live": "live",
    "silver/events_live": "live",
    "gold/incidents_live": "live",
    "gold/incident_alerts_live": "live",
    "gold/quality_report": "quality",
    "gold/service_reports": "reports",
}


def test_every_asset_is_layered_grouped_owned_described_and_has_kinds() -> None:
    specs = list(defs.resolve_all_asset_specs())
    assert len(specs) >= 26
    for spec in specs:
        layer = spec.key.path[0]
        # gold/metric_values/<family>: one asset per metric family, slices of one table.
        family = spec.key.path[:2] == ["gold", "metric_values"]
        assert layer in LAYERS and len(spec.key.path) == (3 if family else 2), spec.key
        # Unpartitioned side paths keep their layer in the key but run in their own jobs.
        assert spec.group_name == SIDE_GROUPS.get(spec.key.to_user_string(), layer), spec.key
        assert spec.owners, spec.key
        assert spec.kinds, spec.key
        assert spec.description and len(spec.description) > 40, spec.key
    keys = {s.key.to_user_string() for s in specs}
    for table in ("metric_points", "events", "logs", "tickets", "assets", "relations", "probes"):
        assert f"silver/{table}" in keys


def test_definitions_validate_without_warnings(tmp_path: Path) -> None:
    """What `dagster dev` loads: any warning raised while loading fails the test."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "OPSLAKE_HOME": str(tmp_path / "lake")}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    code = (
        "import dagster as dg; from opslake.orchestration.definitions import defs; "
        "dg.Definitions.validate_loadable(defs)"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "warning" not in (out.stdout + out.stderr).lower()
    validate = subprocess.run(
        [
            Path(sys.executable).with_name("dagster"),
            "definitions",
            "validate",
            "-m",
            "opslake.orchestration.definitions",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert "all code locations passed validation" in (validate.stdout + validate.stderr).lower()


def test_jobs_cover_every_partitioned_asset() -> None:
    job = defs.resolve_job_def("daily_pipeline")
    graph = defs.resolve_asset_graph()
    # The quality report runs after the pipeline in its own job (quality_followup).
    partitioned = {
        k
        for k in graph.get_all_asset_keys()
        if graph.get(k).partitions_def and SIDE_GROUPS.get(k.to_user_string()) != "quality"
    }
    assert {
        k
        for k in graph.get_all_asset_keys()
        if k.path[0] not in ("serving", "models") and k.to_user_string() not in SIDE_GROUPS
    } == partitioned
    followup = defs.resolve_job_def("quality_followup").asset_layer.selected_asset_keys
    assert dg.AssetKey(["gold", "quality_report"]) in followup
    ml_landing = graph.get(dg.AssetKey(["landing", "ml"]))
    assert dg.AssetKey(["gold", "anomalies"]) in ml_landing.parent_keys  # same run as events
    assert set(job.asset_layer.selected_asset_keys) == partitioned
    side = defs.resolve_job_def("serving_refresh").asset_layer.selected_asset_keys
    assert {k for k in side if k.path[0] == "gold"} == {
        dg.AssetKey.from_user_string(k) for k, g in SIDE_GROUPS.items() if g == "catalog"
    }
    assert isinstance(defs.resolve_schedule_def("daily_pipeline_schedule"), dg.ScheduleDefinition)
    training = defs.resolve_job_def("ml_training").asset_layer.selected_asset_keys
    assert training == {
        dg.AssetKey(["models", "incident_risk"]),
        dg.AssetKey(["models", "anomaly_multivariate"]),
    }
    assert isinstance(defs.resolve_schedule_def("ml_training_schedule"), dg.ScheduleDefinition)
    alerts = defs.resolve_job_def("alerts_live_refresh").asset_layer.selected_asset_keys
    assert alerts == {
        dg.AssetKey.from_user_string(k)
        for k in ("silver/events_live", "gold/incidents_live", "gold/incident_alerts_live")
    }
    metrics = defs.resolve_job_def("metrics_live_refresh").asset_layer.selected_asset_keys
    assert not metrics & alerts
    for sensor in (
        "alerts_live_sensor",
        "runbook_sensor",
        "metrics_live_sensor",
        "serving_after_daily_pipeline",
    ):
        assert defs.resolve_sensor_def(sensor).default_status == dg.DefaultSensorStatus.RUNNING


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPSLAKE_HOME": str(home)}
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("materialize", "--from", "2026-13-01", "--to", "2026-03-02"), 2, "is not a date"),
        (("materialize", "--from", "2026-03-03", "--to", "2026-03-02"), 2, "swap the dates"),
        (
            ("materialize", "-s", "silver/nowhere", "--from", "2026-03-02", "--to", "2026-03-02"),
            2,
            "no asset",
        ),
        (("materialize",), 2, "nothing has landed"),
        # Usage errors: the message, no traceback (typer's own click raises them).
        (("foo",), 2, "No such command 'foo'"),
        (("simulate", "--entities", "5"), 2, "greater than or equal to 30"),
        (("materialize", "--from", "x"), 2, "is not a date"),
    ],
)
def test_user_errors_are_one_line_with_an_exit_code(tmp_path: Path, args, code, message) -> None:
    out = _cli(*args, home=tmp_path)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreachable_object_store_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OPSLAKE_HOME": "s3://opslake/lake",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "OPSLAKE_STATE_DIR": str(tmp_path),
        "OPSLAKE_S3_ENDPOINT": "http://127.0.0.1:9",
    }  # the discard port: nothing listens
    out = subprocess.run(
        [*CLI, "simulate", "--entities", "30", "--days", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert "the lake's storage failed" in out.stderr and "OPSLAKE_S3_ENDPOINT" in out.stderr
    assert "Traceback" not in out.stderr


def test_status_of_an_empty_lake(tmp_path: Path) -> None:
    out = _cli("status", home=tmp_path)
    assert out.returncode == 0
    assert "empty" in out.stderr


def test_cli_simulate_materialize_status_and_quarantine(tmp_path: Path) -> None:
    """The everyday commands, end to end through the real CLI, on a tiny estate."""
    out = _cli(
        "simulate",
        "--entities",
        "30",
        "--days",
        "1",
        "--start",
        "2026-03-02",
        "--step",
        "900",
        home=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "faults with known root causes" in out.stderr
    out = _cli("materialize", "--select", "bronze", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2026-03-02" in out.stderr
    status = _cli("status", home=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "prometheus_samples" in status.stdout and "silver" not in status.stdout
    bad = _cli("quarantine", "--date", "2026-03-02", home=tmp_path)
    assert bad.returncode == 0, bad.stderr
    assert "not a sample line" in bad.stdout or "value is not a number" in bad.stdout


def test_schedule_materializes_yesterday() -> None:
    from datetime import UTC, datetime

    from opslake.orchestration.jobs import daily_pipeline_schedule

    tick = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 26, 0, 30, tzinfo=UTC)
    )
    request = daily_pipeline_schedule(tick)
    assert request.partition_key == "2026-11-25"
    assert request.run_key == "2026-11-25"
