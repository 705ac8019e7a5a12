"""File drops: CMDB and ITSM exports (CSV, JSON, XML) picked up from a watched folder.

Each settled file (untouched for ``settle_seconds``, not a ``.tmp``/``.part`` name) is landed
as one batch with its extension as the format, and only once that batch is durable is the
file moved to ``<folder>/.landed/``. A crash between the two leaves the file in place; the
next run lands it again, which the landing zone recognises by content hash (same day) and
does not count twice.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from opslake.errors import CollectionError
from opslake.ingest.connectors.base import Connector, aware
from opslake.lake.landing import LandedBatch, LandingZone

_CHUNK = 8 * 2**20


class FileDrop(Connector):
    """Land every settled export file in ``directory`` and move it aside."""

    version = "1"
    fmt = "json"
    #: Extensions accepted (without the dot); other files are left where they are.
    formats: ClassVar[tuple[str, ...]] = ("csv", "json", "xml")

    def __init__(self, directory: str, settle_seconds: float = 2.0) -> None:
        self.directory = Path(directory)
        self.settle_seconds = settle_seconds

    def collect(self, landing: LandingZone, now: datetime) -> list[LandedBatch]:
        if not self.directory.is_dir():
            raise CollectionError(
                f"drop folder {self.directory} does not exist; create it or "
                "fix the task's 'directory'"
            )
        now = aware(now)
        done = self.directory / ".landed"
        landed = []
        for path in sorted(self.directory.iterdir()):
            fmt = path.suffix.lower().lstrip(".")
            if not path.is_file() or fmt not in self.formats or path.name.startswith("."):
                continue
            if now.timestamp() - path.stat().st_mtime < self.settle_seconds:
                continue  # still being written
            with open(path, "rb") as f:
                batch = landing.write(
                    self.source,
                    iter(lambda f=f: f.read(_CHUNK), b""),
                    fmt=fmt,
                    received_at=now,
                    connector=self.connector,
                )
            done.mkdir(exist_ok=True)
            shutil.move(path, done / f"{batch.batch_id}-{path.name}")
            landed.append(batch)
        return landed


class CmdbFileDrop(FileDrop):
    """CMDB exports: a JSON or XML snapshot of configuration items and relations."""

    name = "cmdb-file-drop"
    source = "cmdb"
    formats = ("json", "xml")


class ItsmFileDrop(FileDrop):
    """ITSM ticket exports: CSV with a header, a JSON array, or XML."""

    name = "itsm-file-drop"
    source = "itsm"
    formats = ("csv", "json", "xml")
