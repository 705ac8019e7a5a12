"""The lake on object storage: a real S3-compatible server (moto) on loopback."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.lake.warehouse import build_warehouse, open_read_only
from opslake.settings import Settings
from tests.integration.services import moto_s3


@pytest.fixture
def s3_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    with moto_s3(tmp_path / "moto.log") as endpoint:
        yield Settings.from_env(
            {
                "OPSLAKE_HOME": "s3://opslake/lake",
                "OPSLAKE_S3_ENDPOINT": endpoint,
                "OPSLAKE_STATE_DIR": str(tmp_path / "state"),
            }
        )


def test_landing_parquet_and_warehouse_on_s3(s3_settings: Settings) -> None:
    lake = Lake.from_settings(s3_settings)
    assert not lake.local
    zone = LandingZone(lake)
    batch = zone.write(
        "syslog",
        iter([b"<13>1 2026-03-02T00:00:00Z h a - - - x\n"]),
        fmt="log",
        received_at=datetime(2026, 3, 2, 1, tzinfo=UTC),
    )
    assert zone.batches("syslog", "2026-03-02") == [batch]
    assert zone.read(batch).startswith(b"<13>1")
    assert zone.write(
        "syslog",
        b"<13>1 2026-03-02T00:00:00Z h a - - - x\n",
        fmt="log",
        received_at=datetime(2026, 3, 2, 1, tzinfo=UTC),
    ).duplicate

    table = pa.table({"day": ["2026-03-02"], "score": [97.5]})
    lake.write_table(table, "gold", "entity_health", {"dt": "2026-03-02"})
    assert lake.read_table("gold", "entity_health").to_pylist() == [
        {"day": "2026-03-02", "score": 97.5}
    ]

    objects = build_warehouse(lake, s3_settings.warehouse_path)
    # lake_inventory: the landed syslog batch and the gold partition, read over S3.
    assert [(o.name, o.rows) for o in objects] == [("entity_health", 1), ("lake_inventory", 2)]
    con = open_read_only(s3_settings.warehouse_path)
    assert con.execute("SELECT score FROM entity_health").fetchone() == (97.5,)
    assert con.execute(
        'SELECT layer, "table", files FROM lake_inventory ORDER BY layer'
    ).fetchall() == [("gold", "entity_health", 1), ("landing", "syslog", 1)]
    con.close()
