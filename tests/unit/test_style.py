"""The tree passes the project's lint rules and is formatted as ``ruff format`` writes it
(what ``make lint`` checks; here so that ``make test`` checks it too)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")
TREE = ["opslake", "tests", "infra"]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUFF), *args, *TREE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_passes_ruff_check() -> None:
    result = _ruff("check", "--output-format", "concise")
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_tree_is_formatted() -> None:
    result = _ruff("format", "--check")
    assert result.returncode == 0, (
        "run `ruff format opslake tests infra`:\n" + result.stdout[-3000:]
    )
