"""The package's one-way layers (pyproject.toml's [tool.importlinter] contract) hold, name
every top-level module, and the check itself fails on an upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contract over the ``opslake`` package in ``root``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _layers() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    [contract] = config["tool"]["importlinter"]["contracts"]
    return [name.strip() for layer in contract["layers"] for name in layer.split(":")]


def test_the_tree_keeps_its_layers() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_every_top_level_module_has_a_layer() -> None:
    named = set(_layers())
    package = REPO / "opslake"
    present = {f"opslake.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    present |= {f"opslake.{p.parent.name}" for p in package.glob("*/__init__.py")}
    assert present - named == set(), "give each new module a layer in pyproject.toml"
    assert named - present == set(), "the contract names modules that no longer exist"


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(
        REPO / "opslake", tmp_path / "opslake", ignore=shutil.ignore_patterns("__pycache__")
    )
    storage = tmp_path / "opslake" / "lake" / "storage.py"
    storage.write_text(storage.read_text() + "\nfrom opslake.api import app  # upward\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "opslake.lake.storage -> opslake.api" in result.stdout
