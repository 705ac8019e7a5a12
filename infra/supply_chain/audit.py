"""``pip-audit`` over every lock, against PyPI's vulnerability records, with an ignore file.

A known vulnerability fails the audit unless ``audit-ignore.toml`` lists it with a reason and
an expiry date; an expired entry fails it too. PyPI unreachable fails it at once (one probe,
then each request bounded by ``--timeout``) rather than hanging the test run.

pip-audit reads PyPI's per-release JSON; where PyPI gives none (this project's machines reach
a PyPI without it), a pin that is its project's latest release is audited from the project's
JSON instead, whose ``vulnerabilities`` are the latest release's; any other pin stays
unaudited, which fails the audit unless ``[unaudited]`` accepts it (reason, expiry).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
from packaging.utils import canonicalize_name

from infra.supply_chain.locks import LOCKS, ROOT, read_lock

IGNORE_FILE = Path(__file__).resolve().parent / "audit-ignore.toml"
PROBE_URL = "https://pypi.org/pypi/pip/json"
PROJECT_JSON = "https://pypi.org/pypi/{name}/json"


class AuditError(Exception):
    """The audit could not run, or its ignore file is wrong."""


@dataclass(frozen=True)
class Ignored:
    """A known vulnerability accepted until ``expires``, for ``reason``."""

    id: str
    package: str
    reason: str
    expires: date


@dataclass(frozen=True)
class IgnoreFile:
    """``audit-ignore.toml``: accepted vulnerabilities, and packages PyPI has no record of."""

    vulnerabilities: tuple[Ignored, ...]
    #: Why packages PyPI answers nothing for may pass unaudited, and until when; None: they fail.
    unaudited: Ignored | None


def _entry(raw: dict, where: str, today: date, *, needs_id: bool = True) -> Ignored:
    missing = [
        k for k in (("id", "package") if needs_id else ()) + ("reason", "expires") if not raw.get(k)
    ]
    if missing:
        raise AuditError(f"{IGNORE_FILE.name}: {where} lacks {', '.join(missing)}")
    if not isinstance(raw["expires"], date):
        raise AuditError(
            f"{IGNORE_FILE.name}: {where} expires = {raw['expires']!r} is not a date (YYYY-MM-DD)"
        )
    entry = Ignored(raw.get("id", ""), raw.get("package", ""), raw["reason"], raw["expires"])
    if entry.expires < today:
        raise AuditError(
            f"{IGNORE_FILE.name}: {where} expired on {entry.expires} ({entry.reason}); "
            "upgrade the package, or renew the entry with a new reason and date"
        )
    return entry


def read_ignore_file(path: Path = IGNORE_FILE, today: date | None = None) -> IgnoreFile:
    """Parse and check the ignore file; an entry without reason or expiry, or expired, fails."""
    today = today or date.today()
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    entries = tuple(
        _entry(item, f"[[vulnerability]] {item.get('id', '?')}", today)
        for item in raw.get("vulnerability", [])
    )
    unaudited = raw.get("unaudited")
    return IgnoreFile(
        entries, _entry(unaudited, "[unaudited]", today, needs_id=False) if unaudited else None
    )


@dataclass
class Findings:
    """What the audit found over the locks."""

    vulnerabilities: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    #: ``(lock, name, version)`` of each pin PyPI gave no vulnerability record for.
    unaudited: list[tuple[str, str, str]] = field(default_factory=list)
    audited: int = 0

    def record(self, ignore: IgnoreFile, lock: str, name: str, version: str, vulns: list) -> None:
        """One audited pin and its vulnerabilities (pip-audit's fields), ignored or not."""
        self.audited += 1
        for vuln in vulns:
            ids = {vuln["id"], *vuln.get("aliases", [])}
            accepted = next(
                (i for i in ignore.vulnerabilities if i.id in ids and i.package == name), None
            )
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no release"
            what = f"{lock}: {name}=={version} {vuln['id']} (fixed in {fixed})"
            if accepted:
                self.ignored.append(f"{what}: ignored until {accepted.expires}: {accepted.reason}")
            else:
                self.vulnerabilities.append(what)

    def failures(self, ignore: IgnoreFile) -> list[str]:
        """Why the audit fails; empty when it passes."""
        failures = [f"known vulnerability: {v}" for v in self.vulnerabilities]
        if self.unaudited and ignore.unaudited is None:
            names = ", ".join(f"{n}=={v}" for _, n, v in self.unaudited[:10])
            failures.append(
                f"{len(self.unaudited)} pins could not be audited (PyPI gave no vulnerability "
                f"record of them): {names}…"
            )
        return failures


def classify(
    report: dict, lock: str, versions: dict[str, str], ignore: IgnoreFile, findings: Findings
) -> None:
    """Add one ``pip-audit -f json`` report's results to ``findings``; ``versions`` are the
    lock's pins (pip-audit leaves the version out of a package it could not look up)."""
    for dep in report.get("dependencies", []):
        name = canonicalize_name(dep["name"])
        version = dep.get("version") or versions.get(name, "?")
        if dep.get("skip_reason"):
            findings.unaudited.append((lock, name, version))
        else:
            findings.record(ignore, lock, name, version, dep.get("vulns", []))


def latest_release_records(
    findings: Findings, ignore: IgnoreFile, project: Callable[[str], dict]
) -> None:
    """Audit the unaudited pins that are their project's latest release from the project's
    JSON (``project(name)``), whose ``vulnerabilities`` are that release's."""
    left = []
    for lock, name, version in findings.unaudited:
        answer = project(name)
        if answer.get("info", {}).get("version") != version:
            left.append((lock, name, version))
            continue
        vulns = [
            {
                "id": v["id"],
                "aliases": v.get("aliases") or [],
                "fix_versions": v.get("fixed_in") or [],
            }
            for v in answer.get("vulnerabilities") or []
            if not v.get("withdrawn")
        ]
        findings.record(ignore, lock, name, version, vulns)
    findings.unaudited = left


def probe(timeout_s: float) -> None:
    """Fail at once, with the fix, when PyPI does not answer."""
    try:
        httpx.get(PROBE_URL, timeout=timeout_s).raise_for_status()
    except httpx.HTTPError as exc:
        raise AuditError(
            f"PyPI did not answer ({PROBE_URL}: {exc!r}); the audit needs https://pypi.org "
            "(set HTTPS_PROXY if you reach it through a proxy)"
        ) from exc


def _audit_lock(pip_audit: Path, lock: Path, timeout_s: float) -> dict:
    """One lock's ``pip-audit -f json`` report."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        argv = [
            str(pip_audit), "-s", "pypi", "--disable-pip", "--require-hashes", "-r", str(lock),
            "-f", "json", "-o", str(out), "--progress-spinner", "off", "--timeout", str(int(timeout_s)),
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired as exc:
            raise AuditError(f"pip-audit over {lock} took over 5 minutes; is PyPI slow?") from exc
        if not out.exists():
            raise AuditError(
                f"pip-audit over {lock} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        return json.loads(out.read_text(encoding="utf-8"))


def run(
    pip_audit: Path, locks: tuple[Path, ...] = LOCKS, timeout_s: float = 15.0
) -> tuple[Findings, IgnoreFile]:
    """Audit every lock with ``pip_audit`` (the tools venv's) against PyPI, locks in parallel."""
    ignore = read_ignore_file()
    probe(timeout_s)
    findings = Findings()
    with ThreadPoolExecutor(max_workers=len(locks)) as pool:
        reports = pool.map(lambda lock: _audit_lock(pip_audit, lock, timeout_s), locks)
        for lock, report in zip(locks, reports, strict=True):
            versions = {pin.name: pin.version for pin in read_lock(lock)}
            classify(report, str(lock.relative_to(ROOT)), versions, ignore, findings)
    if findings.unaudited:
        names = sorted({name for _, name, _ in findings.unaudited})
        with httpx.Client(timeout=timeout_s) as client, ThreadPoolExecutor(16) as pool:
            answers = dict(zip(names, pool.map(lambda n: _project(client, n), names), strict=True))
        latest_release_records(findings, ignore, answers.__getitem__)
    return findings, ignore


def _project(client: httpx.Client, name: str) -> dict:
    """PyPI's project JSON of ``name``; empty when PyPI has none."""
    try:
        answer = client.get(PROJECT_JSON.format(name=name))
    except httpx.HTTPError as exc:
        raise AuditError(f"PyPI did not answer for {name} ({exc!r})") from exc
    return answer.json() if answer.status_code == 200 else {}
