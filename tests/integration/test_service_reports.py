"""A weekly service report rendered from the real Superset screens to PDF, kept and e-mailed.

Superset and the small simulated estate are the session's (``superset``,
tests/integration/superset_fixture.py), which the screens test reads too. The report goes through
``produce`` as the Dagster asset and the CLI run it: headless Chromium renders the screens,
the PDF lands in the lake with its manifest and is e-mailed to a real SMTP server (aiosmtpd).
The PDF is read back with poppler (``pdftotext``, ``pdftoppm``) and kept in
``tests/artifacts/reports/``.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from typer.testing import CliRunner

from opslake.cli import app
from opslake.lake.storage import Lake
from opslake.screens import service
from opslake.screens.access import LEADERSHIP_ROLE, ensure_user
from opslake.screens.reports import (
    KINDS,
    REPORT_ROLE,
    Period,
    list_reports,
    newest_day,
    produce,
    provision_report_role,
)
from opslake.screens.rest import SupersetClient
from opslake.screens.server import SupersetConfig
from opslake.settings import Settings
from tests.integration.services import REPO, install_services
from tests.receivers import smtp_server

ARTIFACTS = REPO / "tests" / "artifacts" / "reports"
PASSWORD = "Reports-test-1"


def _poppler() -> None:
    if not (shutil.which("pdftotext") and shutil.which("pdftoppm")):
        install_services()


def _page_text(pdf: Path, page: int) -> str:
    return subprocess.run(
        ["pdftotext", "-f", str(page), "-l", str(page), "-layout", str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _non_blank(image: Image.Image, what: str) -> None:
    grey = image.convert("L")
    levels = len(grey.getcolors(maxcolors=256) or [])
    stddev = ImageStat.Stat(grey).stddev[0]
    assert levels > 20 and stddev > 10, (
        f"{what} looks blank ({levels} grey levels, stddev {stddev:.1f})"
    )


def test_weekly_report_renders_to_pdf_is_kept_listed_and_mailed(
    superset: SupersetConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _poppler()
    # Rendered by the browser the setting names (OPSLAKE_BROWSER), as a domestic
    # Chromium-based build would be: here a wrapper, off PATH, that notes each start and runs
    # Debian's Chromium binary.
    chromium = Path("/usr/lib/chromium/chromium")
    assert chromium.is_file(), "Debian's chromium package puts its binary there"
    starts = tmp_path / "browser-starts"
    wrapper = tmp_path / "domestic-browser"
    wrapper.write_text(f'#!/bin/sh\necho started >>"{starts}"\nexec "{chromium}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("OPSLAKE_BROWSER", str(wrapper))
    spec = KINDS["weekly"]
    period = Period.containing("weekly", newest_day(superset.warehouse))
    started = time.perf_counter()
    with smtp_server() as (port, mails):
        monkeypatch.setenv("OPSLAKE_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("OPSLAKE_SMTP_PORT", str(port))
        for name in ("OPSLAKE_SMTP_USER", "OPSLAKE_SMTP_PASSWORD", "OPSLAKE_ALERTING_DIR"):
            monkeypatch.delenv(name, raising=False)
        settings = Settings.from_env()
        row = produce(settings, "weekly", say=print)
        for _ in range(50):  # aiosmtpd hands the message over from its own thread
            if mails:
                break
            time.sleep(0.1)
    took = time.perf_counter() - started
    assert starts.read_text() == "started\n", "the report was not rendered by OPSLAKE_BROWSER"

    # Kept in the lake, with its manifest, and listed.
    lake = Lake.from_settings(settings)
    assert (row["kind"], row["period"]) == ("weekly", period.label)
    assert row["pages"] == 1 + len(spec.screens)
    data = lake.read_bytes(row["path"])
    assert row["bytes"] == len(data) and row["sha256"] == hashlib.sha256(data).hexdigest()
    assert row["path"].endswith(f"reports/weekly/{period.label}/report.pdf")
    assert [r for r in list_reports(lake) if r["period"] == period.label] == [row]
    listed = CliRunner().invoke(app, ["reports", "list"])
    assert listed.exit_code == 0, listed.output
    assert "weekly" in listed.output and period.label in listed.output
    assert f"{row['pages']}" in listed.output

    # The pages: the cover, then one page per screen with its Chinese title and drawn charts.
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pdf = ARTIFACTS / f"weekly-{period.label}.pdf"
    pdf.write_bytes(data)
    cover = _page_text(pdf, 1)
    assert spec.title in cover and period.label in cover and "生成时间" in cover
    titles = list(row["screens"].values())
    assert titles == ["领导驾驶舱", "服务质量", "事件与告警", "资源台账", "数据质量"]
    for number, title in enumerate(titles, start=2):
        text = _page_text(pdf, number)
        assert title in text, f"page {number} lacks {title}:\n{text[:400]}"
        assert title in cover, f"the cover does not list {title}"
    assert "SLA达成率" in _page_text(pdf, 3) and "即将到期" in _page_text(pdf, 5)
    pages = ARTIFACTS / f"weekly-{period.label}-page"
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(pages)], check=True)
    images = sorted(ARTIFACTS.glob(f"{pages.name}-*.png"))
    assert len(images) == row["pages"]
    for image in images:
        _non_blank(Image.open(image), image.name)
    for slug, path in row["images"].items():
        shot = Image.open(io.BytesIO(lake.read_bytes(path)))
        assert shot.width == 1920 and shot.height >= 1080, slug
        _non_blank(shot, path)
    assert not row["empty_charts"], f"charts without data for the period: {row['empty_charts']}"

    # E-mailed with the PDF attached, to the addresses notify.yaml gives weekly reports.
    assert len(mails) == 1, [m["Subject"] for m in mails]
    mail = mails[0]
    assert spec.title in mail["Subject"] and period.label in mail["Subject"]
    assert {a.strip() for a in mail["To"].split(",")} == {
        "ops-centre@ops.gov.local",
        "leadership@ops.gov.local",
    }
    attached = [p for p in mail.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert len(attached) == 1 and attached[0].get_content() == data
    assert attached[0].get_filename() == f"opslake-weekly-{period.label}.pdf"
    assert row["emailed_to"] == ["leadership@ops.gov.local", "ops-centre@ops.gov.local"]
    print(
        f"weekly report {period.label}: {row['pages']} pages, {row['bytes']:,} bytes in "
        f"{took:.0f}s; {pdf}"
    )


def test_report_user_has_sql_lab_and_csv_export(superset: SupersetConfig) -> None:
    with service.admin_client(superset) as admin:
        provision_report_role(admin)
        assert not provision_report_role(admin).changed  # idempotent
        ensure_user(admin, "report_user", PASSWORD, [REPORT_ROLE])
        ensure_user(admin, "lead_only", PASSWORD, [LEADERSHIP_ROLE])
        database = next(d["id"] for d in admin.list_all("database", ["id", "database_name"]))
        chart = next(
            c["id"]
            for c in admin.list_all("chart", ["id", "slice_name"])
            if c["slice_name"] == "各业务服务水平"
        )
    query = {
        "database_id": database,
        "sql": "SELECT count(*) AS n FROM service_levels",
        "runAsync": False,
        "schema": None,
    }
    with SupersetClient(superset.url, "report_user", PASSWORD) as user:
        result = user.post("/api/v1/sqllab/execute/", query)
        assert result["data"][0]["n"] > 0
        csv = user.http.get(f"/api/v1/chart/{chart}/data/", params={"format": "csv"})
        assert csv.status_code == 200 and "text/csv" in csv.headers["content-type"], csv.text
        assert csv.text.count("\n") > 1
        xlsx = user.http.get(f"/api/v1/chart/{chart}/data/", params={"format": "xlsx"})
        assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK", xlsx.text[:300]
    with SupersetClient(superset.url, "lead_only", PASSWORD) as lead:
        denied = lead.http.post("/api/v1/sqllab/execute/", json=query)
        assert denied.status_code in (401, 403), denied.text[:300]


def test_period_filter_limits_chart_data_to_the_period(superset: SupersetConfig) -> None:
    """The rewrite the renderer applies to each chart-data request, through the real API."""
    import json

    from opslake.screens.reports import _period_columns, period_filter

    week = Period.containing("weekly", newest_day(superset.warehouse))
    earlier = Period.containing("weekly", week.start - timedelta(days=70))
    with service.admin_client(superset) as admin:
        columns = _period_columns(admin)
        assert len(columns) >= 8
        counts = {}
        for title in ("最近事件", "每日变更与失败变更", "质量分趋势（按类别）"):
            # zh-TW may spell a title as zh-CN does (最近事件): the copies read the same rows,
            # and the one with a saved query context is asked.
            charts = [
                admin.get(f"/api/v1/chart/{c['id']}")["result"]
                for c in admin.list_all("chart", ["id", "slice_name"])
                if c["slice_name"] == title
            ]
            chart = next(c for c in charts if c.get("query_context"))
            context = json.loads(chart["query_context"])
            for period in (week, earlier):
                body = json.loads(period_filter(json.dumps(context).encode(), period, columns))
                counts[title, period.label] = admin.post("/api/v1/chart/data", body)["result"][0][
                    "rowcount"
                ]
    assert all(counts[t, week.label] > 0 for t, _ in counts), counts
    assert all(counts[t, earlier.label] == 0 for t, _ in counts), counts
