"""The licence of every installed distribution, from its metadata, against an allow-list.

A distribution's licence is, in this order: an entry of ``licences.toml`` ``[packages]``
(where the metadata says nothing usable), its ``License-Expression`` (SPDX, PEP 639), its
``License ::`` classifiers, its short ``License`` field; each mapped to SPDX by the file's
``[aliases]``. An SPDX expression passes when one of its ``OR`` alternatives has every
licence (``AND``, ``WITH``) in ``allowed``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import Distribution, distributions
from pathlib import Path

from packaging.utils import canonicalize_name

ALLOW_FILE = Path(__file__).resolve().parent / "licences.toml"


@dataclass(frozen=True)
class Licence:
    """One installed distribution's licence and where it was read."""

    name: str
    version: str
    expression: str
    source: str


@dataclass(frozen=True)
class AllowList:
    """``licences.toml``."""

    allowed: frozenset[str]
    aliases: dict[str, str]
    packages: dict[str, dict[str, str]]

    @classmethod
    def load(cls, path: Path = ALLOW_FILE) -> AllowList:
        """Read the allow-list file."""
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return cls(
            frozenset(raw["allowed"]),
            raw.get("aliases", {}),
            {canonicalize_name(k): v for k, v in raw.get("packages", {}).items()},
        )

    def permits(self, expression: str) -> bool:
        """Whether an SPDX expression has an ``OR`` alternative made only of allowed licences."""
        for alternative in re.split(r"\s+OR\s+", expression.replace("(", " ").replace(")", " ")):
            atoms = [a.strip() for a in re.split(r"\s+(?:AND|WITH)\s+", alternative) if a.strip()]
            if atoms and all(atom in self.allowed for atom in atoms):
                return True
        return False


def licence_of(dist: Distribution, allow: AllowList) -> Licence:
    """What ``dist``'s metadata says its licence is, mapped to SPDX."""
    meta = dist.metadata
    name = canonicalize_name(meta["Name"])
    override = allow.packages.get(name)
    if override:
        return Licence(
            name, dist.version, override["licence"], f"licences.toml: {override['reason']}"
        )
    if meta.get("License-Expression"):
        return Licence(name, dist.version, meta["License-Expression"], "License-Expression")
    classifiers = [
        c.removeprefix("License :: ")
        for c in meta.get_all("Classifier") or []
        if c.startswith("License :: ") and c != "License :: OSI Approved"
    ]
    if classifiers:
        mapped = [allow.aliases.get(c, c) for c in classifiers]
        # Several classifiers are how a dual licence is declared (a choice of either).
        return Licence(name, dist.version, " OR ".join(dict.fromkeys(mapped)), "classifiers")
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 40:
        return Licence(name, dist.version, allow.aliases.get(text, text), "License")
    return Licence(name, dist.version, "UNKNOWN", "no usable licence metadata")


def installed(allow: AllowList, dists: Iterable[Distribution] | None = None) -> list[Licence]:
    """Every installed distribution's licence, by name (one per name)."""
    found = {}
    for dist in distributions() if dists is None else dists:
        licence = licence_of(dist, allow)
        found[licence.name] = licence
    return sorted(found.values(), key=lambda lic: lic.name)


def check(licences: Iterable[Licence], allow: AllowList) -> list[str]:
    """Each distribution whose licence the allow-list does not permit, with the fix."""
    return [
        f"{lic.name}=={lic.version}: {lic.expression!r} (from {lic.source}) is not allowed; "
        f"add it to {ALLOW_FILE.name} [allowed] if it is acceptable, or [packages] if the "
        "metadata is wrong"
        for lic in licences
        if not allow.permits(lic.expression)
    ]
