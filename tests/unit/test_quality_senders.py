"""Parse rate and volume judged per sender: one bad sender warns, a table-wide failure blocks."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import dagster as dg
import pyarrow as pa

from opslake.api import rejects
from opslake.assets.keys import check_results
from opslake.ingest.parsers import Reject
from opslake.lake import quarantine
from opslake.lake.landing import LandedBatch, LandingZone, sender_of
from opslake.lake.schemas import QUARANTINE
from opslake.lake.storage import Lake
from opslake.quality import alerts
from opslake.quality.partition import delivered_rows, rejected_lines
from opslake.quality.results import CheckResult
from opslake.quality.suites import Check, Suite
from opslake.quality.validate import Context, SenderLines, TableValidator

DT = "2026-03-04"
END = datetime(2026, 3, 5, tzinfo=UTC)
PARSE = Check("lines_parse", "parse_rate", max_rejected_ratio=0.02)
VOLUME = Check("volume_vs_history", "volume", min_ratio=0.5, max_ratio=3.0)


def _judge(
    check: Check, senders: list[SenderLines], history_rows: list[int] | None = None, rows: int = 0
) -> list[CheckResult]:
    validator = TableValidator(
        Suite("silver", "events", None, (check,)),
        pa.schema([]),
        Context(cmdb=None, history_rows=history_rows or [], parse=senders, end=END),
    )
    validator.rows = rows
    return validator.finish()


def _by_source(results: list[CheckResult]) -> dict[str | None, CheckResult]:
    return {r.source: r for r in results}


def test_one_bad_sender_among_good_ones_warns_on_that_sender_only() -> None:
    results = _by_source(
        _judge(
            PARSE,
            [
                SenderLines("alertmanager", "key-good", 0, 800),
                SenderLines("alertmanager", "key-bad", 40, 0),
                SenderLines("webhook", "alert-webhook/zabbix", 1, 300),
            ],
        )
    )
    bad = results["alertmanager/key-bad"]
    assert not bad.passed and bad.severity == "warning" and not bad.blocking
    assert bad.unexpected_rows == 40 and bad.observed.startswith("40 of 40 lines")
    assert all(
        r.passed and r.severity == "error"
        for s, r in results.items()
        if s != "alertmanager/key-bad"
    )
    [dagster] = check_results(list(results.values()))
    assert not dagster.passed and dagster.severity == dg.AssetCheckSeverity.WARN
    assert "alertmanager/key-bad: 40 of 40" in dagster.metadata["observed"].value


def test_every_sender_failing_is_an_error_that_blocks() -> None:
    results = _judge(
        PARSE,
        [
            SenderLines("itsm", "file-drop/1", 13, 5),
            SenderLines("itsm", "opslake-simulator", 30, 100),
        ],
    )
    assert [r.passed for r in results] == [False, False]
    assert all(r.severity == "error" and r.blocking for r in results)
    [dagster] = check_results(results)
    assert dagster.severity == dg.AssetCheckSeverity.ERROR


def test_allowed_lines_are_forgiven_per_sender() -> None:
    # Each sender's 5 bad lines are forgiven, although the two together exceed 5.
    results = _judge(
        PARSE,
        [
            SenderLines("syslog", "a", 5, 10),
            SenderLines("syslog", "b", 5, 10),
            SenderLines("syslog", "c", 6, 10),
        ],
    )
    assert [(r.source, r.passed) for r in results] == [
        ("syslog/a", True),
        ("syslog/b", True),
        ("syslog/c", False),
    ]
    assert results[2].severity == "warning"


def test_a_silent_steady_sender_warns_while_the_table_volume_holds() -> None:
    senders = [
        SenderLines("prometheus", "key-a", 0, 1000, (900, 1000)),
        SenderLines("prometheus", "key-b", 0, 0, (100, 120)),  # silent today
        SenderLines("prometheus", "key-new", 0, 50, (0, 0)),  # new: not judged
        SenderLines("prometheus", "key-odd", 0, 0, (0, 70)),
    ]  # occasional: not judged
    results = _by_source(_judge(VOLUME, senders, history_rows=[1000, 1120], rows=1050))
    assert set(results) == {None, "prometheus/key-a", "prometheus/key-b"}
    assert results[None].passed and results["prometheus/key-a"].passed
    silent = results["prometheus/key-b"]
    assert not silent.passed and silent.severity == "warning" and not silent.blocking
    assert silent.observed == "0 rows" and "mean 110 of this sender" in silent.threshold
    # The table as a whole falling short keeps the check's own severity for the sender too.
    results = _by_source(_judge(VOLUME, senders, history_rows=[1000, 1120], rows=100))
    assert not results[None].passed and results[None].blocking
    assert results["prometheus/key-b"].severity == "error"


def _batch(landing: LandingZone, batch_id: str, lines: int, **who: str) -> LandedBatch:
    body = "".join(f"line {i}\n" for i in range(lines)).encode()
    return landing.write("itsm", body, fmt="csv", batch_id=batch_id, dt=DT, **who)


def test_lines_and_rows_are_counted_per_sender(lake: Lake, landing: LandingZone) -> None:
    good = _batch(landing, "good", 3, connector="file-drop/1")
    pushed = _batch(landing, "pushed", 4, connector="api", sender="k-1")
    whole = _batch(landing, "whole", 12, connector="file-drop/1", sender="")
    assert (sender_of(good), sender_of(pushed)) == ("file-drop/1", "k-1")
    # Bronze as the bronze asset writes it: one file per landed batch, named by its id.
    lake.write_parts(
        "bronze",
        "itsm_tickets",
        {"dt": DT},
        [(b.batch_id, pa.table({"n": list(range(k))})) for b, k in ((good, 3), (pushed, 2))],
        pa.schema([("n", pa.int64())]),
    )
    rows = [
        quarantine.rejects_table(pushed, [Reject(1, "x", "bad"), Reject(3, "y", "bad")]),
        quarantine.rejects_table(whole, [Reject(0, "", "header lacks priority")]),
    ]
    quarantine.write(lake, "itsm_tickets", DT, rows)
    received = datetime.fromisoformat(f"{DT}T10:00:00+00:00")
    rejects.append_push_reject(lake, "itsm", b"{}", "HTTP 422", received, sender="k-2")
    rejects.append_push_reject(lake, "other", b"{}", "HTTP 422", received, sender="k-2")
    manifest = landing.batches("itsm", DT)
    assert delivered_rows(lake, "itsm_tickets", DT, manifest) == {"file-drop/1": 3, "k-1": 2}
    # The whole-batch reject counts its 12 lines; each refused push one line.
    assert rejected_lines(landing, "itsm_tickets", "itsm", DT, manifest) == {
        "k-1": 2,
        "file-drop/1": 12,
        "k-2": 1,
    }


def test_quarantine_files_without_a_sender_still_read(lake: Lake, landing: LandingZone) -> None:
    batch = _batch(landing, "old", 2, sender="k-9")
    old = QUARANTINE.remove(QUARANTINE.get_field_index("sender"))
    table = pa.table(
        {
            "source": ["itsm"],
            "batch_id": ["old"],
            "line_no": [1],
            "raw": ["x"],
            "reason": ["bad"],
            "received_at": pa.array([batch.received], old.field("received_at").type),
        },
        schema=old,
    )
    lake.write_table(table, "bronze", quarantine.TABLE, {"dt": DT, "table": "itsm_tickets"})
    assert quarantine.read(lake, [DT]).column("sender").to_pylist() == [None]
    assert rejected_lines(landing, "itsm_tickets", "itsm", DT, landing.batches("itsm", DT)) == {
        "k-9": 1
    }


def test_a_manifest_written_before_senders_loads_as_its_connector(landing: LandingZone) -> None:
    batch = landing.write("itsm", b"a\n", fmt="csv", dt=DT, connector="file-drop/1")
    path = landing._manifest_path("itsm", DT, batch.batch_id)
    row = json.loads(landing.lake.read_bytes(path))
    del row["sender"]
    landing.lake.put_atomic(path, [json.dumps(row).encode()])
    [old] = landing.batches("itsm", DT)
    assert old.sender == "" and sender_of(old) == "file-drop/1"


def test_the_quality_alert_names_the_failing_sender(lake: Lake, landing: LandingZone) -> None:
    results = _judge(
        PARSE,
        [
            SenderLines("alertmanager", "key-good", 0, 800),
            SenderLines("alertmanager", "4f1c2a9e0b7d3c55", 12, 0),
        ],
    )
    batch = alerts.land_quality_alerts(lake, results, date.fromisoformat(DT), END)
    [alert] = json.loads(landing.read(batch))["alerts"]
    assert alert["labels"]["source"] == "alertmanager/4f1c2a9e0b7d3c55"
    assert alert["labels"]["severity"] == "warning"
    assert "alertmanager/4f1c2a9e0b7d3c55 (12 of 12 lines" in alert["annotations"]["description"]
    assert "key-good" not in json.dumps(alert)
