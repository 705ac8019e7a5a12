"""Data-quality checks end to end (S6.2e): clean days pass, each kind of corruption is caught.

Two clean simulated days give the volume checks their history; the third day is corrupted
by landing extra batches or deleting a source's landed day (landed bytes are never edited
in place), then materialized. Each corruption must fail the check that guards against it,
quarantine the offending rows (row checks) while good rows are published, block the
partition downstream (table checks), and show up as a quality event in silver events.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from opslake.ingest.parsers.itsm import COLUMNS
from opslake.lake import quarantine, schemas
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.quality import alerts
from opslake.quality.results import read_results
from opslake.quality.suites import load_suites
from opslake.quality.validate import Context, TableValidator
from opslake.settings import Settings
from opslake.simulate import SimulationConfig, simulate
from opslake.simulate.writer import CONNECTOR as SIMULATOR
from tests.integration.services import chromium_screenshot

START = date(2026, 3, 2)
CLEAN = ["2026-03-02", "2026-03-03"]
DAY3 = "2026-03-04"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
VM = "vm-0001"
GHOST = "ghost-9999"
PROM_BATCH = "quality-test-prom"
ITSM_BATCH = "quality-test-itsm"
ITSM_DROPPED = "quality-test-itsm-no-priority"
#: Good samples of the Prometheus batch: (minute of day 3, value).
GOOD_SAMPLES = [(600, 0.25), (601, 0.5), (602, 0.75), (603, 1.0)]


def _ms(minute: int) -> int:
    day = datetime.fromisoformat(DAY3).replace(tzinfo=UTC)
    return int(day.timestamp() * 1000) + minute * 60_000 + 7  # off the simulator's grid


def _csv(columns: list[str], rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in columns})
    return out.getvalue().encode()


def _ticket(ticket_id: str, priority: str, minute: int, **more: str) -> dict:
    return {
        "ticket_id": ticket_id,
        "type": "incident",
        "status": "new",
        "priority": priority,
        "ci": VM,
        "title": f"quality test {ticket_id}",
        "opened_at": f"{DAY3}T{minute // 60:02d}:{minute % 60:02d}:00Z",
        "assignee_group": "云平台组",
        "sla_target_minutes": "240",
        **more,
    }


def _received(hour: int) -> datetime:
    return datetime.fromisoformat(f"{DAY3}T{hour:02d}:00:00+00:00")


def _delete_day(zone: LandingZone, source: str, dt: str) -> list[bytes]:
    """Remove a source's landed day (objects and manifest rows); returns what was there."""
    kept = []
    for batch in zone.batches(source, dt):
        kept.append(zone.read(batch))
        zone.lake.fs.delete_file(batch.path)
        zone.lake.fs.delete_file(zone._manifest_path(source, dt, batch.batch_id))
    assert not zone.batches(source, dt)
    return kept


def _corrupt_day3(settings: Settings, lake: Lake) -> None:
    zone = LandingZone.from_settings(settings, lake)
    # The extra exports come from the ITSM system's one export feed (the simulator's
    # connector), so a broken export is a table-wide problem, not one sender's among several.
    # 1. nulls and 3. duplicate keys: one export with an empty priority and a doubled row.
    rows = [
        _ticket("QTEST-0001", "", 540),
        _ticket("QTEST-0002", "P3", 541),
        _ticket("QTEST-0003", "P4", 542, type="request"),
        _ticket("QTEST-0004", "P2", 543, title="first copy"),
        _ticket("QTEST-0004", "P2", 543, title="second copy"),
    ]
    zone.write(
        "itsm",
        _csv(list(COLUMNS), rows),
        fmt="csv",
        batch_id=ITSM_BATCH,
        dt=DAY3,
        received_at=_received(12),
        connector=SIMULATOR,
    )
    # 5. a dropped column: an export without `priority` (the parser rejects it whole).
    dropped = [c for c in COLUMNS if c != "priority"]
    rows = [_ticket(f"QDROP-{i:04d}", "", 600 + i) for i in range(1, 13)]
    zone.write(
        "itsm",
        _csv(dropped, rows),
        fmt="csv",
        batch_id=ITSM_DROPPED,
        dt=DAY3,
        received_at=_received(13),
        connector=SIMULATOR,
    )
    # 2. out of range and 4. unknown entity: one scrape with a ratio of 7.5 and a ghost CI.
    series = f'node_cpu_utilisation_ratio{{entity_id="{VM}",job="quality-test"}}'
    lines = [f"{series} {value} {_ms(minute)}" for minute, value in GOOD_SAMPLES]
    lines.append(f"{series} 7.5 {_ms(604)}")
    lines.append(f'node_load1{{entity_id="{GHOST}",job="quality-test"}} 1.5 {_ms(605)}')
    zone.write(
        "prometheus",
        ("\n".join(lines) + "\n").encode(),
        fmt="prom",
        batch_id=PROM_BATCH,
        dt=DAY3,
        received_at=_received(11),
    )
    # 6. a late source: only the morning's probe results have arrived.
    morning = []
    for data in _delete_day(zone, "probes", DAY3):
        for line in data.decode().splitlines():
            try:
                if json.loads(line)["ts"] < f"{DAY3}T12:00":
                    morning.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # the simulator's malformed line
    assert len(morning) > 100
    zone.write(
        "probes",
        ("\n".join(morning) + "\n").encode(),
        fmt="json",
        batch_id=f"probes-{DAY3}-morning",
        dt=DAY3,
        received_at=_received(12),
    )
    # 7. a source gone silent: no syslog at all for the day.
    _delete_day(zone, "syslog", DAY3)


@pytest.fixture(scope="module")
def lake_after(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two clean days, then a corrupted third one; what each step left behind."""
    home = tmp_path_factory.mktemp("quality-lake")
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})
    lake = Lake.from_settings(settings)
    simulate(
        SimulationConfig(seed=21, entities=60, days=3, start=START, step_seconds=600),
        LandingZone.from_settings(settings, lake),
    )
    runner.materialize(settings, CLEAN)
    clean = read_results(lake, CLEAN)
    assert VM in set(
        lake.read_table("silver", "assets", dts=[CLEAN[-1]]).column("entity_id").to_pylist()
    )
    _corrupt_day3(settings, lake)
    with pytest.raises(runner.QualityBlocked) as blocked:
        runner.materialize(settings, [DAY3])
    return {"lake": lake, "clean": clean, "message": str(blocked.value)}


def _failed(lake: Lake, table: str, check: str) -> list[dict]:
    results = read_results(lake, [DAY3]).to_pylist()
    mine = [
        r for r in results if r["layer"] == "silver" and r["table"] == table and r["check"] == check
    ]
    assert mine, f"no result for silver.{table} {check} on {DAY3}"
    return [r for r in mine if not r["passed"]]


def _quarantined(lake: Lake, table: str, check: str) -> list[dict]:
    """Rows the quality check quarantined from a silver table on day 3."""
    rows = quarantine.read(lake, [DAY3]).to_pylist()
    return [
        {**json.loads(r["raw"]), "_reason": r["reason"]}
        for r in rows
        if r["reason"].startswith("quality check")
        and f"silver.{table}" in r["reason"]
        and check in r["reason"]
    ]


def _quality_events(lake: Lake) -> list[dict]:
    events = lake.read_table("silver", "events", dts=[DAY3]).to_pylist()
    return [
        {**e, "labels": dict(e["labels"] or [])}
        for e in events
        if e["source"] == alerts.EVENT_SOURCE
    ]


def _assert_quality_event(lake: Lake, table: str, check: str) -> None:
    named = [
        e
        for e in _quality_events(lake)
        if e["labels"].get("check") == check and e["labels"].get("table") == f"silver.{table}"
    ]
    assert named, f"no opslake-quality event for silver.{table} {check}"
    event = named[0]
    assert event["status"] == "firing"
    assert event["labels"]["alertname"] == alerts.ALERTNAME
    assert event["labels"]["day"] == DAY3
    assert f"silver.{table} {check}" in event["title"]
    assert f"silver.{table}" in event["description"]


def test_every_check_passes_on_clean_days(lake_after) -> None:
    clean = lake_after["clean"].to_pylist()
    assert {str(r["day"]) for r in clean} == set(CLEAN)
    assert {r["table"] for r in clean} >= {
        "metric_points",
        "events",
        "tickets",
        "logs",
        "probes",
        "assets",
        "relations",
    }
    failed = [
        (str(r["day"]), r["table"], r["check"], r["observed"]) for r in clean if not r["passed"]
    ]
    assert failed == []


def test_an_empty_priority_is_quarantined_and_the_rest_of_the_export_published(lake_after) -> None:
    lake = lake_after["lake"]
    assert _failed(lake, "tickets", "priority_present")
    rows = _quarantined(lake, "tickets", "priority_present")
    assert [r["ticket_id"] for r in rows] == ["QTEST-0001"]
    tickets = lake.read_table("silver", "tickets", dts=[DAY3]).to_pylist()
    ids = [t["ticket_id"] for t in tickets if t["batch_id"] == ITSM_BATCH]
    assert "QTEST-0001" not in ids
    assert {"QTEST-0002", "QTEST-0003", "QTEST-0004"} <= set(ids)
    _assert_quality_event(lake, "tickets", "priority_present")


def test_a_ratio_out_of_the_unit_interval_is_quarantined_and_good_samples_published(
    lake_after,
) -> None:
    lake = lake_after["lake"]
    assert _failed(lake, "metric_points", "ratio_in_unit_interval")
    rows = _quarantined(lake, "metric_points", "ratio_in_unit_interval")
    assert [(r["metric"], r["entity_id"], r["value"]) for r in rows] == [
        ("node_cpu_utilisation_ratio", VM, 7.5)
    ]
    points = [
        p
        for p in lake.read_table("silver", "metric_points", dts=[DAY3]).to_pylist()
        if p["batch_id"] == PROM_BATCH and p["entity_id"] != GHOST
    ]  # kept, flagged
    assert sorted(p["value"] for p in points) == [v for _, v in GOOD_SAMPLES]
    assert {p["entity_id"] for p in points} == {VM}
    _assert_quality_event(lake, "metric_points", "ratio_in_unit_interval")


def test_a_duplicated_ticket_row_is_published_once(lake_after) -> None:
    # The tickets transform keeps one row per ticket (the latest received, last line) before
    # the checks run, so a doubled export row never reaches the uniqueness check.
    lake = lake_after["lake"]
    tickets = lake.read_table("silver", "tickets", dts=[DAY3]).to_pylist()
    copies = [t for t in tickets if t["ticket_id"] == "QTEST-0004"]
    assert len(copies) == 1
    assert not _failed(lake, "tickets", "one_row_per_ticket_state")


def test_the_uniqueness_check_quarantines_exactly_the_later_copy() -> None:
    # What one_row_per_ticket_state does when duplicates do reach it (validated directly,
    # since no landed export can get them past the transform).
    suite = load_suites()["silver.tickets"]
    opened = datetime(2026, 3, 4, 9, tzinfo=UTC)
    rows = [
        {
            "ticket_id": "T-1",
            "type": "incident",
            "status": "new",
            "priority": "P2",
            "opened_at": opened,
            "sla_target_minutes": 240,
            "title": title,
        }
        for title in ("first copy", "other", "second copy")
    ]
    rows[1]["ticket_id"] = "T-2"
    table = pa.Table.from_pylist(
        rows, schema=pa.schema([schemas.TICKETS.field(n) for n in rows[0]])
    )
    validator = TableValidator(
        suite,
        schemas.TICKETS,
        Context(cmdb=None, history_rows=[], parse=[], end=datetime(2026, 3, 5, tzinfo=UTC)),
    )
    good = validator.chunk(table)
    assert good.column("title").to_pylist() == ["first copy", "other"]
    rejected = pa.concat_tables(validator.quarantined).to_pylist()
    assert [json.loads(r["raw"])["title"] for r in rejected] == ["second copy"]
    assert "one_row_per_ticket_state" in rejected[0]["reason"]
    result = next(r for r in validator.finish() if r.check == "one_row_per_ticket_state")
    assert not result.passed and result.unexpected_rows == 1


def test_an_entity_missing_from_the_cmdb_is_flagged_and_kept(lake_after) -> None:
    # A warning: a source may know a CI before the CMDB does, and unmapped data is kept.
    lake = lake_after["lake"]
    [failed] = _failed(lake, "metric_points", "entity_in_cmdb")
    assert failed["severity"] == "warning" and failed["unexpected_rows"] == 1
    assert not _quarantined(lake, "metric_points", "entity_in_cmdb")
    points = lake.read_table("silver", "metric_points", dts=[DAY3], columns=["entity_id"])
    assert GHOST in set(points.column("entity_id").to_pylist())
    _assert_quality_event(lake, "metric_points", "entity_in_cmdb")


def test_a_dropped_column_fails_the_parse_rate_and_blocks_ticket_gold(lake_after) -> None:
    lake = lake_after["lake"]
    failed = _failed(lake, "tickets", "lines_parse")
    # The per-sender row names the landing source and the sender the export came from; it
    # is that source's only sender, so the failure keeps its error severity and blocks.
    assert len(failed) == 1 and failed[0]["source"] == f"itsm/{SIMULATOR}"
    assert failed[0]["severity"] == "error"
    # The rejected export counts all its lines (header and 12 rows), not one reject.
    assert failed[0]["unexpected_rows"] >= 13
    rejected = [
        r for r in quarantine.read(lake, [DAY3]).to_pylist() if r["batch_id"] == ITSM_DROPPED
    ]
    assert len(rejected) == 1 and "priority" in rejected[0]["reason"]
    tickets = lake.read_table("silver", "tickets", dts=[DAY3], columns=["ticket_id"])
    assert not any(t.startswith("QDROP-") for t in tickets.column("ticket_id").to_pylist())
    assert "silver/tickets lines_parse" in lake_after["message"]
    assert not lake.exists(lake.table_path("gold", "service_levels", {"dt": DAY3}))
    assert lake.exists(lake.table_path("gold", "service_levels", {"dt": CLEAN[-1]}))
    assert lake.read_table("gold", "metric_rollup_1h", dts=[DAY3]).num_rows > 0
    _assert_quality_event(lake, "tickets", "lines_parse")


def test_a_late_source_fails_freshness(lake_after) -> None:
    lake = lake_after["lake"]
    assert _failed(lake, "probes", "fresh")
    assert "silver/probes fresh" in lake_after["message"]
    probes = lake.read_table("silver", "probes", dts=[DAY3], columns=["ts"])
    assert probes.num_rows > 0
    assert max(probes.column("ts").to_pylist()).hour < 12
    _assert_quality_event(lake, "probes", "fresh")


def test_a_silent_source_fails_the_volume_check(lake_after) -> None:
    lake = lake_after["lake"]
    failed = _failed(lake, "logs", "volume_vs_history")
    assert failed[0]["observed"] == "0 rows"
    assert "silver/logs volume_vs_history" in lake_after["message"]
    _assert_quality_event(lake, "logs", "volume_vs_history")


def test_the_blocked_message_names_only_table_checks(lake_after) -> None:
    message = lake_after["message"]
    for row_check in ("priority_present", "ratio_in_unit_interval", "entity_in_cmdb"):
        assert row_check not in message
    assert all(line.strip().startswith(DAY3) for line in message.splitlines()[1:-1])


def test_the_check_up_report_of_the_corrupted_day_renders_in_chromium(lake_after) -> None:
    """Must-show 2: the report of a simulated day, opened in real headless Chromium."""
    lake = lake_after["lake"]
    page = Path(lake.path("gold", "quality_report", f"dt={DAY3}", "report.html"))
    assert page.exists(), "quality_followup writes the day's report"
    html = page.read_text(encoding="utf-8")
    for table, check in (
        ("tickets", "lines_parse"),
        ("probes", "fresh"),
        ("logs", "volume_vs_history"),
        ("metric_points", "entity_in_cmdb"),
    ):
        assert check in html, (table, check)
    assert "7.5" in html  # a sample offending row is shown
    scores = lake.read_table("gold", "quality_scores", dts=[DAY3]).to_pylist()
    overall = next(r["score"] for r in scores if r["subject_kind"] == "overall")
    clean = lake.read_table("gold", "quality_scores", dts=["2026-03-03"]).to_pylist()
    assert overall < next(r["score"] for r in clean if r["subject_kind"] == "overall") == 100
    shot = chromium_screenshot(page, page.parent.parent.parent / "report-day3.png")
    assert shot.stat().st_size > 50_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "quality-report-demo-day.png")
