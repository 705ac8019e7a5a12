"""Landing: exactly the bytes that arrived, written durably, with a manifest row per batch.

A batch is committed when its manifest row exists. The data object is written (atomically)
first and the manifest row second, so a crash at any point leaves either nothing visible or
a data object without a manifest row, which readers ignore. Staged bytes of a killed write
are removed by ``Lake.sweep_staged`` when the service and the pipeline start.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta

from opslake.errors import InputError, StorageError
from opslake.lake.storage import Lake
from opslake.settings import Settings

_SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_BATCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class LandedBatch:
    """One manifest row: a batch of raw bytes from one source."""

    source: str
    batch_id: str
    dt: str
    path: str
    sha256: str
    bytes: int
    received_at: str
    fmt: str
    connector: str
    duplicate: bool = False
    #: Who delivered it: the API key id of a push; "" for other paths (and manifests written
    #: before senders were recorded), which ``sender_of`` reads as the connector.
    sender: str = ""

    @property
    def received(self) -> datetime:
        """``received_at`` as an aware datetime."""
        return datetime.fromisoformat(self.received_at)


def sender_of(batch: LandedBatch) -> str:
    """Who delivered ``batch``: its recorded sender, else the connector that landed it."""
    return batch.sender or batch.connector


class LandingZone:
    """Durable writer and manifest reader for ``landing/``."""

    def __init__(self, lake: Lake, *, dedupe_days: int = Settings.dedupe_days) -> None:
        self.lake = lake
        self.dedupe_days = dedupe_days

    @classmethod
    def from_settings(cls, settings: Settings) -> LandingZone:
        """The landing zone of ``settings``' lake, with its de-duplication window."""
        return cls(Lake.from_settings(settings), dedupe_days=settings.dedupe_days)

    def _manifest_path(self, source: str, dt: str, batch_id: str) -> str:
        return self.lake.path("landing", "_manifest", f"source={source}", f"dt={dt}",
                              f"{batch_id}.json")

    def write(self, source: str, data: bytes | Iterable[bytes], *, fmt: str,
              batch_id: str | None = None, received_at: datetime | None = None,
              dt: str | None = None, connector: str = "opslake",
              sender: str = "") -> LandedBatch:
        """Land one batch; returns its manifest row once bytes and row are durable.

        ``batch_id`` defaults to the content hash, so the same bytes delivered twice are
        recognised; a ``batch_id`` landed on this day or the ``dedupe_days`` before it is not
        written again (``duplicate=True``): a redelivery after midnight is still the same.
        ``sender`` names who delivered it where the connector alone does not (a push's API
        key id); quality contracts are judged per sender (``sender_of``).
        """
        if len(sender) > 128 or not sender.isprintable():
            raise InputError(f"sender {sender[:140]!r} is not allowed; use at most 128 "
                             "printable characters (an API key id or a connector name)")
        if not _SOURCE_RE.match(source):
            raise InputError(f"source name {source!r} is not allowed; use lower-case letters, "
                             "digits, '-' and '_' (e.g. 'prometheus')")
        if batch_id is not None and not _BATCH_RE.match(batch_id):
            raise InputError(f"batch id {batch_id!r} is not allowed; use letters, digits, '.', "
                             "'-' and '_' (at most 128)")
        if not re.fullmatch(r"[a-z0-9]{1,12}", fmt):
            raise InputError(f"format {fmt!r} is not a file extension such as 'prom' or 'json'")
        received = (received_at or datetime.now(UTC)).astimezone(UTC)
        dt = dt or received.date().isoformat()
        try:
            date.fromisoformat(dt)
        except ValueError:
            raise InputError(f"day {dt!r} is not a date; use YYYY-MM-DD") from None
        if batch_id is not None and (known := self._known(source, dt, batch_id)):
            return LandedBatch(**{**asdict(known), "duplicate": True})
        chunks = [bytes(data)] if isinstance(data, bytes | bytearray | memoryview) else data
        staged, sha256, size = self.lake.stage(chunks)
        batch_id = batch_id or sha256[:32]
        if known := self._known(source, dt, batch_id):
            self.lake.discard(staged)
            return LandedBatch(**{**asdict(known), "duplicate": True})
        path = self.lake.path("landing", f"source={source}", f"dt={dt}", f"{batch_id}.{fmt}")
        self.lake.commit(staged, path)
        row = LandedBatch(source=source, batch_id=batch_id, dt=dt, path=path, sha256=sha256,
                          bytes=size, received_at=received.isoformat(), fmt=fmt,
                          connector=connector, sender=sender)
        body = json.dumps(asdict(row), sort_keys=True).encode()
        self.lake.put_atomic(self._manifest_path(source, dt, batch_id), [body])
        return row

    def _known(self, source: str, dt: str, batch_id: str) -> LandedBatch | None:
        """The manifest row of ``batch_id`` on ``dt`` or one of the window's days before."""
        day = date.fromisoformat(dt)
        for back in range(self.dedupe_days + 1):
            if known := self._read_manifest(source, (day - timedelta(days=back)).isoformat(),
                                            batch_id):
                return known
        return None

    def _read_manifest(self, source: str, dt: str, batch_id: str) -> LandedBatch | None:
        path = self._manifest_path(source, dt, batch_id)
        if not self.lake.exists(path):
            return None
        return LandedBatch(**json.loads(self.lake.read_bytes(path)))

    def batches(self, source: str, dt: str) -> list[LandedBatch]:
        """Committed batches of one source and day, in batch-id order."""
        base = self.lake.path("landing", "_manifest", f"source={source}", f"dt={dt}")
        return [LandedBatch(**json.loads(self.lake.read_bytes(p)))
                for p in self.lake.list_files(base) if p.endswith(".json")]

    def sources(self) -> list[str]:
        """Sources that have landed at least one batch."""
        return [d.removeprefix("source=") for d in
                self.lake.list_dirs(self.lake.path("landing", "_manifest"))]

    def days(self, source: str) -> list[str]:
        """Days (``dt``) with committed batches for ``source``."""
        base = self.lake.path("landing", "_manifest", f"source={source}")
        return [d.removeprefix("dt=") for d in self.lake.list_dirs(base)]

    def read(self, batch: LandedBatch, *, verify: bool = True) -> bytes:
        """The batch's bytes; with ``verify``, refuses bytes whose checksum changed."""
        data = self.lake.read_bytes(batch.path)
        if verify and hashlib.sha256(data).hexdigest() != batch.sha256:
            raise StorageError(f"landing object {batch.path} does not match its manifest "
                               "checksum; restore it from the source or re-deliver the batch")
        return data
