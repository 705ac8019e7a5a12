"""A CycloneDX JSON SBOM of this Python environment (``cyclonedx-py environment``), with the
SHA-256 of the file each package was installed from, taken from the locks.

``cyclonedx-py`` reads installed metadata, which holds no hash of the wheel it came from; the
installed ``WHEEL`` file's tags name that wheel among the locked version's files
(``wheels.json``), whose SHA-256 the lock pinned. A package built from its sdist gets the
sdist's hash; one installed from no lock (the venv's own pip) is listed without a hash and
says why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.tags import parse_tag
from packaging.utils import canonicalize_name, parse_wheel_filename

from infra.supply_chain.locks import ROOT, is_sdist, load_record

HASH_SOURCE = "opslake:hash-source"


def installed_file(dist: Distribution, record: dict[str, dict[str, str]]) -> tuple[str, str] | None:
    """``(sha256, file name)`` of the locked file ``dist`` was installed from, or None."""
    files = record.get(f"{canonicalize_name(dist.metadata['Name'])}=={dist.version}", {})
    wheel = dist.read_text("WHEEL") or ""
    tags = {
        tag
        for line in wheel.splitlines()
        if line.startswith("Tag:")
        for tag in parse_tag(line[4:].strip())
    }
    for sha, name in files.items():
        if name.endswith(".whl") and parse_wheel_filename(name)[3] == tags:
            return sha, name
    # Built here from the sdist (the wheel it made is nowhere on PyPI).
    return next(((sha, name) for sha, name in files.items() if is_sdist(name)), None)


def add_hashes(bom: dict, record: dict[str, dict[str, str]]) -> list[str]:
    """Put each component's locked SHA-256 into ``bom``; the components left without one."""
    unhashed = []
    for component in bom.get("components", []):
        properties = component.setdefault("properties", [])
        try:
            dist = distribution(component["name"])
        except PackageNotFoundError:
            dist = None
        found = installed_file(dist, record) if dist is not None else None
        if found is None:
            unhashed.append(f"{component['name']}=={component.get('version')}")
            properties.append({"name": HASH_SOURCE, "value": "none: installed from no lock"})
            continue
        sha, name = found
        component.setdefault("hashes", []).append({"alg": "SHA-256", "content": sha})
        properties.append({"name": HASH_SOURCE, "value": f"lock: {name}"})
    return unhashed


def write(cyclonedx: Path, out: Path) -> tuple[int, list[str]]:
    """Write the SBOM of this interpreter's environment to ``out``: components, unhashed ones."""
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(cyclonedx), "environment", "--pyproject", str(ROOT / "pyproject.toml"),
         "--output-reproducible", "-o", str(out), sys.executable],
        check=True, timeout=600,
    )  # fmt: skip
    bom = json.loads(out.read_text(encoding="utf-8"))
    unhashed = add_hashes(bom, load_record())
    out.write_text(json.dumps(bom, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return len(bom.get("components", [])), unhashed
