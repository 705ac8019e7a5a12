"""One SQLite state helper (:class:`opslake.lake.state_db.StateDB`): no other module of the
package opens a SQLite connection of its own but the listed ones, each with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "opslake"
HELPER = "lake/state_db.py"
#: Modules that connect to SQLite themselves, and why.
ALLOWED = {
    "security/backup.py": "copies a live store with SQLite's online backup API, file to file",
}


def _connects(tree: ast.Module) -> list[int]:
    """Lines calling ``sqlite3.connect`` (or ``connect`` imported from sqlite3)."""
    imported = {
        a.asname or a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "sqlite3"
        for a in n.names
        if a.name == "connect"
    }
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and (
            (
                isinstance(n.func, ast.Attribute)
                and n.func.attr == "connect"
                and isinstance(n.func.value, ast.Name)
                and n.func.value.id == "sqlite3"
            )
            or (isinstance(n.func, ast.Name) and n.func.id in imported)
        )
    ]


def test_state_stores_connect_through_the_one_helper() -> None:
    found = {
        path.relative_to(PACKAGE).as_posix(): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := _connects(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert HELPER in found  # the scan sees the helper's own connection
    others = {m: lines for m, lines in found.items() if m != HELPER and m not in ALLOWED}
    assert others == {}, f"open SQLite through opslake.lake.state_db.StateDB: {others}"
    assert set(ALLOWED) <= set(found), "drop allowances no longer needed"


def test_the_scan_sees_both_spellings() -> None:
    tree = ast.parse(
        "import sqlite3\nfrom sqlite3 import connect as c\nsqlite3.connect('a')\nc('b')\n"
    )
    assert _connects(tree) == [3, 4]
