"""The personal workbench (S5.1b): the screens and metrics each user pinned to their portal page,
and the language each user reads the portal and the screens in (S6.9e).

Two small tables in ``state_dir/workbench.db`` (the installation's state, like the identity store
and the subscriptions; backed up with the state directory), or schema ``workbench`` of
``OPSLAKE_DATABASE_URL``. A pin is a user, a kind (``screen``
or ``metric``) and what it names (a screen's slug, a catalog metric id); what a name may be is
checked by the portal before it is pinned, so the store only keeps and lists them. A user who
chose no language reads :data:`DEFAULT_LANGUAGE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from opslake.errors import InputError
from opslake.lake.state_db import open_store

DB_FILE = "workbench.db"
KINDS = ("screen", "metric")
#: The portal's languages (BCP 47 tags), the first the default.
LANGUAGES = ("zh-CN", "zh-TW", "en")
DEFAULT_LANGUAGE = LANGUAGES[0]
#: Most pins one user keeps: a workbench is a short list, not a second catalog.
MAX_PINS = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pins (
    "user" TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('screen', 'metric')),
    ref TEXT NOT NULL, pinned_at TEXT NOT NULL, PRIMARY KEY ("user", kind, ref));
CREATE TABLE IF NOT EXISTS preferences (
    "user" TEXT PRIMARY KEY, language TEXT NOT NULL, changed_at TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Pin:
    """One pinned screen or metric."""

    kind: str
    ref: str
    pinned_at: str


class Workbench:
    """Every user's pins and language, in ``state_dir/workbench.db`` or at ``database_url``."""

    def __init__(self, state_dir: Path, database_url: str | None = None) -> None:
        self.db = open_store(
            Path(state_dir), database_url, DB_FILE, "workbench", _SCHEMA, "the workbench store"
        )

    def pins(self, user: str) -> list[Pin]:
        """``user``'s pins, oldest first."""
        with self.db.connect() as conn:
            rows = conn.execute(
                'SELECT kind, ref, pinned_at FROM pins WHERE "user" = ? '
                "ORDER BY pinned_at, kind, ref",
                (user,),
            ).fetchall()
        return [Pin(r["kind"], r["ref"], r["pinned_at"]) for r in rows]

    def pin(self, user: str, kind: str, ref: str) -> bool:
        """Pin ``ref`` for ``user``; False when it was pinned already."""
        if kind not in KINDS:
            raise InputError(f"cannot pin a {kind!r}; pin one of {', '.join(KINDS)}")
        with self.db.tx() as conn:
            count = conn.execute('SELECT count(*) FROM pins WHERE "user" = ?', (user,)).fetchone()[
                0
            ]
            if conn.execute(
                'SELECT 1 FROM pins WHERE "user" = ? AND kind = ? AND ref = ?', (user, kind, ref)
            ).fetchone():
                return False
            if count >= MAX_PINS:
                raise InputError(
                    f"{user} has {count} pins, the most a workbench keeps; unpin one first"
                )
            conn.execute(
                "INSERT INTO pins VALUES (?, ?, ?, ?)",
                (user, kind, ref, datetime.now(UTC).isoformat(timespec="seconds")),
            )
        return True

    def unpin(self, user: str, kind: str, ref: str) -> bool:
        """Remove one of ``user``'s pins; False when there was none."""
        with self.db.tx() as conn:
            return (
                conn.execute(
                    'DELETE FROM pins WHERE "user" = ? AND kind = ? AND ref = ?', (user, kind, ref)
                ).rowcount
                > 0
            )

    def language(self, user: str) -> str:
        """The language ``user`` chose (:data:`DEFAULT_LANGUAGE` when none)."""
        with self.db.connect() as conn:
            row = conn.execute(
                'SELECT language FROM preferences WHERE "user" = ?', (user,)
            ).fetchone()
        return row["language"] if row and row["language"] in LANGUAGES else DEFAULT_LANGUAGE

    def set_language(self, user: str, language: str) -> None:
        """Keep ``language`` (one of :data:`LANGUAGES`) as ``user``'s."""
        if language not in LANGUAGES:
            raise InputError(
                f"language {language!r} is not offered; choose one of {', '.join(LANGUAGES)}"
            )
        with self.db.tx() as conn:
            conn.execute(
                'INSERT INTO preferences VALUES (?, ?, ?) ON CONFLICT ("user") DO UPDATE '
                "SET language = excluded.language, changed_at = excluded.changed_at",
                (user, language, datetime.now(UTC).isoformat(timespec="seconds")),
            )
