"""Backup and restore (S6.10d) of an installation built on the session's simulated estate.

A copy of the estate's home gets a user with an API key, an SM4-sealed contact and audited
API requests; `opslake backup create` archives it, `opslake backup restore` brings it back
into an empty home, and the restored platform answers the same query with the same key,
opens the sealed value and the SM4-encrypted CMDB/ITSM landing batches, and verifies its
audit log. Damaged archives are refused by
`opslake backup verify`, a non-empty target by restore, and the scheduled job keeps N.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from opslake.api.app import create_app
from opslake.assets.resources import LakeResource
from opslake.lake.landing import LandingZone
from opslake.lake.storage import Lake
from opslake.lake.warehouse import build_warehouse, open_read_only
from opslake.orchestration.backup import backup_job
from opslake.security import backup
from opslake.security.backup import MANIFEST
from opslake.security.crypto import FieldCipher
from opslake.security.identity import IdentityStore
from opslake.settings import Settings

PASSPHRASE = "seven wet otters audit the lake"
PASSWORD = "Correct-Horse-42-Battery"
CONTACT = ("owner_contact", "王工 13800138000")


@dataclass
class Installation:
    settings: Settings
    key: str
    query: str
    answer: dict
    sealed: str
    archive: Path


def _opslake(
    *args: str, home: Path | str, passphrase: str | None = PASSPHRASE
) -> subprocess.CompletedProcess:
    env = {"OPSLAKE_HOME": str(home), "PATH": "/usr/bin:/bin"}
    if passphrase is not None:
        env["OPSLAKE_BACKUP_PASSPHRASE"] = passphrase
    return subprocess.run(
        [sys.executable, "-m", "opslake", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ask(settings: Settings, key: str, query: str) -> dict:
    with TestClient(create_app(settings)) as client:
        response = client.get(query, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def installation(estate, tmp_path_factory: pytest.TempPathFactory) -> Installation:
    """The estate's home copied (the session's stays untouched), used, then backed up."""
    work = tmp_path_factory.mktemp("backup")
    home = work / "source"
    shutil.copytree(estate[0].home, home)
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})
    store = IdentityStore.sealed(settings)
    store.add_user("alice", "ops_engineer", PASSWORD)
    _, key = store.create_key("alice")
    con = open_read_only(settings.warehouse_path)
    (metric,) = con.execute(
        "SELECT metric_id FROM metric_values WHERE scope = 'business' AND "
        "grain = '1h' ORDER BY metric_id LIMIT 1"
    ).fetchone()
    con.close()
    query = (
        f"/v1/metrics/{metric}/data?start=2026-03-02T00:00:00Z"
        f"&end=2026-03-04T00:00:00Z&step=1h&by=business"
    )
    answer = _ask(settings, key, query)  # audited: the restored log has entries to verify
    assert answer["count"] > 0
    sealed = FieldCipher.from_settings(settings, {}).encrypt(CONTACT[1], CONTACT[0])
    archive = work / "opslake.tar.gz"
    made = _opslake("backup", "create", "--output", str(archive), home=home)
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["lake"] == "files"
    return Installation(settings, key, query, answer, sealed, archive)


def test_a_restored_home_answers_the_same_query_opens_sealed_values_and_verifies_its_audit(
    installation: Installation, tmp_path: Path
) -> None:
    target = tmp_path / "restored"
    done = _opslake(
        "backup",
        "restore",
        str(installation.archive),
        "--home",
        str(target),
        home=tmp_path / "unused",
    )
    assert done.returncode == 0, done.stderr
    assert "opslake warehouse build" in done.stdout and "opslake audit verify" in done.stdout
    for key in ("data.key", "audit.key"):
        assert (target / "keys" / key).stat().st_mode & 0o777 == 0o600
    # Keys are never in the archive in clear: only sealed inside the manifest.
    with tarfile.open(installation.archive) as tar:
        names = tar.getnames()
        text = tar.extractfile(MANIFEST).read().decode()
    assert names[0] == MANIFEST and not any("keys/" in name for name in names)
    assert (target / "keys" / "data.key").read_text().strip() not in text
    assert not (target / "warehouse.duckdb").exists()

    restored = Settings.from_env({"OPSLAKE_HOME": str(target)})
    build_warehouse(Lake.from_settings(restored), restored.warehouse_path)
    assert _ask(restored, installation.key, installation.query) == installation.answer
    cipher = FieldCipher.from_settings(restored, {})
    assert cipher.decrypt(installation.sealed, CONTACT[0]) == CONTACT[1]
    zone = LandingZone.from_settings(restored)  # its key is the restored data.key
    sealed = [b for s in ("cmdb", "itsm") for d in zone.days(s) for b in zone.batches(s, d)]
    assert sealed and all(b.encryption == "sm4-gcm" for b in sealed)
    opened = [zone.read(b) for b in sealed]  # checked against the plaintext checksum
    assert any(b"owner_contact" in data for data in opened)
    audit = _opslake("audit", "verify", home=target)
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout)["entries"] >= 1


def _rewrite(archive: Path, out: Path, edit) -> Path:
    """A copy of ``archive`` with each member's bytes passed through ``edit(name, data)``."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for member in src:
            data = edit(member.name, src.extractfile(member).read())
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


def test_verify_names_a_changed_entry_a_wrong_passphrase_and_an_edited_manifest(
    installation: Installation, tmp_path: Path
) -> None:
    archive = installation.archive
    good = _opslake("backup", "verify", str(archive), home=tmp_path)
    assert good.returncode == 0, good.stderr
    assert sorted(json.loads(good.stdout)["keys"]) == ["audit.key", "data.key"]

    victim = "state/security.db"
    flipped = _rewrite(
        archive,
        tmp_path / "flipped.tar.gz",
        lambda name, data: (
            data if name != victim else data[:100] + bytes([data[100] ^ 1]) + data[101:]
        ),
    )
    bad = _opslake("backup", "verify", str(flipped), home=tmp_path)
    assert bad.returncode == 1 and f"{victim} does not match its sha256" in bad.stderr

    wrong = _opslake(
        "backup", "verify", str(archive), home=tmp_path, passphrase="not the passphrase at all"
    )
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr

    def edit_manifest(name: str, data: bytes) -> bytes:
        if name != MANIFEST:
            return data
        manifest = json.loads(data)
        manifest["source"]["home"] = "/somewhere/else"
        return json.dumps(manifest).encode()

    edited = _rewrite(archive, tmp_path / "edited.tar.gz", edit_manifest)
    bad = _opslake("backup", "verify", str(edited), home=tmp_path)
    assert bad.returncode == 1 and "backup.json" in bad.stderr and "was edited" in bad.stderr

    unset = _opslake("backup", "verify", str(archive), home=tmp_path, passphrase=None)
    assert unset.returncode == 1 and "OPSLAKE_BACKUP_PASSPHRASE" in unset.stderr


def test_restore_refuses_a_non_empty_target(installation: Installation, tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    refused = _opslake(
        "backup", "restore", str(installation.archive), "--home", str(tmp_path), home=tmp_path
    )
    assert refused.returncode == 1 and "is not empty" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_the_scheduled_job_keeps_the_newest_n_and_never_writes_unsealed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A small installation of its own: only the retention is under test here.
    home = tmp_path / "home"
    settings = Settings.from_env({"OPSLAKE_HOME": str(home)})
    IdentityStore.sealed(settings).add_user("alice", "ops_engineer", PASSWORD)
    backups = settings.backups_dir
    backups.mkdir()
    older = [backups / f"opslake-2026010{day}T020000Z.tar.gz" for day in range(1, 5)]
    for path in older:
        path.write_bytes(b"an older backup")
    resources = {"lake": LakeResource(home=str(home))}
    monkeypatch.delenv("OPSLAKE_BACKUP_PASSPHRASE", raising=False)
    unset = backup_job.execute_in_process(resources=resources, raise_on_error=False)
    assert not unset.success
    assert "OPSLAKE_BACKUP_PASSPHRASE is not set" in str(unset.all_events)
    assert sorted(backups.glob("*.tar.gz")) == older

    monkeypatch.setenv("OPSLAKE_BACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("OPSLAKE_BACKUP_KEEP", "3")
    assert backup_job.execute_in_process(resources=resources).success
    kept = sorted(backups.glob("*.tar.gz"))
    assert kept[:2] == older[-2:] and len(kept) == 3
    newest = kept[-1]
    assert newest.name.startswith(f"opslake-{datetime.now(UTC):%Y%m%d}T")
    assert newest.stat().st_mode & 0o777 == 0o600
    with tarfile.open(newest) as tar:
        assert "state/security.db" in tar.getnames()


def test_a_manifest_only_backup_records_the_lake_and_verify_finds_it_changed(
    tmp_path: Path,
) -> None:
    # The lake apart from the state (as on S3): only its manifest goes into the archive.
    lake_home, state = tmp_path / "lake", tmp_path / "state"
    settings = Settings.from_env({"OPSLAKE_HOME": str(lake_home), "OPSLAKE_STATE_DIR": str(state)})
    lake = Lake.from_settings(settings)
    for name in ("gold/a/dt=2026-03-02/part-0.parquet", "gold/b/dt=2026-03-02/part-0.parquet"):
        lake.put_atomic(lake.path(name), [name.encode()])
    IdentityStore.sealed(settings).add_user("alice", "ops_engineer", PASSWORD)
    archive = tmp_path / "manifest.tar.gz"
    made = backup.create(settings, archive, PASSPHRASE, lake_mode="manifest", environ={})
    assert (made.lake, made.lake_objects) == ("manifest", 2)
    manifest = backup.verify(archive, PASSPHRASE).manifest
    assert all(e["path"].startswith("state/") for e in manifest["entries"])
    assert backup.check_lake(manifest, lake) == []

    (lake_home / "gold/a/dt=2026-03-02/part-0.parquet").write_bytes(b"rewritten")
    (lake_home / "gold/b/dt=2026-03-02/part-0.parquet").unlink()
    changed = _opslake("backup", "verify", str(archive), home=tmp_path / "unused")
    assert changed.returncode == 1
    assert "gold/a/dt=2026-03-02/part-0.parquet changed" in changed.stderr
    assert "gold/b/dt=2026-03-02/part-0.parquet is missing" in changed.stderr

    restored = backup.restore(archive, tmp_path / "restored", PASSPHRASE)
    assert (restored.home / "security.db").is_file() and not (restored.home / "gold").exists()


def test_a_backup_of_an_installation_on_a_database_says_the_stores_are_not_in_it(
    tmp_path: Path,
) -> None:
    settings = Settings.from_env(
        {
            "OPSLAKE_HOME": str(tmp_path / "home"),
            "OPSLAKE_DATABASE_URL": "postgresql://opslake:s3cret-pw@db.example:5432/opslake",
        }
    )
    made = backup.create(settings, tmp_path / "b.tar", PASSPHRASE)
    source = backup.verify(made.path, PASSPHRASE).manifest["source"]
    assert source["database"] == "postgresql://opslake:***@db.example:5432/opslake"
    assert made.warning and "pg_dump" in made.warning and "s3cret" not in made.warning
    assert "db.example" in made.warning
    plain = backup.create(
        Settings.from_env({"OPSLAKE_HOME": str(tmp_path / "home")}), tmp_path / "p.tar", PASSPHRASE
    )
    assert plain.warning is None
