"""The data-quality check-up report: scores and the self-contained HTML page."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pytest

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.metrics_catalog.completeness import METRIC_QUALITY_SCHEMA
from opslake.quality.report import render_report, scores, write_report
from opslake.quality.results import CheckResult, to_table, write_results

DAY = date(2026, 11, 24)


def _check(
    table: str, check: str, severity: str, passed: bool, source: str | None = "prom", **kw
) -> CheckResult:
    return CheckResult(
        layer="silver",
        table=table,
        check=check,
        kind=kw.pop("kind", "not_null"),
        severity=severity,
        passed=passed,
        observed=kw.pop("observed", "0"),
        threshold=kw.pop("threshold", "0"),
        rows=kw.pop("rows", 100),
        source=source,
        **kw,
    )


def _at(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=23)


def test_scores_weight_errors_three_times_warnings() -> None:
    results = to_table(
        [
            _check("metrics", "ts_not_null", "error", True, source="prom"),
            _check("metrics", "value_range", "error", False, source="prom"),
            _check("metrics", "unit_known", "warning", True, source="prom"),
            _check("logs", "host_known", "warning", False, source="syslog"),
            _check("logs", "msg_not_null", "error", True, source=None),
        ],
        DAY,
        _at(DAY),
        "run-1",
    )

    got = scores(results)

    # metrics: (3 + 0 + 1) / (3 + 3 + 1); logs: (0 + 3) / (1 + 3)
    assert got["tables"] == {
        "silver.logs": pytest.approx(75.0),
        "silver.metrics": pytest.approx(400 / 7),
    }
    # a check without a source counts for its table and overall, not for any source
    assert got["sources"] == {"prom": pytest.approx(400 / 7), "syslog": pytest.approx(0.0)}
    assert got["overall"] == pytest.approx(100 * 7 / 11)


def test_scores_of_no_results() -> None:
    from opslake.quality.results import QUALITY_RESULTS

    assert scores(QUALITY_RESULTS.empty_table()) == {"overall": None, "tables": {}, "sources": {}}


def _metric_quality(lake: Lake, day: date) -> None:
    end = datetime.combine(day, datetime.min.time(), UTC)
    rows = [
        {
            "day": day,
            "metric_id": f"m.{i:02d}",
            "metric_version": "v1",
            "rows": 24,
            "expected": 24,
            "observed": 24 - i,
            "completeness": (24 - i) / 24,
            "last_bucket_start": end + timedelta(hours=22),
            "freshness_minutes": 60.0,
        }
        for i in range(20)
    ]
    rows.append(
        {
            "day": day,
            "metric_id": "alerts.count",
            "metric_version": "v1",
            "rows": 3,
            "expected": None,
            "observed": None,
            "completeness": None,
            "last_bucket_start": None,
            "freshness_minutes": None,
        }
    )
    lake.write_table(
        pa.Table.from_pylist(rows, schema=METRIC_QUALITY_SCHEMA),
        "gold",
        "metric_quality",
        {"dt": day.isoformat(), "family": "infra"},
    )


@pytest.fixture
def filled(lake: Lake) -> Lake:
    """Results on days DAY-4, DAY-3 and DAY (a gap at DAY-2 and DAY-1), landing, metrics."""
    for back in (4, 3):
        d = DAY - timedelta(days=back)
        write_results(
            lake,
            [
                _check("metrics", "ts_not_null", "error", True),
                _check("metrics", "value_range", "warning", back == 3),
            ],
            d,
            _at(d),
            f"run-{back}",
        )
    write_results(
        lake,
        [
            _check("metrics", "ts_not_null", "error", True),
            _check(
                "metrics",
                "value_range_check",
                "error",
                False,
                kind="range",
                observed="12 rows > 100",
                threshold="value <= 100",
                unexpected_rows=12,
                sample=[
                    {"entity": "<script>alert('x')</script>", "value": 250.5},
                    {"entity": "db-01", "value": 101},
                    {"entity": "db-02", "value": 102},
                    {"entity": "db-03", "value": 103},
                    {"entity": "db-04", "value": 104},
                    {"entity": "db-05", "value": 105},
                ],
            ),
        ],
        DAY,
        _at(DAY),
        "run-0",
    )
    write_results(
        lake,
        [
            _check(
                "logs",
                "host_in_cmdb_check",
                "warning",
                False,
                kind="referential",
                source="syslog",
                unexpected_rows=2,
                sample=[{"host": "x&y"}],
            ),
        ],
        DAY,
        _at(DAY),
        "run-0",
    )
    zone = LandingZone(lake)
    noon = datetime.combine(DAY, datetime.min.time(), UTC) + timedelta(hours=21)
    zone.write("prometheus", b"up 1\n", fmt="prom", received_at=noon)
    zone.write("prometheus", b"up 0\n", fmt="prom", received_at=noon - timedelta(hours=3))
    zone.write("syslog", b"<13>hi\n", fmt="log", received_at=noon - timedelta(days=2))
    _metric_quality(lake, DAY)
    return lake


def test_report_shows_failed_checks_with_escaped_samples(filled: Lake) -> None:
    html = render_report(filled, DAY)

    assert "数据质量体检报告" in html and "Data quality check-up" in html
    assert "value_range_check" in html and "host_in_cmdb_check" in html
    assert "12 rows &gt; 100" in html and "value &lt;= 100" in html
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "x&amp;y" in html
    # at most five sample rows per check: db-01..db-04 and the injected one, not db-05
    assert "db-04" in html and "db-05" not in html
    # the passed check is not among the failed ones
    failed = html.split("Failed checks", 1)[1].split("</section>", 1)[0]
    assert "ts_not_null" not in failed


def test_report_scores_cards(filled: Lake) -> None:
    html = render_report(filled, DAY)
    overview = html.split("Overall score", 1)[1].split("</section>", 1)[0]
    # day: metrics (3 + 0) / 6 = 50; logs 0/1; overall 3/7
    assert "silver.metrics" in overview and "silver.logs" in overview
    assert ">50.0<" in overview and ">0.0<" in overview and f">{300 / 7:.1f}<" in overview
    assert "prom" in overview and "syslog" in overview


def test_trend_has_one_point_per_day_with_results(filled: Lake) -> None:
    html = render_report(filled, DAY)

    trend = re.search(r'<svg class="trend".*?</svg>', html, re.DOTALL).group(0)
    metrics = re.search(
        r'<g class="series" data-table="silver.metrics".*?</g>', trend, re.DOTALL
    ).group(0)
    days = re.findall(r'<circle class="pt"[^>]*data-day="([0-9-]+)"', metrics)
    assert days == [
        (DAY - timedelta(days=4)).isoformat(),
        (DAY - timedelta(days=3)).isoformat(),
        DAY.isoformat(),
    ]
    logs = re.search(r'<g class="series" data-table="silver.logs".*?</g>', trend, re.DOTALL).group(
        0
    )
    assert re.findall(r'data-day="([0-9-]+)"', logs) == [DAY.isoformat()]
    assert trend.count('class="pt"') == 4
    # DAY-4 → DAY-3 is a line; the gap at DAY-2 and DAY-1 is not bridged
    lines = re.findall(r'<polyline points="([^"]*)"', metrics)
    assert len(lines) == 1 and len(lines[0].split()) == 2
    # scores: DAY-4 (3 + 0) / 4, DAY-3 4 / 4, DAY 3 / 6
    assert re.findall(r"<title>silver.metrics [0-9-]+: ([0-9.]+)</title>", metrics) == [
        "75.0",
        "100.0",
        "50.0",
    ]


def test_freshness_rows_per_landing_source(filled: Lake) -> None:
    html = render_report(filled, DAY)
    fresh = html.split("Source freshness", 1)[1].split("</section>", 1)[0]
    rows = re.findall(r"<tr class=\"g-\w+\">(.*?)</tr>", fresh, re.DOTALL)

    assert len(rows) == 2
    prom, syslog = rows
    assert "prometheus" in prom and "2026-11-24 21:00:00" in prom
    assert ">3.0<" in prom  # hours before end of day
    assert ">2<" in prom  # batches
    assert "10 B" in prom
    assert "syslog" in syslog and "dt=2026-11-22" in syslog and ">0<" in syslog


def test_metric_quality_lowest_completeness_first(filled: Lake) -> None:
    html = render_report(filled, DAY)
    section = html.split("Metric quality", 1)[1].split("</section>", 1)[0]
    ids = re.findall(r"<code>(m\.\d\d|alerts\.count)</code>", section)

    assert len(ids) == 15
    assert ids[:3] == ["m.19", "m.18", "m.17"]
    assert "alerts.count" not in ids  # null completeness sorts last
    assert "21 metrics" in section


def test_report_is_self_contained(filled: Lake) -> None:
    html = render_report(filled, DAY)

    assert "http://" not in html and "https://" not in html
    assert not re.search(r"(?:src|href)\s*=|url\(|@import|<script|<link", html, re.IGNORECASE)
    assert "<style>" in html and "<svg" in html


def test_report_without_any_data(lake: Lake) -> None:
    html = render_report(lake, DAY)

    assert html.count("No data") >= 4  # overview, failed, trend, metrics, freshness
    assert "<svg" in html  # the empty gauge


def test_write_report_writes_atomically_into_the_lake(filled: Lake) -> None:
    path = write_report(filled, DAY)

    assert path == filled.path("gold", "quality_report", f"dt={DAY}", "report.html")
    assert filled.read_bytes(path).decode().startswith("<!DOCTYPE html>")
    assert not filled.list_files(filled.path("_incoming"))


def test_cli_without_results_is_a_clear_config_error(lake: Lake) -> None:
    from typer.testing import CliRunner

    from opslake.cli import app
    from opslake.errors import ConfigError

    result = CliRunner().invoke(app, ["quality", "report"])
    assert isinstance(result.exception, ConfigError)
    assert "no quality results" in str(result.exception) and "--date" in str(result.exception)

    result = CliRunner().invoke(app, ["quality", "report", "--date", "24/11/2026"])
    assert isinstance(result.exception, ConfigError) and "YYYY-MM-DD" in str(result.exception)

    # a named day without results still gets a page that says so
    result = CliRunner().invoke(app, ["quality", "report", "--date", DAY.isoformat()])
    assert result.exit_code == 0, result.output
    path = result.stdout.strip()
    assert path == lake.path("gold", "quality_report", f"dt={DAY}", "report.html")
    assert "No data" in lake.read_bytes(path).decode()


def test_cli_defaults_to_the_last_day_with_results(filled: Lake, tmp_path) -> None:
    from typer.testing import CliRunner

    from opslake.cli import app

    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["quality", "report", "--output", str(out)])
    assert result.exit_code == 0, result.output
    lake_path, copy = result.stdout.split()
    assert lake_path.endswith(f"dt={DAY}/report.html") and copy == str(out)
    assert out.read_bytes() == filled.read_bytes(lake_path)
