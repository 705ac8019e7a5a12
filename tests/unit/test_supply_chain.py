"""The supply chain, offline: every lock installs on x86_64 and aarch64 Linux (against the
checked-in record of PyPI's files), the ignore file's rules, the SBOM's hashes, the licences
of what is installed, and the Debian pins (docs/supply-chain.md)."""

from __future__ import annotations

import subprocess
from datetime import date
from importlib.metadata import distribution
from pathlib import Path

import pytest

from infra.supply_chain import audit, licences, locks, sbom

ROOT = Path(__file__).resolve().parents[2]


def test_every_lock_is_universal_and_hash_pinned() -> None:
    pins = locks.all_pins()
    assert set(pins) == set(locks.LOCKS)
    for path, lock in pins.items():
        assert lock, f"{path} pins nothing"
        assert "--universal" in path.read_text().splitlines()[1], f"{path} is not universal"
        assert all(pin.hashes for pin in lock)


def test_every_pin_installs_on_x86_64_and_aarch64_linux() -> None:
    problems = locks.check(locks.all_pins(), locks.load_record())
    assert problems == [], "\n".join(problems)


def test_the_check_finds_a_pin_with_no_aarch64_wheel() -> None:
    pin = locks.Pin("native", "1.0", None, frozenset({"a", "b"}))
    only_x86 = {"native==1.0": {"a": "native-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"}}
    problems = locks.check({ROOT / "x.lock": [pin]}, only_x86, exceptions={})
    assert problems == ["x.lock: native==1.0 has no file for aarch64-manylinux_2_28"]
    # A wheel needing a newer glibc than the platforms' 2.28 does not count either.
    too_new = {"native==1.0": {"b": "native-1.0-cp311-cp311-manylinux_2_34_aarch64.whl"}}
    assert len(locks.check({ROOT / "x.lock": [pin]}, too_new, exceptions={})) == 2
    sdist = {"native==1.0": {"a": "native-1.0.tar.gz"}}
    assert "no wheel for aarch64" in locks.check({ROOT / "x.lock": [pin]}, sdist, exceptions={})[1]
    assert locks.check({ROOT / "x.lock": [pin]}, sdist, exceptions={"native": "pure"}) == []
    assert "run `make lock-wheels`" in locks.check({ROOT / "x.lock": [pin]}, {}, exceptions={})[0]


def test_a_windows_only_pin_is_not_required_on_linux() -> None:
    pins = {p.name: p for p in locks.read_lock(ROOT / "requirements.lock")}
    assert not any(pins["colorama"].applies(platform) for platform in locks.PLATFORMS)
    assert all(pins["numpy"].applies(platform) for platform in locks.PLATFORMS)


def _ignore(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "audit-ignore.toml"
    path.write_text(body)
    return path


def test_an_expired_or_unexplained_ignore_entry_fails_the_audit(tmp_path: Path) -> None:
    entry = '[[vulnerability]]\nid = "GHSA-1"\npackage = "x"\nreason = "not reached"\n'
    ok = audit.read_ignore_file(
        _ignore(tmp_path, entry + "expires = 2027-01-31\n"), date(2027, 1, 31)
    )
    assert ok.vulnerabilities[0].id == "GHSA-1"
    with pytest.raises(audit.AuditError, match="expired on 2027-01-31"):
        audit.read_ignore_file(
            _ignore(tmp_path, entry + "expires = 2027-01-31\n"), date(2027, 2, 1)
        )
    with pytest.raises(audit.AuditError, match="lacks expires"):
        audit.read_ignore_file(_ignore(tmp_path, entry), date(2027, 1, 1))
    # The checked-in file itself is valid today.
    audit.read_ignore_file()


def test_a_known_vulnerability_fails_unless_ignored(tmp_path: Path) -> None:
    report = {
        "dependencies": [
            {"name": "x", "version": "1", "vulns": [{"id": "PYSEC-9", "aliases": ["GHSA-1"], "fix_versions": ["2"]}]},
            {"name": "y", "version": "1", "vulns": [{"id": "GHSA-2", "aliases": [], "fix_versions": []}]},
            {"name": "Z_z", "skip_reason": "Dependency not found on PyPI and could not be audited: Z_z (3)"},
        ]
    }  # fmt: skip
    ignore = audit.read_ignore_file(
        _ignore(
            tmp_path,
            '[[vulnerability]]\nid = "GHSA-1"\npackage = "x"\nreason = "r"\nexpires = 2099-01-01\n',
        )
    )
    findings = audit.Findings()
    audit.classify(report, "a.lock", {"z-z": "3"}, ignore, findings)
    assert findings.audited == 2 and findings.unaudited == [("a.lock", "z-z", "3")]
    assert findings.ignored == ["a.lock: x==1 PYSEC-9 (fixed in 2): ignored until 2099-01-01: r"]
    failures = findings.failures(ignore)
    assert failures[0] == "known vulnerability: a.lock: y==1 GHSA-2 (fixed in no release)"
    assert "1 pins could not be audited" in failures[1] and "z-z==3" in failures[1]
    assert audit.Findings(unaudited=[("a", "z", "3")]).failures(audit.read_ignore_file()) == []


def test_a_pin_at_its_latest_release_is_audited_from_the_project_json(tmp_path: Path) -> None:
    ignore = audit.read_ignore_file(_ignore(tmp_path, ""))
    findings = audit.Findings(unaudited=[("a.lock", "new", "2"), ("a.lock", "old", "1")])
    projects = {
        "new": {
            "info": {"version": "2"},
            "vulnerabilities": [
                {"id": "GHSA-3", "aliases": ["CVE-1"], "fixed_in": ["2.1"], "withdrawn": None},
                {"id": "GHSA-4", "aliases": [], "fixed_in": [], "withdrawn": "2026-01-01"},
            ],
        },
        "old": {"info": {"version": "5"}, "vulnerabilities": []},
    }
    audit.latest_release_records(findings, ignore, projects.__getitem__)
    assert findings.audited == 1
    assert findings.vulnerabilities == ["a.lock: new==2 GHSA-3 (fixed in 2.1)"]
    assert findings.unaudited == [("a.lock", "old", "1")]  # an older release: no record of it


def test_the_audit_fails_at_once_when_pypi_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "PROBE_URL", "http://127.0.0.1:9/pypi/pip/json")  # discard: closed
    with pytest.raises(audit.AuditError, match="PyPI did not answer"):
        audit.probe(timeout_s=2)


def test_the_sbom_hash_is_the_locked_wheel_this_venv_installed() -> None:
    record = locks.load_record()
    dist = distribution("numpy")
    sha, name = sbom.installed_file(dist, record)
    assert name.startswith(f"numpy-{dist.version}-cp311-cp311-manylinux") and name.endswith(
        ("_x86_64.whl", "_aarch64.whl")
    )
    numpy_pin = next(p for p in locks.read_lock(ROOT / "requirements.lock") if p.name == "numpy")
    assert sha in numpy_pin.hashes
    bom = {
        "components": [
            {"name": "numpy", "version": dist.version},
            {"name": "no-such-dist", "version": "0"},
        ]
    }
    assert sbom.add_hashes(bom, record) == ["no-such-dist==0"]
    assert bom["components"][0]["hashes"] == [{"alg": "SHA-256", "content": sha}]


def test_every_installed_licence_is_allowed() -> None:
    allow = licences.AllowList.load()
    found = licences.installed(allow)
    assert len(found) > 150  # the whole venv, not a part of it
    problems = licences.check(found, allow)
    assert problems == [], "\n".join(problems)


def test_a_copyleft_licence_is_refused_and_a_choice_is_read_as_one() -> None:
    allow = licences.AllowList.load()
    assert not allow.permits("GPL-3.0-only")
    assert not allow.permits("MIT AND GPL-2.0-or-later")
    assert allow.permits("EPL-2.0 OR BSD-3-Clause")
    assert allow.permits("(Apache-2.0 OR MIT) AND BSD-3-Clause")


def test_every_debian_package_the_scripts_install_is_pinned() -> None:
    out = subprocess.run(
        ["bash", "infra/install-services.sh", "--check-pins"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pins = dict(
        line.split()[:2]
        for line in (ROOT / "infra/debian-packages.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert sorted(out) == sorted(f"{name}={version}" for name, version in pins.items())
    assert {"chromium", "postgresql", "prometheus"} <= set(pins)
    # No other script installs a Debian package past the pins.
    for script in (ROOT / "infra").rglob("*.sh"):
        if script.name != "install-services.sh":
            assert "apt-get install" not in script.read_text(), script
