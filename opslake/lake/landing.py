"""Landing: exactly the bytes that arrived, written durably, with a manifest row per batch.

A batch is committed when its manifest row exists. The data object is written (atomically)
first and the manifest row second, so a crash at any point leaves either nothing visible or
a data object without a manifest row, which readers ignore. Staged bytes of a killed write
are removed by ``Lake.sweep_staged`` when the service and the pipeline start.

Sources named in ``Settings.landing_encrypted_sources`` (CMDB and ITSM exports: owner phone
numbers and e-mail) are stored sealed: SM4-GCM under the data key (``opslake.crypto``), the
object being ``header + ciphertext + tag`` where the header names the format, the key id and
the nonce, and the header, source and day are authenticated with it. The manifest row keeps
the checksum and size of the PLAINTEXT (``encryption`` says how the object is stored), so a
redelivery is recognised by content whatever the nonce, and ``read`` returns exactly what
arrived. Batches landed in clear, before or outside that setting, read as they always did.

A batch purged by retention (``opslake.lake.retention``) keeps its manifest row as a
tombstone (``purged_at`` set, checksum kept) so a redelivery is still a duplicate; only its
object is gone. ``batches`` leaves tombstones out unless asked for them.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
import secrets
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from opslake.crypto import (
    KEY_ENV,
    NONCE_BYTES,
    PREVIOUS_KEYS_ENV,
    TAG_BYTES,
    DataKeys,
    sm4_gcm_decrypt,
    sm4_gcm_encrypt,
)
from opslake.errors import (
    InputError,
    PurgedBatchError,
    SealedBatchError,
    SecurityError,
    StorageError,
)
from opslake.lake.storage import Lake
from opslake.settings import Settings

_SOURCE_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_BATCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_FMT_RE = re.compile(r"[a-z0-9]{1,12}")
#: ``encryption`` of a sealed batch; a clear one has "".
SM4_GCM = "sm4-gcm"
#: A sealed object starts with this, then the 8-hex-digit key id, ':' and the nonce.
_SEALED_MAGIC = b"opslake-landing:sm4gcm:v1:"
_KEY_ID_CHARS = 8
_HEADER_BYTES = len(_SEALED_MAGIC) + _KEY_ID_CHARS + 1 + NONCE_BYTES
#: Bytes a sealed object has beyond its plaintext.
SEALED_OVERHEAD = _HEADER_BYTES + TAG_BYTES


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
    #: How the object is stored: "" in clear, ``SM4_GCM`` sealed under the data key
    #: ``key_id``; ``sha256`` and ``bytes`` are always those of the plaintext.
    encryption: str = ""
    key_id: str = ""
    #: When retention removed the object (ISO 8601); "" while it is there.
    purged_at: str = ""

    @property
    def received(self) -> datetime:
        """``received_at`` as an aware datetime."""
        return datetime.fromisoformat(self.received_at)

    @property
    def stored_bytes(self) -> int:
        """Size of the object as stored (the plaintext's plus the seal's, when sealed)."""
        return self.bytes + (SEALED_OVERHEAD if self.encryption else 0)


def sender_of(batch: LandedBatch) -> str:
    """Who delivered ``batch``: its recorded sender, else the connector that landed it."""
    return batch.sender or batch.connector


class LandingZone:
    """Durable writer and manifest reader for ``landing/``.

    ``keys`` loads the data keys when a sealed batch is first written or read (a zone that
    touches no sealed source never needs them); without it, such a batch is refused with
    SealedBatchError, never written in clear.
    """

    def __init__(
        self,
        lake: Lake,
        *,
        dedupe_days: int = Settings.dedupe_days,
        encrypted_sources: Collection[str] = Settings.landing_encrypted_sources,
        keys: Callable[[], DataKeys] | None = None,
    ) -> None:
        self.lake = lake
        self.dedupe_days = dedupe_days
        self.encrypted_sources = frozenset(encrypted_sources)
        self._load_keys = functools.cache(keys) if keys else None

    @classmethod
    def from_settings(cls, settings: Settings, lake: Lake | None = None) -> LandingZone:
        """The landing zone of ``settings``' lake: its window, sealed sources and data keys."""
        return cls(
            lake or Lake.from_settings(settings),
            dedupe_days=settings.dedupe_days,
            encrypted_sources=settings.landing_encrypted_sources,
            keys=functools.partial(DataKeys.from_settings, settings),
        )

    def _keys(self, source: str) -> DataKeys:
        if self._load_keys is None:
            raise SealedBatchError(
                f"landing source {source!r} is stored SM4-encrypted, but this landing zone "
                "was opened without the data key; open it with LandingZone.from_settings "
                f"(the key comes from {KEY_ENV} or OPSLAKE_STATE_DIR/keys/data.key)"
            )
        return self._load_keys()

    def _manifest_path(self, source: str, dt: str, batch_id: str) -> str:
        return self.lake.path(
            "landing", "_manifest", f"source={source}", f"dt={dt}", f"{batch_id}.json"
        )

    def write(
        self,
        source: str,
        data: bytes | Iterable[bytes],
        *,
        fmt: str,
        batch_id: str | None = None,
        received_at: datetime | None = None,
        dt: str | None = None,
        connector: str = "opslake",
        sender: str = "",
    ) -> LandedBatch:
        """Land one batch; returns its manifest row once bytes and row are durable.

        ``batch_id`` defaults to the content hash, so the same bytes delivered twice are
        recognised; a ``batch_id`` landed on this day or the ``dedupe_days`` before it is not
        written again (``duplicate=True``): a redelivery after midnight is still the same.
        ``sender`` names who delivered it where the connector alone does not (a push's API
        key id); quality contracts are judged per sender (``sender_of``).
        """
        if len(sender) > 128 or not sender.isprintable():
            raise InputError(
                f"sender {sender[:140]!r} is not allowed; use at most 128 "
                "printable characters (an API key id or a connector name)"
            )
        if not _SOURCE_RE.match(source):
            raise InputError(
                f"source name {source!r} is not allowed; use lower-case letters, "
                "digits, '-' and '_' (e.g. 'prometheus')"
            )
        if batch_id is not None and not _BATCH_RE.match(batch_id):
            raise InputError(
                f"batch id {batch_id!r} is not allowed; use letters, digits, '.', "
                "'-' and '_' (at most 128)"
            )
        if not _FMT_RE.fullmatch(fmt):
            raise InputError(f"format {fmt!r} is not a file extension such as 'prom' or 'json'")
        received = (received_at or datetime.now(UTC)).astimezone(UTC)
        dt = dt or received.date().isoformat()
        try:
            date.fromisoformat(dt)
        except ValueError:
            raise InputError(f"day {dt!r} is not a date; use YYYY-MM-DD") from None
        if batch_id is not None and (known := self._known(source, dt, batch_id)):
            return replace(known, duplicate=True)
        chunks = [bytes(data)] if isinstance(data, bytes | bytearray | memoryview) else data
        encryption = key_id = ""
        if source in self.encrypted_sources:
            keys = self._keys(source)
            encryption, key_id = SM4_GCM, keys.current_id
            plain = _Counted(chunks)
            staged, _, _ = self.lake.stage(_seal(keys, plain, source, dt))
            sha256, size = plain.digest.hexdigest(), plain.size
        else:
            staged, sha256, size = self.lake.stage(chunks)
        batch_id = batch_id or sha256[:32]
        if known := self._known(source, dt, batch_id):
            self.lake.discard(staged)
            return replace(known, duplicate=True)
        path = self.lake.path("landing", f"source={source}", f"dt={dt}", f"{batch_id}.{fmt}")
        self.lake.commit(staged, path)
        row = LandedBatch(
            source=source,
            batch_id=batch_id,
            dt=dt,
            path=path,
            sha256=sha256,
            bytes=size,
            received_at=received.isoformat(),
            fmt=fmt,
            connector=connector,
            sender=sender,
            encryption=encryption,
            key_id=key_id,
        )
        self._put_manifest(row)
        return row

    def _put_manifest(self, row: LandedBatch) -> None:
        # vars, not asdict: the same flat dict without asdict's deep copy of every field.
        body = json.dumps(vars(row), sort_keys=True).encode()
        self.lake.put_atomic(self._manifest_path(row.source, row.dt, row.batch_id), [body])

    def tombstone(self, batch: LandedBatch, at: datetime) -> LandedBatch:
        """Mark ``batch`` purged in its manifest row (checksum kept), before its object goes."""
        dead = replace(batch, purged_at=at.astimezone(UTC).isoformat(), duplicate=False)
        self._put_manifest(dead)
        return dead

    def _known(self, source: str, dt: str, batch_id: str) -> LandedBatch | None:
        """The manifest row of ``batch_id`` on ``dt`` or one of the window's days before."""
        # Asked twice a batch for up to eight days: one stat each, the paths built directly.
        day = date.fromisoformat(dt)
        base = self.lake.path("landing", "_manifest", f"source={source}")
        for back in range(self.dedupe_days + 1):
            path = f"{base}/dt={day - timedelta(days=back)}/{batch_id}.json"
            if self.lake.exists(path):
                return LandedBatch(**json.loads(self.lake.read_bytes(path)))
        return None

    def batches(self, source: str, dt: str, *, purged: bool = False) -> list[LandedBatch]:
        """Committed batches of one source and day, in batch-id order (tombstones if ``purged``)."""
        base = self.lake.path("landing", "_manifest", f"source={source}", f"dt={dt}")
        rows = [
            LandedBatch(**json.loads(self.lake.read_bytes(p)))
            for p in self.lake.list_files(base)
            if p.endswith(".json")
        ]
        return rows if purged else [b for b in rows if not b.purged_at]

    def sources(self) -> list[str]:
        """Sources that have landed at least one batch."""
        return [
            d.removeprefix("source=")
            for d in self.lake.list_dirs(self.lake.path("landing", "_manifest"))
        ]

    def days(self, source: str) -> list[str]:
        """Days (``dt``) with committed batches for ``source``."""
        base = self.lake.path("landing", "_manifest", f"source={source}")
        return [d.removeprefix("dt=") for d in self.lake.list_dirs(base)]

    def landed_days(self) -> list[str]:
        """Every day with a committed batch of any source, in order."""
        return sorted({day for source in self.sources() for day in self.days(source)})

    def read(self, batch: LandedBatch, *, verify: bool = True) -> bytes:
        """The batch's bytes as delivered (opened when sealed); ``verify`` checks the checksum."""
        if batch.purged_at:
            raise PurgedBatchError(
                f"batch {batch.batch_id} of {batch.source} ({batch.dt}) was purged from "
                f"landing at {batch.purged_at} (OPSLAKE_LANDING_RETENTION_DAYS); its rows are "
                "in bronze and silver: read those, or restore the object from a backup"
            )
        data = self.lake.read_bytes(batch.path)
        if batch.encryption:
            data = self._open(batch, data)
        if verify and hashlib.sha256(data).hexdigest() != batch.sha256:
            raise StorageError(
                f"landing object {batch.path} does not match its manifest "
                "checksum; restore it from the source or re-deliver the batch"
            )
        return data

    def _open(self, batch: LandedBatch, data: bytes) -> bytes:
        """The plaintext of a sealed object; SealedBatchError names the key or the damage."""
        if batch.encryption != SM4_GCM:
            raise SealedBatchError(
                f"batch {batch.batch_id} of {batch.source} is stored as "
                f"{batch.encryption!r}, which this OpsLake cannot open; "
                "upgrade OpsLake to the version that landed it"
            )
        keys = self._keys(batch.source)
        damaged = SealedBatchError(
            f"landing object {batch.path} failed authentication: it was altered, cut off or "
            "belongs to another source or day; restore it from a backup or re-deliver the "
            "batch"
        )
        if not data.startswith(_SEALED_MAGIC) or len(data) < SEALED_OVERHEAD:
            raise damaged
        kid = data[len(_SEALED_MAGIC) :][:_KEY_ID_CHARS].decode("ascii", "replace")
        key = keys.get(kid)
        if key is None:
            raise SealedBatchError(
                f"landing object {batch.path} is sealed under data key {kid}, but the loaded "
                f"key is {keys.current_id}; set {KEY_ENV} to that key, or list it in "
                f"{PREVIOUS_KEYS_ENV} (a backup holds it: opslake backup restore)"
            )
        try:
            return sm4_gcm_decrypt(
                key,
                data[_HEADER_BYTES - NONCE_BYTES : _HEADER_BYTES],
                data[_HEADER_BYTES:],
                data[:_HEADER_BYTES] + _context(batch.source, batch.dt),
            )
        except SecurityError as exc:
            raise damaged from exc


class _Counted:
    """The chunks of a batch passed through, with their SHA-256 and size as they go."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks, self.digest, self.size = chunks, hashlib.sha256(), 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.digest.update(chunk)
            self.size += len(chunk)
            yield chunk


def _context(source: str, dt: str) -> bytes:
    # Authenticated with the header, so an object moved to another source or day is refused.
    return f"{source}/{dt}".encode()


def _seal(keys: DataKeys, chunks: Iterable[bytes], source: str, dt: str) -> Iterator[bytes]:
    """A sealed object, streamed: header, SM4-GCM ciphertext of ``chunks``, tag."""
    nonce = secrets.token_bytes(NONCE_BYTES)  # random per batch, never reused under a key
    header = _SEALED_MAGIC + keys.current_id.encode("ascii") + b":" + nonce
    return itertools.chain(
        [header], sm4_gcm_encrypt(keys.current, nonce, chunks, header + _context(source, dt))
    )
