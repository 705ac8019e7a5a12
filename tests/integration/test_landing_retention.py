"""Through the real pipeline: CMDB and ITSM land encrypted, silver is built, landing past the
retention is purged by the daily job (audited), and re-materializing the purged days gives
the same silver."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from opslake.assets.resources import LakeResource
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.orchestration import runner
from opslake.orchestration.retention import ACTION, landing_purge_job
from opslake.security.audit import AuditLog
from opslake.settings import Settings
from opslake.simulate import SimulationConfig, simulate

DAYS = ["2026-03-02", "2026-03-03"]
CONFIG = SimulationConfig(seed=5, entities=30, days=2, start=date(2026, 3, 2), step_seconds=3600)
SELECT = [
    "landing/cmdb",
    "bronze/cmdb_cis",
    "bronze/cmdb_relations",
    "silver/assets",
    "silver/relations",
    "landing/itsm",
    "bronze/itsm_tickets",
    "silver/tickets",
]
SENSITIVE = ("cmdb", "itsm")


def _files(lake: Lake, *tables: tuple[str, str]) -> dict[str, bytes]:
    """Every Parquet file of the given (layer, table)s, by path under the lake."""
    root = Path(lake.root)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for layer, table in tables
        for p in sorted((root / layer / table).rglob("*.parquet"))
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, LandingZone]:
    home = tmp_path_factory.mktemp("retention")
    settings = Settings.from_env(
        {"OPSLAKE_HOME": str(home), "OPSLAKE_LANDING_RETENTION_DAYS": "30"}
    )
    zone = LandingZone.from_settings(settings)
    simulate(CONFIG, zone)
    runner.materialize(settings, DAYS, SELECT)
    return settings, zone


def test_sensitive_sources_land_encrypted(built: tuple[Settings, LandingZone]) -> None:
    _, zone = built
    contacts = set()
    for source in SENSITIVE:
        for dt in DAYS:
            [batch] = zone.batches(source, dt)
            assert batch.encryption == "sm4-gcm"
            raw = Path(batch.path).read_bytes()
            data = zone.read(batch)
            assert data[:40] not in raw
            if source == "cmdb":
                contacts |= {
                    ci["owner_contact"] for ci in json.loads(data)["cis"] if ci.get("owner_contact")
                }
                assert not any(c.encode() in raw for c in contacts)
    assert contacts


def test_purge_then_rematerialize_gives_the_same_silver(
    built: tuple[Settings, LandingZone], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, zone = built
    lake = zone.lake
    tables = [
        ("silver", "assets"),
        ("silver", "relations"),
        ("silver", "tickets"),
        ("bronze", "cmdb_cis"),
        ("bronze", "cmdb_relations"),
        ("bronze", "itsm_tickets"),
        ("bronze", "quarantine"),
    ]
    before = _files(lake, *tables)
    assert any(k.startswith("silver/assets/") for k in before)

    dry = subprocess.run(
        [sys.executable, "-m", "opslake", "landing", "purge", "--dry-run"],
        env={
            "OPSLAKE_HOME": settings.home,
            "PATH": "/usr/bin:/bin",
            "OPSLAKE_LANDING_RETENTION_DAYS": "30",
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert "would purge 4 batch(es)" in dry.stdout
    # Sources whose silver was never built here keep their landing.
    assert "kept prometheus 2026-03-02 prom-2026-03-02T00: not in bronze/" in dry.stdout
    assert all(zone.batches(s, d) for s in SENSITIVE for d in DAYS)  # a dry run changes nothing

    monkeypatch.setenv("OPSLAKE_LANDING_RETENTION_DAYS", "30")
    lake_resource = LakeResource(home=settings.home, state_dir=str(settings.state_dir))
    assert landing_purge_job.execute_in_process(resources={"lake": lake_resource}).success
    for source in SENSITIVE:
        for dt in DAYS:
            assert zone.batches(source, dt) == []
            [tomb] = zone.batches(source, dt, purged=True)
            assert tomb.purged_at and not Path(tomb.path).exists()
    [entry] = [e for e in AuditLog.from_settings(settings).read() if e["action"] == ACTION]
    assert (entry["who"], entry["params"]["purged"], entry["rows"]) == ("dagster", 4, 4)

    runner.materialize(settings, DAYS, SELECT)  # the purged days again: bronze is kept
    assert _files(lake, *tables) == before

    simulate(CONFIG, zone)  # every batch delivered again: recognised, not landed twice
    for source in SENSITIVE:
        for dt in DAYS:
            assert zone.batches(source, dt) == []
