"""The quality check-up written by the CLI renders in a real headless Chromium."""

from __future__ import annotations

import shutil
import struct
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opslake.cli import app
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.quality.results import CheckResult, write_results
from opslake.settings import Settings
from tests.integration.services import REPO, chromium_screenshot

DAY = date(2026, 11, 24)
ARTIFACTS = REPO / "tests" / "artifacts"


def _results(day: date, back: int) -> list[list[CheckResult]]:
    def check(
        table: str, name: str, kind: str, severity: str, passed: bool, source: str, **kw
    ) -> CheckResult:
        return CheckResult(
            layer="silver",
            table=table,
            check=name,
            kind=kind,
            severity=severity,
            passed=passed,
            observed=kw.pop("observed", "0"),
            threshold=kw.pop("threshold", "0"),
            rows=kw.pop("rows", 86_400),
            source=source,
            **kw,
        )

    return [
        [
            check("metric_points", "ts_not_null", "not_null", "error", True, "prometheus"),
            check(
                "metric_points",
                "value_in_range",
                "range",
                "error",
                back != 0,
                "prometheus",
                observed="37 rows outside [0, 100]",
                threshold="0 <= value <= 100",
                unexpected_rows=37,
                sample=[
                    {"entity": f"host-{i:02d}", "metric": "cpu_util", "value": 100 + i * 7.5}
                    for i in range(7)
                ],
            ),
            check(
                "metric_points",
                "volume",
                "volume",
                "warning",
                back != 1,
                "prometheus",
                observed="81,000 rows",
                threshold=">= 84,000 rows",
            ),
        ],
        [
            check(
                "logs",
                "host_in_cmdb",
                "referential",
                "warning",
                back == 2,
                "syslog",
                observed="2.1% unknown hosts",
                threshold="<= 1%",
                unexpected_rows=512,
                sample=[
                    {"host": "<script>alert(1)</script>", "msg": "sshd: accepted"},
                    {"host": "edge-fw-9", "msg": "link down"},
                ],
            ),
            check(
                "logs",
                "parse_rate",
                "parse_rate",
                "error",
                True,
                "syslog",
                observed="99.7%",
                threshold=">= 99%",
            ),
        ],
    ]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def test_report_renders_in_headless_chromium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPSLAKE_HOME", str(tmp_path / "lake"))
    monkeypatch.delenv("OPSLAKE_STATE_DIR", raising=False)
    monkeypatch.delenv("OPSLAKE_S3_ENDPOINT", raising=False)
    lake = Lake.from_settings(Settings.from_env())
    for back in (2, 1, 0):
        day = DAY - timedelta(days=back)
        at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=23, minutes=5)
        for results in _results(day, back):
            write_results(lake, results, day, at, f"run-{day}")
    LandingZone(lake).write(
        "prometheus",
        b"up 1\n",
        fmt="prom",
        dt=DAY.isoformat(),
        received_at=datetime.combine(DAY, datetime.min.time(), UTC)
        + timedelta(hours=22, minutes=30),
    )

    copy = tmp_path / "copy" / "report.html"
    copy.parent.mkdir()
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["quality", "report", "--output", str(copy)])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    printed = result.stdout.split()
    report = Path(lake.path("gold", "quality_report", f"dt={DAY}", "report.html"))
    assert printed == [str(report), str(copy)], result.stdout  # the default day: the last one
    html = report.read_text(encoding="utf-8")
    assert copy.read_text(encoding="utf-8") == html
    assert "value_in_range" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "http://" not in html and "https://" not in html

    shot = chromium_screenshot(report, tmp_path / "shot.png")
    size = shot.stat().st_size
    assert size > 20_000, f"screenshot is only {size} bytes (blank page?)"
    assert _png_size(shot) == (1400, 2000)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "quality-report.png")
    print(
        f"report {len(html.encode())} bytes rendered+written in {elapsed:.2f}s; "
        f"screenshot {size} bytes"
    )
