"""``python -m infra.supply_chain COMMAND``: the Makefile's supply-chain steps."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import distributions
from pathlib import Path

from infra.supply_chain import audit, licences, locks, sbom


def _lock_wheels(_: argparse.Namespace) -> int:
    pins = locks.all_pins()
    record = locks.fetch_record(pins)
    locks.WHEELS_RECORD.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"lock-wheels: {len(record)} pinned versions recorded in {locks.WHEELS_RECORD}")
    return _check_locks(_)


def _check_locks(_: argparse.Namespace) -> int:
    problems = locks.check(locks.all_pins(), locks.load_record())
    for problem in problems:
        print(f"lock check: {problem}", file=sys.stderr)
    names = ", ".join(p.name for p in locks.PLATFORMS)
    print(f"lock check: {'FAILED' if problems else 'every pin installs on'} {names}")
    return 1 if problems else 0


def _audit(args: argparse.Namespace) -> int:
    try:
        findings, ignore = audit.run(args.pip_audit)
    except audit.AuditError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 1
    for line in findings.ignored:
        print(f"audit: {line}")
    if findings.unaudited and ignore.unaudited:
        print(
            f"audit: WARNING {len(findings.unaudited)} of {len(findings.unaudited) + findings.audited} "
            f"pins NOT audited (PyPI gave no record of them), accepted until "
            f"{ignore.unaudited.expires}: {ignore.unaudited.reason}: "
            + ", ".join(sorted({f"{n}=={v}" for _, n, v in findings.unaudited}))
        )
    failures = findings.failures(ignore)
    for failure in failures:
        print(f"audit: {failure}", file=sys.stderr)
    print(
        f"audit: {findings.audited} pins audited, {len(findings.vulnerabilities)} known "
        f"vulnerabilities, {len(findings.ignored)} ignored, {len(findings.unaudited)} unaudited"
    )
    return 1 if failures else 0


def _sbom(args: argparse.Namespace) -> int:
    count, unhashed = sbom.write(args.cyclonedx, args.output)
    print(f"sbom: {args.output}: {count} components, {count - len(unhashed)} with SHA-256")
    if unhashed:
        print(f"sbom: without a hash (installed from no lock): {', '.join(unhashed)}")
    return 0


def _licences(args: argparse.Namespace) -> int:
    allow = licences.AllowList.load()
    failed = 0
    for site in [None, *(args.site or [])]:
        if site is not None and not Path(site).is_dir():
            print(f"licences: {site} does not exist; install it first", file=sys.stderr)
            return 1
        found = licences.installed(allow, None if site is None else distributions(path=[site]))
        problems = licences.check(found, allow)
        print(
            f"licences: {site or sys.prefix}: {len(found)} distributions, {len(problems)} not allowed"
        )
        for lic in [] if args.quiet else found:
            print(f"  {lic.name}=={lic.version}  {lic.expression}  ({lic.source})")
        for problem in problems:
            print(f"licences: {problem}", file=sys.stderr)
        failed += len(problems)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run one supply-chain command."""
    parser = argparse.ArgumentParser(prog="python -m infra.supply_chain")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("lock-wheels", help="ask PyPI for the locked files (network)").set_defaults(
        run=_lock_wheels
    )
    commands.add_parser("check-locks", help="every pin installs on every platform").set_defaults(
        run=_check_locks
    )
    cmd = commands.add_parser("audit", help="pip-audit every lock against PyPI (network)")
    cmd.add_argument("--pip-audit", type=Path, required=True)
    cmd.set_defaults(run=_audit)
    cmd = commands.add_parser("sbom", help="CycloneDX JSON of this environment")
    cmd.add_argument("--cyclonedx", type=Path, required=True)
    cmd.add_argument("--output", type=Path, required=True)
    cmd.set_defaults(run=_sbom)
    cmd = commands.add_parser("licences", help="list and check installed licences")
    cmd.add_argument("--site", action="append", help="another site-packages to check too")
    cmd.add_argument("--quiet", action="store_true", help="counts and problems only")
    cmd.set_defaults(run=_licences)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
