"""The Superset screens on a real Superset 6.1 over a small simulated estate.

Superset and its estate are the session's (``superset``, tests/integration/superset_fixture.py):
started once while the demo lake is built beside it, the committed ``dashboards/`` imported
and the roles provisioned, stopped by its PID at the session's end. Screenshots of every screen
land in ``tests/artifacts/superset/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import httpx
import pytest
import yaml

from opslake.screens import service
from opslake.screens.access import (
    LEADERSHIP_ROLE,
    OPS_ROLE,
    department_role,
    ensure_user,
    provision_access,
)
from opslake.screens.bundle import DASHBOARDS_DIR, read_files
from opslake.screens.i18n import LANGUAGES, SUPERSET_LOCALE, is_chinese, slug_for, translate
from opslake.screens.model import TIMEZONE_TOKEN
from opslake.screens.rest import SupersetClient
from opslake.screens.server import SupersetConfig
from opslake.settings import Settings
from tests.integration.services import REPO, free_port, running
from tests.integration.superset_fixture import refresh_live_alerts

ARTIFACTS = REPO / "tests" / "artifacts" / "superset"
SCREENS = {
    "leadership": "领导驾驶舱",
    "ops": "运维值班视图",
    "resources": "资源运行态势",
    "applications": "应用健康",
    "events": "事件与告警",
    "service": "服务质量",
    "assets": "资源台账",
    "quality": "数据质量",
    "insights": "智能分析",
    "metric-map": "指标地图",
    "network": "网络质量",
    "security": "安全态势",
    "platform": "平台自身运行",
    "effect": "运维成效",
    "trace": "业务链路与用户体验",
}
#: Every screen in every language: slug → title (``<slug>-en``, ``<slug>-zh-tw`` the copies).
ALL_SCREENS = {
    slug_for(slug, language): translate(title, language)
    for slug, title in SCREENS.items()
    for language in LANGUAGES
}
NEW_THEMES = ("network", "security", "platform", "effect", "trace")
PASSWORD = "Screens-test-1"


@pytest.fixture(scope="module")
def admin(superset: SupersetConfig) -> Iterator[SupersetClient]:
    """The admin's REST session."""
    with service.admin_client(superset) as client:
        yield client


def _dashboards(client: SupersetClient) -> dict[str, dict]:
    return {d["slug"]: d for d in client.list_all("dashboard", ["id", "slug", "dashboard_title"])}


def test_every_chart_of_every_screen_returns_rows(
    superset: SupersetConfig, admin: SupersetClient
) -> None:
    dashboards = _dashboards(admin)
    assert {slug: d["dashboard_title"] for slug, d in dashboards.items()} == ALL_SCREENS
    # The zh-CN screens' queries; the other languages' differ in labels only, and the browser
    # test sees each English chart draw its rows.
    charts = []
    for slug, title in SCREENS.items():
        listed = admin.get(f"/api/v1/dashboard/{dashboards[slug]['id']}/charts")["result"]
        assert 3 <= len(listed) <= 12, f"{slug}: {len(listed)} charts"
        charts += [(f"{title} / {chart['slice_name']}", chart["id"]) for chart in listed]
    # Superset answers several charts at once (its threads), as it does a dashboard's.
    with ThreadPoolExecutor(4) as pool:
        answers = pool.map(admin.chart_data, [chart_id for _, chart_id in charts])
        for (name, _), data in zip(charts, answers, strict=True):
            for query in data["result"]:
                assert not query.get("error"), f"{name}: {query['error']}"
                assert query["rowcount"] > 0 and query["data"], f"{name}: no rows"
    print(f"{len(charts)} chart data calls on {len(SCREENS)} screens returned rows")


def test_new_screens_show_the_lake_and_a_time_range_changes_them(
    superset: SupersetConfig, admin: SupersetClient
) -> None:
    """Headline numbers are the warehouse's own; a time range on the time column cuts them."""
    contexts = {
        spec["uuid"]: spec["query_context"]
        for spec in (
            yaml.safe_load(text)
            for rel, text in read_files(DASHBOARDS_DIR).items()
            if rel.startswith("charts/")
        )
    }
    charts = {
        c["slice_name"]: c
        for c in admin.list_all("chart", ["id", "slice_name", "uuid", "datasource_id"])
    }

    def value(title: str, time_range: str = "No filter") -> float:
        """The big number's value under a dashboard time range (as a native filter sends it:
        the query's time_range, which Superset puts into the chart's TEMPORAL_RANGE filter)."""
        chart = charts[title]
        body = json.loads(contexts[chart["uuid"]])
        body["datasource"]["id"] = chart["datasource_id"]
        query = body["queries"][0]
        assert any(f["op"] == "TEMPORAL_RANGE" for f in query["filters"]), (
            f"{title} has no time column"
        )
        query["time_range"] = time_range
        row = admin.post("/api/v1/chart/data", body)["result"][0]["data"][0]
        (number,) = row.values()
        return float(number or 0)

    con = duckdb.connect(str(superset.warehouse), read_only=True)
    try:
        lake_bytes, first = con.execute(
            "SELECT sum(bytes), min(CAST(dt AS DATE)) FROM lake_inventory"
        ).fetchone()
        first_day = con.execute(
            "SELECT sum(bytes) FROM lake_inventory WHERE CAST(dt AS DATE) = ?", [first]
        ).fetchone()[0]
        devices = con.execute(
            "SELECT count(*) FROM asset_ledger WHERE kind = 'security' AND "
            "dt = (SELECT max(dt) FROM asset_ledger)"
        ).fetchone()[0]
        runs = con.execute("SELECT count(DISTINCT run_id) FROM quality_log").fetchone()[0]
        incidents, started = con.execute(
            "SELECT count(*), CAST(min(timezone(?, started_at)) AS DATE) FROM incidents_current",
            [superset.timezone],
        ).fetchone()
        first_day_incidents = con.execute(
            "SELECT count(*) FROM incidents_current WHERE CAST(timezone(?, started_at) AS DATE) = ?",
            [superset.timezone, started],
        ).fetchone()[0]
    finally:
        con.close()
    assert value("数据湖容量（MB）") == pytest.approx(lake_bytes / 1048576)
    assert value("安全设备数") == devices > 0
    assert value("管道运行次数") == runs > 0
    # A range holds that range's partitions only: the first day's, and none before it.
    assert value("数据湖容量（MB）", f"{first} : {first + timedelta(days=1)}") == pytest.approx(
        first_day / 1048576
    )
    assert value("数据湖容量（MB）", f"{first - timedelta(days=30)} : {first}") == 0
    assert value("管道运行次数", "2000-01-01 : 2000-01-02") == 0
    # An old screen's chart (事件与告警, 领导驾驶舱) follows the range too, in each language.
    day = f"{started} : {started + timedelta(days=1)}"
    for title in ("事件数", "Incidents", "事件數"):
        assert value(title) == incidents > 0, title
        assert value(title, day) == first_day_incidents, title
        assert value(title, f"{started - timedelta(days=30)} : {started}") == 0, title


def test_handled_incidents_show_on_the_events_screen(
    superset: SupersetConfig, admin: SupersetClient
) -> None:
    """The incidents the fixture acknowledged and resolved show their handling on 事件与告警,
    in zh-CN and in English: the unresolved by state, and minutes to acknowledge and resolve."""
    con = duckdb.connect(str(superset.warehouse), read_only=True)
    try:
        handled = dict(
            con.execute(
                "SELECT incident_id, handling_status FROM incident_state_current"
            ).fetchall()
        )
        incidents = con.execute("SELECT count(*) FROM incidents_current").fetchone()[0]
    finally:
        con.close()
    assert sorted(handled.values()) == ["acknowledged", "resolved"]
    charts = {c["slice_name"]: c["id"] for c in admin.list_all("chart", ["id", "slice_name"])}

    def rows(title: str) -> list[dict[str, Any]]:
        return admin.chart_data(charts[title])["result"][0]["data"]

    for language, (acknowledged, not_acknowledged) in {
        "zh-CN": ("已确认", "未确认"),
        "en": ("Acknowledged", "Not acknowledged"),
    }.items():
        by_state: Counter[str] = Counter()
        for r in rows(translate("未解决事件（按处理状态、级别）", language)):
            by_state[r["handling_zh"]] += r["unresolved"]  # one row per state and severity
        # The resolved one is no longer counted; the acknowledged one is, apart.
        assert by_state == {acknowledged: 1, not_acknowledged: incidents - 2}, by_state
        progress = rows(translate("事件处理进展", language))
        minutes = sorted(
            ((r["ack_minutes"], r["resolve_minutes"]) for r in progress if r["ack_minutes"]),
            key=lambda m: m[1] or 0,
        )
        assert minutes == [(10, None), (10, 30)], (language, minutes)


def test_dataset_columns_match_the_warehouse(superset: SupersetConfig) -> None:
    """Each virtual dataset's declared columns are what DuckDB says its SQL returns."""
    con = duckdb.connect(str(superset.warehouse), read_only=True)
    try:
        for rel, text in read_files(DASHBOARDS_DIR).items():
            if not rel.startswith("datasets/"):
                continue
            spec = yaml.safe_load(text)
            sql = spec["sql"].replace(TIMEZONE_TOKEN, superset.timezone)
            described = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {sql}").fetchall()]
            declared = [(c["column_name"], c["type"]) for c in spec["columns"]]
            assert described == declared, rel
    finally:
        con.close()


def test_screens_render_in_headless_chromium(superset: SupersetConfig) -> None:
    """Every screen draws every chart in zh-CN and in English (Superset's own UI switched to
    English for the English screens); screenshots land in tests/artifacts/superset/."""
    from PIL import Image, ImageStat
    from playwright.sync_api import sync_playwright

    from opslake.screens import browser

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings = {}
    with sync_playwright() as pw:
        chromium = browser.launch(pw)
        try:
            # One session (Superset keeps the UI language there), several dashboards at a time.
            context = chromium.new_context(viewport=browser.VIEWPORT, locale="zh-CN")
            pages = [context.new_page() for _ in range(browser.AT_ONCE)]
            browser.log_in(pages[0], superset, superset.admin_username, superset.password())
            for language in ("zh-CN", "en"):
                locale = SUPERSET_LOCALE[language]
                if locale != SUPERSET_LOCALE["zh-CN"]:  # BABEL_DEFAULT_LOCALE
                    # Superset's UI language is the session's: /lang/<locale> switches it.
                    pages[0].goto(f"{superset.url}/lang/{locale}", timeout=120_000)
                titles = {slug_for(s, language): translate(t, language) for s, t in SCREENS.items()}
                started = time.perf_counter()
                shown = []
                for slug, page, failed in browser.open_dashboards(pages, superset, titles):
                    shown.append(slug)
                    title = titles[slug]
                    shot = ARTIFACTS / f"{slug}.png"
                    page.screenshot(path=str(shot))
                    assert not failed, f"{title}: charts without data: {failed}"
                    assert title in page.inner_text(".dashboard-header, header, body")
                    bootstrap = json.loads(page.get_attribute("#app", "data-bootstrap") or "{}")
                    assert bootstrap.get("common", {}).get("locale") == locale, slug
                    if locale == "en":
                        assert not is_chinese(title)
                    image = Image.open(shot).convert("L")
                    assert image.size == (1920, 1080)
                    # Non-blank: many grey levels and real contrast, not one background colour.
                    levels = len(image.getcolors(maxcolors=256) or [])
                    assert levels > 40 and ImageStat.Stat(image).stddev[0] > 10, (
                        f"{shot} looks blank ({levels} grey levels)"
                    )
                assert shown == list(titles)
                timings[language] = time.perf_counter() - started
        finally:
            chromium.close()
    print("screens drawn in " + ", ".join(f"{lang} {t:.1f}s" for lang, t in timings.items()))


def test_native_filters_reach_the_charts_in_their_scope(
    superset: SupersetConfig, admin: SupersetClient
) -> None:
    """A new screen (业务链路与用户体验) and an old one in English (Resource posture) opened with
    a business and a time range chosen, as a shared link: every chart asks for the range, only
    the charts whose data carries the business for the business."""
    from playwright.sync_api import sync_playwright

    from opslake.screens import browser
    from opslake.screens.rest import rison

    con = duckdb.connect(str(superset.warehouse), read_only=True)
    try:
        business, day = con.execute(
            "SELECT min(business), CAST(min(bucket_start) AS DATE) FROM metric_values "
            "WHERE scope = 'business'"
        ).fetchone()
    finally:
        con.close()
    # Two local days: the simulated UTC day's latest hour is the next local day's morning.
    span = f"{day} : {day + timedelta(days=2)}"
    chosen = {
        "NATIVE_FILTER-business": {
            "id": "NATIVE_FILTER-business",
            "ownState": {},
            "filterState": {"value": [business]},
            "extraFormData": {"filters": [{"col": "business", "op": "IN", "val": [business]}]},
        },
        "NATIVE_FILTER-time": {
            "id": "NATIVE_FILTER-time",
            "ownState": {},
            "filterState": {"value": span},
            "extraFormData": {"time_range": span},
        },
    }
    titles = {c["id"]: c["slice_name"] for c in admin.list_all("chart", ["id", "slice_name"])}
    asked: dict[str, tuple[str, list]] = {}

    def record(request: Any) -> None:
        if request.method == "POST" and "/api/v1/chart/data" in request.url:
            body = request.post_data_json
            slice_id = body.get("form_data", {}).get("slice_id")
            if slice_id is None:  # the filter bar fetching a filter's values
                return
            query = body["queries"][0]
            asked[titles[slice_id]] = (
                query.get("time_range"),
                [f["val"] for f in query.get("filters", []) if f["col"] == "business"],
            )

    per_business = {
        "trace": {
            "各业务链路响应时间P95（秒，前端应用→后端服务）",
            "各业务链路错误率（前端应用→后端服务）",
            "业务链路各环节（请求、错误率、P95）",
            "各业务拨测可用率",
            "应用拨测时延P95（毫秒，按业务）",
        },
        # Every chart over the hourly object health; not the region's CPU, nor the
        # province-wide rack temperature and storage pool lines.
        "resources-en": {
            "Managed objects",
            "Average health score (latest hour)",
            "Unhealthy objects (latest hour)",
            "Firing alerts (latest hour)",
            "Objects by kind",
            "Health status per kind (latest hour)",
            "Average health per kind",
        },
    }
    with sync_playwright() as pw:
        chromium = browser.launch(pw)
        try:
            page = chromium.new_context(viewport=browser.VIEWPORT, locale="zh-CN").new_page()
            browser.log_in(page, superset, superset.admin_username, superset.password())
            page.on("request", record)
            for slug, charts in per_business.items():
                asked.clear()
                page.goto(
                    f"{superset.url}/superset/dashboard/{slug}/?standalone=1"
                    f"&native_filters={quote(rison(chosen))}",
                    timeout=120_000,
                )
                browser.wait_until_drawn(page)
                failed = page.evaluate(browser.FAILED_JS)
                page.screenshot(path=str(ARTIFACTS / f"{slug}-filtered.png"))
                assert not failed, f"{slug}: charts without data for {business} on {day}: {failed}"
                assert len(asked) in (9, 10), (slug, sorted(asked))
                assert all(time_range == span for time_range, _ in asked.values()), asked
                assert {t for t, (_, values) in asked.items() if values} == charts, slug
                assert all(
                    values == [[business]] for t, (_, values) in asked.items() if t in charts
                )
        finally:
            chromium.close()


def test_department_user_sees_only_its_department(
    superset: SupersetConfig, admin: SupersetClient
) -> None:
    departments = service.departments(superset.warehouse)
    assert len(departments) > 1
    dept = departments[0]
    ensure_user(admin, "dept_user", PASSWORD, [department_role(dept)])
    ensure_user(admin, "lead_user", PASSWORD, [LEADERSHIP_ROLE])
    ensure_user(admin, "ops_user", PASSWORD, [OPS_ROLE])
    datasets = {d.key: d for d in service.screen_datasets()}
    ids = {d["uuid"]: d["id"] for d in admin.list_all("dataset", ["id", "uuid"])}

    def departments_seen(client: SupersetClient, key: str) -> set[str]:
        body = {
            "datasource": {"id": ids[datasets[key].uuid], "type": "table"},
            "queries": [
                {
                    "columns": ["department"],
                    "metrics": [
                        {"expressionType": "SQL", "sqlExpression": "COUNT(*)", "label": "n"}
                    ],
                    "row_limit": 1000,
                }
            ],
            "result_format": "json",
            "result_type": "full",
        }
        data = client.post("/api/v1/chart/data", body)["result"][0]["data"]
        return {row["department"] for row in data}

    scoped = [key for key, d in datasets.items() if d.by_department]
    # Each language's copy of a dataset is scoped like the dataset.
    assert set(scoped) == {
        key + suffix
        for key in ("entity_health", "asset_ledger", "metric_values")
        for suffix in ("", "-en", "-zh-tw")
    }
    with SupersetClient(superset.url, "dept_user", PASSWORD) as user:
        for key in scoped:
            assert departments_seen(user, key) == {dept}, key
            assert len(departments_seen(admin, key) - {None}) > 1, key
        # The saved chart grouped by department too, through the dashboard's own query.
        chart = next(
            c
            for c in admin.list_all("chart", ["id", "slice_name"])
            if c["slice_name"] == "各部门配置项（按大类）"
        )
        rows = user.chart_data(chart["id"])["result"][0]["data"]
        assert rows and {r["department"] for r in rows} == {dept}
        # Datasets without a department column are not the department's to read.
        incidents = ids[datasets["incidents"].uuid]
        r = user.http.post(
            "/api/v1/chart/data",
            json={
                "datasource": {"id": incidents, "type": "table"},
                "queries": [{"columns": ["severity"], "metrics": [], "row_limit": 10}],
            },
        )
        assert r.status_code in (403, 404), r.text[:300]
    with SupersetClient(superset.url, "lead_user", PASSWORD) as lead:
        assert set(_dashboards(lead)) == set(ALL_SCREENS)
    with SupersetClient(superset.url, "ops_user", PASSWORD) as ops:
        assert set(_dashboards(ops)) == set(ALL_SCREENS)


def test_reimport_and_reprovision_change_nothing(
    superset: SupersetConfig, admin: SupersetClient
) -> None:
    files = read_files(DASHBOARDS_DIR)
    uuids = service._uuids(files)
    before = service.snapshot(admin, uuids)
    assert {r: len(v) for r, v in before.items()} == {r: len(v) for r, v in uuids.items()}

    again = service.sync_dashboards(admin, superset)
    assert not again.imported and again.reason == "unchanged"
    assert service.snapshot(admin, uuids) == before  # ids and changed_on untouched
    report = provision_access(
        admin, service.screen_datasets(), service.departments(superset.warehouse)
    )
    assert not report.changed, report

    # Even a forced import (Superset overwrites in place) adds nothing and keeps every id.
    forced = service.sync_dashboards(admin, superset, force=True)
    assert forced.imported
    after = service.snapshot(admin, uuids)
    assert {r: {u: v[0] for u, v in objs.items()} for r, objs in after.items()} == {
        r: {u: v[0] for u, v in objs.items()} for r, objs in before.items()
    }
    assert len(admin.list_all("chart", ["id"])) == len(uuids["chart"])
    assert len(admin.list_all("dashboard", ["id"])) == len(uuids["dashboard"])
    # …and the import after it is a no-op again.
    assert not service.sync_dashboards(admin, superset).imported


def _sql_lab(admin: SupersetClient, database_id: int, sql: str) -> httpx.Response:
    """Run ``sql`` in SQL Lab as the admin (synchronously); the raw answer."""
    return admin.http.post(
        "/api/v1/sqllab/execute/",
        json={
            "database_id": database_id,
            "sql": sql,
            "runAsync": False,
            "client_id": secrets.token_hex(5),
            "tab": "opslake-test",
        },
    )


def test_live_views_open_and_no_other_file_does(
    superset: SupersetConfig, admin: SupersetClient
) -> None:
    """Superset's warehouse connection reads the live views' lake directories and nothing
    else: not /etc/passwd, not another table's files, not ``..`` out of an allowed one, and it
    writes nothing into an allowed one."""
    con = duckdb.connect(str(superset.warehouse), read_only=True)
    try:
        allowed = [
            d
            for (d,) in con.execute(
                "SELECT location FROM _opslake_warehouse WHERE location IS NOT NULL ORDER BY name"
            ).fetchall()
        ]
        live_rows = con.execute("SELECT count(*) FROM incident_alerts_live").fetchone()[0]
    finally:
        con.close()
    assert {"incidents_live", "incident_alerts_live"} <= {Path(d).name for d in allowed}
    assert all(d.endswith("_live/") for d in allowed), allowed
    gold = str(Path(allowed[0]).parent)
    [database] = admin.list_all("database", ["id", "database_name"])
    answered = _sql_lab(admin, database["id"], "SELECT count(*) AS n FROM incident_alerts_live")
    assert answered.status_code == 200, answered.text
    assert answered.json()["data"] == [{"n": live_rows}]
    escape = f"{allowed[0]}../incident_alerts/**/*.parquet"
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM read_parquet('{gold}/incident_alerts/**/*.parquet')",
        f"SELECT * FROM read_parquet('{escape}')",
        "SET enable_external_access = true",
    ):
        refused = _sql_lab(admin, database["id"], sql)
        assert refused.status_code >= 400, (sql, refused.text)
        assert "root:" not in refused.text and "incident_id" not in refused.text, sql
    planted = Path(allowed[0]) / "planted.parquet"
    copied = _sql_lab(admin, database["id"], f"COPY (SELECT 1 AS x) TO '{planted}'")
    assert copied.status_code >= 400, copied.text
    assert not planted.exists()


def test_live_self_alerts_show_on_the_platform_screen_without_a_rebuild(
    superset: SupersetConfig, admin: SupersetClient, tmp_path: Path
) -> None:
    """Issue 21 must-show 4 on the screen: a real failed pipeline run and a real burst of 5xx
    answers from a running ``opslake serve`` each show on 平台自身运行's self-alerts chart
    (Superset's chart data API, zh-CN and en) within two minutes, the warehouse not rebuilt."""
    from opslake.alerting import live
    from opslake.ingest import collect
    from opslake.ingest.tasks import load_tasks
    from opslake.lake.landing import LandingZone
    from opslake.orchestration import runner
    from tests.keys import bearer, ingest_key

    settings = Settings.from_env()
    built = superset.warehouse.stat().st_mtime_ns
    today = datetime.now(UTC).date().isoformat()
    # The data service answering the burst: its own state (keys, an unreadable warehouse).
    served = Settings.from_env(
        {"OPSLAKE_HOME": str(settings.home), "OPSLAKE_STATE_DIR": str(tmp_path / "served")}
    )
    scraper = ingest_key(served, "self-watch", "data_engineer", ["platform:read"])
    reader = ingest_key(served, "ops", "ops_engineer")
    served.warehouse_path.write_bytes(b"not a DuckDB file")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    [task] = [t for t in load_tasks(REPO / "collection" / "tasks") if t.name == "opslake-self"]
    task = dataclasses.replace(
        task, params={**task.params, "api_url": api, "superset_url": superset.url}
    )
    env = {**os.environ, "OPSLAKE_STATE_DIR": str(tmp_path / "served")}
    with (
        pytest.MonkeyPatch.context() as mp,
        running(
            [sys.executable, "-m", "opslake", "serve", "--port", str(port)],
            f"{api}/healthz",
            tmp_path / "serve.log",
            env=env,
        ),
        httpx.Client(base_url=api, timeout=30, trust_env=False) as http,
    ):
        mp.setenv("OPSLAKE_SELF_API_KEY", scraper)
        # A pipeline run that fails for good (a landed batch truncated under it).
        zone = LandingZone.from_settings(settings)
        line = b"<13>1 2026-03-02T10:00:00Z web-01 nginx - - - upstream timed out\n"
        batch = zone.write("syslog", line, fmt="log", dt=today)
        Path(batch.path).write_bytes(line[:20])
        with pytest.raises(runner.PipelineError, match="missing or truncated"):
            runner.materialize(settings, [today], ["landing/syslog"])
        failed_at = time.monotonic()
        first = collect.run_task(task, settings)  # the baseline the burst is counted from
        assert first.record is not None and first.record.ok, first.record
        burst = [http.get("/v1/incidents", headers=bearer(reader)) for _ in range(8)]
        assert {r.status_code for r in burst} == {503}, burst[0].text
        burst_at = time.monotonic()
        second = collect.run_task(task, settings)
        assert second.record is not None and second.record.ok, second.record
    refresh_live_alerts(settings)
    raised = {
        r["alertname"]: r["incident_id"]
        for r in zone.lake.read_table("gold", live.LIVE_INCIDENT_ALERTS, dts=[today]).to_pylist()
        if r["source"] == "opslake-platform"
    }
    charts = {c["slice_name"]: c["id"] for c in admin.list_all("chart", ["id", "slice_name"])}
    for language in ("zh-CN", "en"):
        title = translate("平台自身告警（管道失败、数据服务错误、大屏与采集）", language)
        rows = admin.chart_data(charts[title])["result"][0]["data"]
        shown = {r["alertname"]: r for r in rows if r["live"]}
        for name in ("PipelineRunFailed", "ApiErrorBurst"):
            assert shown[name]["incident_id"] == raised[name], (language, name, rows)
    done = time.monotonic()
    assert superset.warehouse.stat().st_mtime_ns == built, "the warehouse was rebuilt"
    # Processing time; the schedule adds at most a minute (collection) and 5 s (the sensor).
    print(
        f"failure → on the screen {done - failed_at:.1f} s, burst → on the screen "
        f"{done - burst_at:.1f} s (+ ≤ 60 s collection interval + ≤ 5 s sensor interval)"
    )
    assert done - failed_at + 65 < 120 and done - burst_at + 65 < 120
