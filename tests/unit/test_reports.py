"""Service reports without a browser: periods, the period filter, manifests, receivers."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from opslake.errors import ConfigError
from opslake.lake.storage import Lake
from opslake.screens.reports import (
    KINDS,
    Period,
    Rendered,
    keep,
    list_reports,
    period_filter,
    recipients,
)
from opslake.settings import Settings


@pytest.mark.parametrize(
    ("kind", "text", "start", "end"),
    [
        ("daily", "2026-11-25", date(2026, 11, 25), date(2026, 11, 26)),
        ("weekly", "2026-W48", date(2026, 11, 23), date(2026, 11, 30)),
        ("weekly", "2026-W01", date(2025, 12, 29), date(2026, 1, 5)),
        ("monthly", "2026-12", date(2026, 12, 1), date(2027, 1, 1)),
    ],
)
def test_periods_parse_and_contain(kind: str, text: str, start: date, end: date) -> None:
    period = Period.parse(kind, text)
    assert (period.label, period.start, period.end) == (text, start, end)
    assert Period.containing(kind, period.last_day) == period
    assert period.time_range() == f"{start}T00:00:00 : {end}T00:00:00"


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("weekly", "2026-48"),
        ("weekly", "2026-W54"),
        ("monthly", "2026-13"),
        ("daily", "2026-W10"),
        ("yearly", "2026"),
    ],
)
def test_bad_periods_say_how_to_write_them(kind: str, text: str) -> None:
    with pytest.raises(ConfigError, match="period|kind"):
        Period.parse(kind, text)


def test_period_filter_replaces_the_time_filter_of_known_datasets() -> None:
    period = Period.parse("weekly", "2026-W48")
    body = {
        "datasource": {"id": 7, "type": "table"},
        "queries": [
            {
                "filters": [
                    {"col": "day", "op": "TEMPORAL_RANGE", "val": "No filter"},
                    {"col": "business", "op": "IN", "val": ["a"]},
                ],
                "metrics": ["x"],
            }
        ],
    }
    out = json.loads(period_filter(json.dumps(body).encode(), period, {7: "day"}))
    assert out["queries"][0]["filters"] == [
        {"col": "business", "op": "IN", "val": ["a"]},
        {"col": "day", "op": "TEMPORAL_RANGE", "val": period.time_range()},
    ]
    assert out["queries"][0]["time_range"] == period.time_range()
    # Other datasets (snapshots such as the asset ledger) and non-JSON bodies pass unchanged.
    assert period_filter(json.dumps(body).encode(), period, {8: "day"}) is None
    assert period_filter(b"form=1", period, {7: "day"}) is None


def test_weekly_report_covers_service_incidents_assets_and_quality() -> None:
    assert {"service", "events", "assets", "quality"} <= set(KINDS["weekly"].screens)


def test_kept_report_is_listed_with_its_manifest(tmp_path: Path) -> None:
    lake = Lake.from_settings(Settings.from_env({"OPSLAKE_HOME": str(tmp_path / "lake")}))
    pdf, png = tmp_path / "report.pdf", tmp_path / "service.png"
    pdf.write_bytes(b"%PDF-1.4 test")
    png.write_bytes(b"png")
    rendered = Rendered(
        "weekly",
        Period.parse("weekly", "2026-W48"),
        pdf,
        {"service": png},
        {"service": "服务质量"},
        2,
        datetime(2026, 11, 30, tzinfo=UTC),
        date(2026, 11, 29),
    )
    row = keep(lake, rendered, ["a@example.org"])
    assert row["path"].endswith("reports/weekly/2026-W48/report.pdf")
    assert lake.read_bytes(row["images"]["service"]) == b"png"
    assert list_reports(lake) == [row] == list_reports(lake, "weekly")
    assert list_reports(lake, "daily") == []
    assert (
        row["bytes"] == 13 and len(row["sha256"]) == 64 and row["emailed_to"] == ["a@example.org"]
    )


def _settings(tmp_path: Path, notify: str) -> Settings:
    (tmp_path / "notify.yaml").write_text(notify)
    return Settings.from_env(
        {"OPSLAKE_HOME": str(tmp_path / "lake"), "OPSLAKE_ALERTING_DIR": str(tmp_path)}
    )


NOTIFY = """
receivers:
  mail: {channel: email, host_env: T_SMTP_HOST, to: [ops@example.org]}
  robot: {channel: wecom, url_env: T_WECOM}
reports:
  weekly: {receivers: [mail], to: [lead@example.org]}
  daily: {receivers: [mail]}
"""


def test_report_receivers_come_from_notify_yaml(tmp_path: Path) -> None:
    settings = _settings(tmp_path, NOTIFY)
    found, skipped = recipients(settings, "weekly", {"T_SMTP_HOST": "127.0.0.1"})
    assert [(r.receiver, r.to) for r in found] == [("mail", ("lead@example.org",))]
    found, _ = recipients(settings, "daily", {"T_SMTP_HOST": "127.0.0.1"})
    assert found[0].to == ("ops@example.org",)
    assert recipients(settings, "monthly", {}) == ([], [])
    found, skipped = recipients(settings, "weekly", {})
    assert not found and "unconfigured" in skipped[0]


@pytest.mark.parametrize(
    ("reports", "message"),
    [
        ("weekly: {receivers: [robot]}", "only e-mail receivers"),
        ("weekly: {receivers: [nobody]}", "not defined"),
        ("yearly: {receivers: [mail]}", "unknown kinds"),
    ],
)
def test_bad_report_routes_are_config_errors(tmp_path: Path, reports: str, message: str) -> None:
    text = NOTIFY.split("reports:")[0] + "reports:\n  " + reports + "\n"
    with pytest.raises(ConfigError, match=message):
        recipients(_settings(tmp_path, text), "weekly", {"T_SMTP_HOST": "h"})
