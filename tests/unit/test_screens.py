"""Dashboards as code: the committed bundle, its rendering, the Superset settings."""

from __future__ import annotations

import importlib.util
import io
import json
import stat
import zipfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import yaml

from opslake.errors import ConfigError
from opslake.lake.storage import Lake
from opslake.lake.warehouse import build_warehouse, open_read_only
from opslake.screens import bundle
from opslake.screens.access import department_clause
from opslake.screens.i18n import LANGUAGES, TEXTS, is_chinese, slug_for, translate
from opslake.screens.model import TIMEZONE_TOKEN, WAREHOUSE_TOKEN
from opslake.screens.rest import rison
from opslake.screens.server import SUPERSET_HOOKS, SupersetConfig, _config_text, _secret_file
from opslake.settings import DEFAULT_METRICS_DIR, Settings


def test_committed_dashboards_match_the_generator(tmp_path: Path) -> None:
    """dashboards/ is generated: a change to the screens or the catalog needs a regenerate."""
    expected = bundle.bundle_files(DEFAULT_METRICS_DIR)
    committed = bundle.read_files(bundle.DASHBOARDS_DIR)
    stale = sorted(set(committed) ^ set(expected)) + sorted(
        rel for rel in expected if rel in committed and committed[rel] != expected[rel]
    )
    assert not stale, f"run `opslake screens generate`; out of date: {stale[:10]}"
    bundle.generate(tmp_path)
    assert bundle.read_files(tmp_path) == expected


def test_bundle_links_every_object_by_uuid() -> None:
    files = {rel: yaml.safe_load(text) for rel, text in bundle.read_files().items()}
    by_kind = {
        kind: {d["uuid"]: d for rel, d in files.items() if rel.startswith(kind + "/")}
        for kind in ("databases", "datasets", "charts", "dashboards")
    }
    # Fifteen screens, each in zh-CN, zh-TW and en.
    assert len(by_kind["databases"]) == 1 and len(by_kind["dashboards"]) == 45
    for dataset in by_kind["datasets"].values():
        assert dataset["database_uuid"] in by_kind["databases"]
        assert dataset["table_name"] and dataset["columns"]
    for chart in by_kind["charts"].values():
        dataset = by_kind["datasets"][chart["dataset_uuid"]]
        context = json.loads(chart["query_context"])
        assert context["queries"] and context["form_data"]["viz_type"] == chart["viz_type"]
        saved = {m["metric_name"] for m in dataset["metrics"]}
        columns = {c["column_name"] for c in dataset["columns"]}
        params = chart["params"]
        metrics = params.get("metrics", []) + ([params["metric"]] if "metric" in params else [])
        assert metrics or params.get("all_columns"), chart["slice_name"]
        for metric in metrics:
            assert metric in saved, f"{chart['slice_name']}: unknown metric {metric}"
        axis = [params["x_axis"]] if "x_axis" in params else []
        for column in params.get("groupby", []) + params.get("all_columns", []) + axis:
            assert column in columns, f"{chart['slice_name']}: unknown column {column}"
    for dashboard in by_kind["dashboards"].values():
        cells = [
            v
            for v in dashboard["position"].values()
            if isinstance(v, dict) and v.get("type") == "CHART"
        ]
        assert 3 <= len(cells) <= 12, dashboard["dashboard_title"]
        assert all(c["meta"]["uuid"] in by_kind["charts"] for c in cells)
        assert len({c["meta"]["chartId"] for c in cells}) == len(cells)
        # Chinese titles for the wall, English ones on the English copies.
        english = dashboard["slug"].endswith("-en")
        assert is_chinese(dashboard["dashboard_title"]) != english, dashboard["slug"]
        rows = [
            v
            for v in dashboard["position"].values()
            if isinstance(v, dict) and v.get("type") == "ROW"
        ]
        for row in rows:
            widths = [dashboard["position"][c]["meta"]["width"] for c in row["children"]]
            assert sum(widths) <= 12


NEW_THEMES = {
    "network": "网络质量",
    "security": "安全态势",
    "platform": "平台自身运行",
    "effect": "运维成效",
    "trace": "业务链路与用户体验",
}


def test_every_screen_carries_native_filters() -> None:
    """A time range on every screen; value filters target a column, scoped by chart."""
    files = {rel: yaml.safe_load(text) for rel, text in bundle.read_files().items()}
    datasets = {d["uuid"]: d for rel, d in files.items() if rel.startswith("datasets/")}
    charts = {c["uuid"]: c for rel, c in files.items() if rel.startswith("charts/")}
    for slug, title in NEW_THEMES.items():
        assert files[f"dashboards/{slug}.yaml"]["dashboard_title"] == title
    valued = {}
    for rel, dashboard in files.items():
        if not rel.startswith("dashboards/"):
            continue
        slug = dashboard["slug"]
        filters = dashboard["metadata"]["native_filter_configuration"]
        valued[slug] = {f["targets"][0]["column"]["name"] for f in filters[1:]}
        assert filters[0]["filterType"] == "filter_time", slug
        cells = {
            c["meta"]["chartId"]: c["meta"]["uuid"]
            for c in dashboard["position"].values()
            if isinstance(c, dict) and c.get("type") == "CHART"
        }
        for f in filters[1:]:
            assert f["filterType"] == "filter_select" and f["id"].startswith("NATIVE_FILTER-")
            target = f["targets"][0]
            column = target["column"]["name"]
            assert column in {c["column_name"] for c in datasets[target["datasetUuid"]]["columns"]}
            excluded = set(f["scope"]["excluded"])
            assert excluded < set(cells), f"{slug}/{column}: unknown chart ids"
            in_scope = [charts[u] for i, u in cells.items() if i not in excluded]
            assert in_scope, f"{slug}/{column} filters no chart"
            for chart in in_scope:  # only charts whose dataset has the column
                dataset = datasets[chart["dataset_uuid"]]
                assert column in {c["column_name"] for c in dataset["columns"]}, chart["slice_name"]
    # Old screens too: department and business where their data has the column.
    assert valued["resources"] == valued["assets"] == {"business", "department"}
    assert valued["service"] == {"business"} and valued["events"] == set()
    assert valued["resources-en"] == valued["resources-zh-tw"] == valued["resources"]
    # Every chart over a dated dataset follows a dashboard's time range.
    for chart in charts.values():
        dttm = datasets[chart["dataset_uuid"]]["main_dttm_col"]
        ranges = [
            f for f in chart["params"]["adhoc_filters"] if f.get("operator") == "TEMPORAL_RANGE"
        ]
        query = json.loads(chart["query_context"])["queries"][0]
        assert bool(ranges) == bool(
            dttm
            or chart["params"].get("x_axis")
            in (
                c["column_name"] for c in datasets[chart["dataset_uuid"]]["columns"] if c["is_dttm"]
            )
        ), chart["slice_name"]
        assert [f["col"] for f in query["filters"]] == [f["subject"] for f in ranges]


def test_value_filter_refuses_a_chart_without_its_column() -> None:
    from opslake.screens import datasets as ds
    from opslake.screens.model import Chart, NativeFilter

    chart = Chart("k", "t", "big_number_total", ds.CONVERGENCE, metrics=("alerts",))
    with pytest.raises(KeyError, match="convergence has no column business"):
        NativeFilter("business", "业务系统", ds.SERVICE_LEVELS, "business", (chart,)).to_yaml(
            {"k": 1}
        )


def test_catalog_metrics_become_named_dataset_metrics() -> None:
    values = yaml.safe_load(bundle.read_files()["datasets/metric_values.yaml"])
    metrics = {m["metric_name"]: m for m in values["metrics"]}
    sla = metrics["service.sla.attainment"]
    assert sla["verbose_name"] == "SLA达成率"
    assert sla["description"].startswith("SLA attainment")
    assert "SUM(numerator)" in sla["expression"] and sla["d3format"] == ".1%"
    assert metrics["service.incident.opened"]["expression"].startswith("SUM(value)")
    # Drafts stay out of the screens.
    assert "service.alert.noise_ratio" not in metrics


def test_render_fills_in_this_machine(tmp_path: Path) -> None:
    files = bundle.read_files()
    warehouse = tmp_path / "state" / "warehouse.duckdb"
    data = bundle.render(files, warehouse, "Asia/Shanghai")
    assert data == bundle.render(files, warehouse, "Asia/Shanghai")  # same bytes
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        assert "opslake_screens/metadata.yaml" in names
        database = yaml.safe_load(z.read("opslake_screens/databases/warehouse.yaml"))
        dataset = z.read("opslake_screens/datasets/entity_health.yaml").decode()
    assert database["sqlalchemy_uri"] == f"duckdb:///{warehouse}?access_mode=read_only"
    assert "timezone('Asia/Shanghai'" in dataset
    assert WAREHOUSE_TOKEN not in dataset and TIMEZONE_TOKEN not in dataset
    with pytest.raises(ConfigError, match="time zone"):
        bundle.render(files, warehouse, "Asia/Shanghai'); DROP")
    with pytest.raises(ConfigError, match="absolute"):
        bundle.render(files, Path("relative/warehouse.duckdb"), "UTC")


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    settings = Settings.from_env({"OPSLAKE_HOME": str(tmp_path / "lake")})
    config = SupersetConfig.from_settings(settings, {"HOME": str(tmp_path)})
    assert config.state == tmp_path / "lake" / "superset"
    assert config.venv == tmp_path / ".cache" / "opslake" / "superset-venv"
    assert config.url == "http://127.0.0.1:8088"
    assert config.metadata_database == f"sqlite:///{config.state / 'superset.db'}"
    password = config.password()
    assert password == config.password() and len(password) >= 20
    path = config.state / "admin-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = _config_text(config)
    key = config.state / "secret-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text().strip() not in text
    assert "PUBLIC_ROLE_LIKE =" not in text
    assert _secret_file(key, lambda: "other") == key.read_text().strip()
    given = SupersetConfig.from_settings(
        settings,
        {
            "HOME": str(tmp_path),
            "OPSLAKE_SUPERSET_ADMIN_PASSWORD": "from-env",
            "OPSLAKE_SUPERSET_PORT": "8099",
            "OPSLAKE_SUPERSET_DATABASE_URI": "postgresql://superset@db/superset",
        },
    )
    assert given.password() == "from-env" and given.port == 8099
    assert given.metadata_database.startswith("postgresql://")
    with pytest.raises(ConfigError, match="OPSLAKE_SUPERSET_PORT"):
        SupersetConfig.from_settings(settings, {"OPSLAKE_SUPERSET_PORT": "http"})


def test_rison_and_rls_clause_quote_what_they_must() -> None:
    assert (
        rison({"page": 0, "page_size": 100, "columns": ["id", "uuid"]})
        == "(page:0,page_size:100,columns:!(id,uuid))"
    )
    assert (
        rison({"filters": [{"col": "username", "opr": "eq", "value": "a b'c!"}]})
        == "(filters:!((col:username,opr:eq,value:'a b!'c!!')))"
    )
    assert rison([True, False, None]) == "!(!t,!f,!n)"
    assert department_clause("大数据局") == "department = '大数据局'"
    assert department_clause("O'Brien") == "department = 'O''Brien'"


def test_effect_baseline_is_the_first_days_and_a_range_moves_only_the_kpi() -> None:
    """运维成效: base_* come from the first BASELINE_DAYS days whatever rows are selected."""
    import duckdb

    from opslake.screens import datasets as ds

    con = duckdb.connect()
    days = [f"2026-03-{d:02d}" for d in range(1, 11)]
    # MTTA 10 minutes on the baseline's days (one without a timing), 5 afterwards.
    con.execute(
        "CREATE TABLE service_levels AS SELECT CAST(d AS DATE) AS day, '(all)' AS "
        "business, 2 AS incidents_opened, 1 AS incidents_resolved, CASE WHEN d = "
        "'2026-03-02' THEN NULL WHEN d < '2026-03-08' THEN 10.0 ELSE 5.0 END AS "
        "mtta_minutes, 60.0 AS mttr_minutes, CASE WHEN d < '2026-03-08' THEN 1 ELSE 2 "
        "END AS sla_met, 1 AS sla_breached FROM unnest(?) AS t(d)",
        [days],
    )
    con.execute(
        "INSERT INTO service_levels SELECT day, 'tax', 50, 1, 99.0, 99.0, 0, 9 FROM service_levels"
    )
    con.execute(
        "CREATE TABLE incident_stats AS SELECT d AS dt, 12 AS alerts, 3 AS incidents "
        "FROM unnest(?) AS t(d)",
        [days],
    )
    con.execute(
        "CREATE TABLE incidents_current AS SELECT CAST(d AS TIMESTAMPTZ) + INTERVAL 1 "
        "HOUR AS started_at, CASE WHEN i = 0 THEN 'db-1' END AS root_cause "
        "FROM unnest(?) AS t(d), range(2) AS r(i)",
        [days],
    )
    sql = ds.EFFECT.sql.replace(ds.TZ, "UTC")

    def metrics(where: str) -> dict[str, float]:
        names = [m.name for m in ds.EFFECT.metrics]
        row = con.execute(
            f"SELECT {', '.join(m.expression for m in ds.EFFECT.metrics)} "
            f"FROM ({sql}) WHERE {where}"
        ).fetchone()
        return dict(zip(names, row, strict=True))

    assert [c[0] for c in con.execute(f"DESCRIBE {sql}").fetchall()] == [
        c.name for c in ds.EFFECT.columns
    ]
    everything = metrics("true")
    assert everything["base_mtta"] == 10.0 and everything["base_sla_attainment"] == 0.5
    assert everything["base_compression"] == 4.0 and everything["base_automation"] == 0.5
    late = metrics("day >= '2026-03-08'")  # what a time range after the baseline selects
    assert late["base_mtta"] == 10.0 and late["mtta"] == 5.0
    assert late["mtta_vs_base"] == pytest.approx(-0.5)
    assert late["sla_attainment_vs_base"] == pytest.approx(2 / 3 - 0.5)
    assert late["compression_vs_base"] == 0.0


def test_every_screen_text_has_all_three_languages() -> None:
    """Every Chinese text the screens show has a zh-TW and an en translation (catalog metrics
    carry theirs in metrics/); English screens show no Chinese label."""
    from opslake.metrics_catalog.loader import load
    from opslake.screens import i18n
    from opslake.screens.screens import build_screens

    definitions = list(load(DEFAULT_METRICS_DIR, check_expressions=False).metrics.values())
    datasets, screens = build_screens(definitions)
    zh = [s for s in screens if not s.slug.endswith(("-en", "-zh-tw"))]
    assert len(zh) == 15 and len(screens) == 45
    assert i18n.check(zh, {m.id for m in definitions}) == []
    for m in definitions:
        if m.status == "published":
            assert all(m.names.get(language) for language in LANGUAGES), m.id
    assert all(len(v) == 2 and all(v) for v in TEXTS.values())
    # The slug convention the portal links by, and one dataset name per language.
    slugs = {s.slug for s in screens}
    assert slugs == {slug_for(s.slug, language) for s in zh for language in LANGUAGES}
    assert len({d.name for d in datasets}) == len(datasets)
    for s in screens:
        if not s.slug.endswith("-en"):
            continue
        shown = [s.title, *(f.name for f in s.filters), *(c.title for c in s.charts)]
        for chart in s.charts:
            shown += [c.label or "" for c in chart.dataset.columns]
            shown += [m.label for m in chart.dataset.metrics]
        assert not [t for t in shown if is_chinese(t)], s.slug
    assert translate("事件与告警", "zh-TW") == "事件與告警"
    with pytest.raises(ConfigError, match="add it to TEXTS"):
        translate("没有的文字", "en")


def test_superset_connections_read_the_live_views_and_no_other_file(
    lake: Lake, settings: Settings
) -> None:
    """The listener Superset's config installs, on a real warehouse: the live view answers;
    the daily table's own Parquet, ``..`` out of the live directory and /etc/passwd do not."""
    spec = importlib.util.spec_from_file_location(
        "opslake_duckdb", SUPERSET_HOOKS / "opslake_duckdb.py"
    )
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    rows = pa.table({"incident_id": ["INC-1"], "alert_id": ["a1"]})
    lake.write_table(rows, "gold", "incident_alerts", {"dt": "2026-03-02"})
    lake.write_table(rows, "gold", "incident_alerts_live", {"dt": "2026-03-03"})
    build_warehouse(lake, settings.warehouse_path)
    con = open_read_only(settings.warehouse_path)
    try:
        assert hook.live_directories(con) == [lake.table_path("gold", "incident_alerts_live") + "/"]
        hook.lock_down(con, None)
        assert con.execute("SELECT alert_id, dt FROM incident_alerts_live").fetchall() == [
            ("a1", "2026-03-03")
        ]
        # The screens' view of both: the live day after the daily one, marked live.
        assert con.execute("SELECT dt, live FROM incident_alerts_now ORDER BY dt").fetchall() == [
            ("2026-03-02", False),
            ("2026-03-03", True),
        ]
        daily = lake.table_path("gold", "incident_alerts")
        escape = lake.table_path("gold", "incident_alerts_live") + "/../incident_alerts"
        for path in ("/etc/passwd", f"{daily}/**/*.parquet", f"{escape}/**/*.parquet"):
            with pytest.raises(duckdb.PermissionException):
                con.execute(f"SELECT * FROM read_csv('{path}')")
        with pytest.raises(duckdb.InvalidInputException, match="external access"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()
    # Another DuckDB file (no warehouse index) gets no directory, and no file access either.
    other = duckdb.connect()
    hook.lock_down(other, None)
    with pytest.raises(duckdb.PermissionException):
        other.execute(f"SELECT * FROM read_parquet('{daily}/**/*.parquet')")
