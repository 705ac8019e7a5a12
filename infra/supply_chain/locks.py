"""The hash-pinned locks, the platforms they must install on, and PyPI's record of their files.

Every lock is compiled ``--universal`` (one file for x86_64 and aarch64 Linux). Whether each
pinned package has something installable on each platform is checked offline against
``wheels.json``: the file names PyPI lists for every pinned version whose SHA-256 the lock
allows, written by ``make lock-wheels`` (the only step here that needs the network).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: Every hash-pinned lock in the repository (the Makefile compiles them with ``make lock``).
LOCKS = (
    ROOT / "requirements.lock",
    ROOT / "infra" / "superset" / "requirements.txt",
    ROOT / "infra" / "spark" / "requirements.txt",
    HERE / "requirements.txt",
    HERE / "bootstrap.txt",
)
WHEELS_RECORD = HERE / "wheels.json"
PLATFORMS_FILE = HERE / "platforms.toml"
PYPI_JSON = "https://pypi.org/pypi/{name}/json"


@dataclass(frozen=True)
class Platform:
    """A Linux platform the locks must install on: CPython 3.11 over glibc ``glibc``."""

    name: str
    machine: str
    glibc: tuple[int, int] = (2, 28)

    def environment(self) -> dict[str, str]:
        """The marker environment of this platform (PEP 508)."""
        return {
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "platform_machine": self.machine,
            "platform_system": "Linux",
            "sys_platform": "linux",
            "os_name": "posix",
            "python_version": "3.11",
            "python_full_version": "3.11.7",
        }

    def tags(self) -> frozenset[Tag]:
        """Wheel tags pip accepts here: manylinux_2_17 up to this glibc, and pure wheels."""
        major, minor = self.glibc
        platforms = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 16, -1)]
        platforms += [f"manylinux2014_{self.machine}", f"linux_{self.machine}"]
        if self.machine == "x86_64":
            platforms += ["manylinux2010_x86_64", "manylinux1_x86_64"]
        return frozenset(cpython_tags((3, 11), platforms=platforms)) | frozenset(
            compatible_tags((3, 11), interpreter="cp311", platforms=platforms)
        )


PLATFORMS = (
    Platform("x86_64-manylinux_2_28", "x86_64"),
    Platform("aarch64-manylinux_2_28", "aarch64"),
)


@dataclass(frozen=True)
class Pin:
    """One ``name==version`` line of a lock with its marker and allowed SHA-256 hashes."""

    name: str
    version: str
    marker: Marker | None
    hashes: frozenset[str]

    @property
    def key(self) -> str:
        """``name==version``, the record's key."""
        return f"{self.name}=={self.version}"

    def applies(self, platform: Platform) -> bool:
        """Whether the lock installs this pin on ``platform``."""
        return self.marker is None or self.marker.evaluate(platform.environment())


def _logical_lines(text: str) -> Iterator[str]:
    """Lines with their ``\\`` continuations joined and comments dropped."""
    buffer = ""
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            yield buffer.strip()
        buffer = ""
    if buffer.strip():
        yield buffer.strip()


def read_lock(path: Path) -> list[Pin]:
    """The pins of a ``uv pip compile --generate-hashes`` lock."""
    pins = []
    for line in _logical_lines(path.read_text(encoding="utf-8")):
        spec, *options = re.split(r"\s+(?=--)", line)
        requirement = Requirement(spec)
        versions = [s.version for s in requirement.specifier if s.operator == "=="]
        hashes = {o.split("sha256:", 1)[1] for o in options if o.startswith("--hash=sha256:")}
        if len(versions) != 1 or not hashes:
            raise ValueError(f"{path}: {spec!r} is not pinned with hashes (==version --hash=…)")
        pins.append(
            Pin(
                canonicalize_name(requirement.name),
                versions[0],
                requirement.marker,
                frozenset(hashes),
            )
        )
    return pins


def all_pins(locks: Iterable[Path] = LOCKS) -> dict[Path, list[Pin]]:
    """Each lock's pins."""
    return {path: read_lock(path) for path in locks}


def load_record(path: Path = WHEELS_RECORD) -> dict[str, dict[str, str]]:
    """``{name==version: {sha256: file name}}`` as ``make lock-wheels`` wrote it."""
    return json.loads(path.read_text(encoding="utf-8"))


def sdist_exceptions(path: Path = PLATFORMS_FILE) -> dict[str, str]:
    """Packages allowed to install from their sdist on a platform without a wheel: why."""
    return tomllib.loads(path.read_text(encoding="utf-8")).get("sdist-builds", {})


def is_sdist(filename: str) -> bool:
    """Whether ``filename`` is a source distribution."""
    return filename.endswith((".tar.gz", ".zip", ".tar.bz2"))


def installable(pin: Pin, files: dict[str, str], platform: Platform) -> str | None:
    """The file name ``pin`` installs from on ``platform`` (a wheel first), or None."""
    allowed = [name for sha, name in files.items() if sha in pin.hashes]
    tags = platform.tags()
    for name in sorted(allowed):
        if name.endswith(".whl") and parse_wheel_filename(name)[3] & tags:
            return name
    return next((name for name in sorted(allowed) if is_sdist(name)), None)


def check(
    pins: dict[Path, list[Pin]],
    record: dict[str, dict[str, str]],
    platforms: Iterable[Platform] = PLATFORMS,
    exceptions: dict[str, str] | None = None,
) -> list[str]:
    """Every problem that would stop a lock installing on a platform, as a sentence."""
    exceptions = sdist_exceptions() if exceptions is None else exceptions
    problems = []
    for path, lock in pins.items():
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for pin in lock:
            if pin.key not in record:
                problems.append(
                    f"{where}: {pin.key} is not in {WHEELS_RECORD.name}; run `make lock-wheels`"
                )
                continue
            for platform in platforms:
                if not pin.applies(platform):
                    continue
                chosen = installable(pin, record[pin.key], platform)
                if chosen is None:
                    problems.append(f"{where}: {pin.key} has no file for {platform.name}")
                elif is_sdist(chosen) and pin.name not in exceptions:
                    problems.append(
                        f"{where}: {pin.key} has no wheel for {platform.name} (only {chosen}); "
                        f"note why its sdist builds there in {PLATFORMS_FILE.name} [sdist-builds]"
                    )
    return problems


def recorded(filename: str) -> bool:
    """Whether the record keeps ``filename``: sdists and wheels CPython 3.11 on Linux can
    install (any glibc, so the wheel a newer host picked is there for the SBOM's hashes)."""
    if not filename.endswith(".whl"):
        return is_sdist(filename)
    tags = parse_wheel_filename(filename)[3]
    platforms = {
        t.platform for t in tags if re.match(r"(many)?linux.*_(x86_64|aarch64)$|any$", t.platform)
    }
    if not platforms:
        return False
    python = set(cpython_tags((3, 11), platforms=sorted(platforms)))
    python |= set(compatible_tags((3, 11), interpreter="cp311", platforms=sorted(platforms)))
    return bool(tags & python)


def fetch_record(pins: dict[Path, list[Pin]], timeout_s: float = 20.0) -> dict[str, dict[str, str]]:
    """Ask PyPI which files each pinned version has (the lock's hashes only)."""
    import httpx

    wanted: dict[str, list[Pin]] = {}
    for lock in pins.values():
        for pin in lock:
            wanted.setdefault(pin.name, []).append(pin)
    record: dict[str, dict[str, str]] = {}
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for name in sorted(wanted):
            answer = client.get(PYPI_JSON.format(name=name))
            answer.raise_for_status()
            releases = answer.json()["releases"]
            for pin in wanted[name]:
                files = releases.get(pin.version, [])
                record[pin.key] = {
                    f["digests"]["sha256"]: f["filename"]
                    for f in files
                    if f["digests"]["sha256"] in pin.hashes and recorded(f["filename"])
                }
    return dict(sorted(record.items()))
