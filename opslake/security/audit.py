"""An append-only audit log, SM3-chained, HMAC-SM3-keyed and anchored elsewhere (S6.6c).

Every entry is one JSON line in ``<directory>/YYYY-MM-DD.jsonl`` (the UTC day of its ``at``)
and carries ``seq`` (1, 2, ...), ``prev`` (the previous entry's hash, 64 zeros for the first),
``mac = hmac_sm3(key, prev + canonical JSON of the entry without 'mac' and 'hash')`` and
``hash = sm3(the same text + mac)``, canonical meaning sorted keys, no spaces and unescaped
Unicode (the hash covers the MAC; an entry without ``mac`` hashes as in earlier versions).
The chain runs across days: a day's first entry links to the previous day's last. Editing an
entry breaks its hash, deleting one leaves a gap in ``seq`` and a broken link, moving one
breaks the order and the links; :meth:`AuditLog.verify` names the file and line of each.

A chain alone can be rebuilt by anyone who can write the directory, and cut at the end
unseen. Hence the key (32 bytes, ``Settings.audit_key_path``, created on first use with mode
600, kept outside the log's directory and the repository): an entry rewritten without it
fails its MAC. And hence checkpoints: the head (``seq`` and ``hash``) is signed with the same
key and written to a second place, one new object per checkpoint under
``audit_checkpoints/`` in the lake (never overwritten) and a syslog line
(``Settings.audit_syslog``): every ``audit_checkpoint_entries`` entries, after
``audit_checkpoint_seconds`` with entries not yet checkpointed, at the first keyed entry of a
log and at :meth:`AuditLog.close` (also at interpreter exit). :meth:`AuditLog.verify` holds
the log against every checkpoint: a log ending before the latest one was cut, or rolled back
when it ends exactly at an older one's head; a checkpointed entry the log holds differently
was rewritten.

Entries written before keys existed have no ``mac``: they verify as unkeyed legacy entries
(:attr:`VerifyResult.legacy`) only before the first keyed entry; an entry without a MAC after
one is reported. A log unkeyed throughout and without checkpoints is only as strong as its
chain.

An append is whole or nothing: the day file's size is noted before the batch is written,
and a write or fsync that fails (a full disk) cuts the file back to that size before the
error is raised, so the chain still verifies once space returns. Only a crash mid-write
(SIGKILL, power loss) can leave a torn last line; the next append starts on a fresh line and
keeps the torn bytes as evidence. :meth:`AuditLog.verify` lists such a line among its
problems but also in :attr:`VerifyResult.torn`, and it does not make the result fail, when
the chain runs on across it without a gap: the entry it held was never acknowledged, and no
entry is missing. An incomplete line followed by a gap is reported as tampering, like any.
(Cutting a line at the very end looks the same as a crash there, just as removing the last
entries does, and is caught the same way: by the checkpoints.)

Appends take an exclusive ``flock`` on ``<directory>/.lock`` (plus a lock for the threads of
this process) around reading the last entry and writing the next, and each entry is fsynced
before ``append`` returns, so any number of threads and processes may write one log. Entries
that arrive while a batch is written go into the next one (group commit: one lock, one read of
the last entry and one fsync per batch); ``append_async`` is the same for an event loop.

Nothing here deletes or rewrites entries: MLPS level 3 asks for at least six months of audit
records, and retention is left to whoever archives the directory.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import hmac
import json
import logging
import logging.handlers
import os
import re
import secrets
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from time import monotonic
from typing import Any, TypeVar

from opslake.crypto import hmac_sm3, key_file, key_id, sm3
from opslake.errors import InputError, OpsLakeError, StorageError, refused_write, space_error
from opslake.lake.storage import Lake
from opslake.settings import Settings

#: ``prev`` of the very first entry.
GENESIS = "0" * 64
_DAY_FILE = re.compile(r"^\d{4}-\d{2}-\d{2}\.jsonl$")
# verify() streams; it remembers this many recent hashes to tell a moved entry from a lost one.
_WINDOW = 4096
_TAIL_CHUNK = 64 * 1024
_PROCESS_LOCK = threading.Lock()
#: Bytes of the HMAC-SM3 key (SM3's block is 64, its digest 32).
KEY_BYTES = 32
#: The lake directory of signed checkpoints, one object each.
CHECKPOINTS = "audit_checkpoints"
SYSLOG_TAG = "opslake-audit"
log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking the whole chain."""

    #: No entry was modified, deleted, moved or inserted (torn lines alone keep it true).
    ok: bool
    entries: int
    problems: list[str] = field(default_factory=list)
    #: ``seq`` and hash of the last entry: the anchor to keep elsewhere.
    last_seq: int = 0
    head: str = GENESIS
    #: Of ``problems``, the incomplete lines a crash mid-append left (no entry missing).
    torn: list[str] = field(default_factory=list)
    #: Entries without a MAC before the first keyed one (written before keys existed).
    legacy: int = 0
    #: Checkpoints held against the log (signed ones of the lake, given ones), the latest ``seq``.
    checkpoints: int = 0
    checkpoint_seq: int = 0


def canonical(entry: Mapping[str, object]) -> str:
    """The one JSON text of ``entry`` that its hash covers."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def signed_text(entry: Mapping[str, object]) -> bytes:
    """What an entry's MAC covers: the previous hash and the entry without ``mac``/``hash``."""
    body = {k: v for k, v in entry.items() if k not in ("hash", "mac")}
    return (str(entry.get("prev", "")) + canonical(body)).encode("utf-8")


def entry_hash(entry: Mapping[str, object], signed: bytes | None = None) -> str:
    """SM3 over :func:`signed_text` and the entry's ``mac`` (none in unkeyed entries)."""
    return sm3(
        (signed_text(entry) if signed is None else signed)
        + str(entry.get("mac", "")).encode("utf-8")
    )


def entry_mac(key: bytes, entry: Mapping[str, object], signed: bytes | None = None) -> str:
    """HMAC-SM3 under ``key`` of :func:`signed_text`."""
    return hmac_sm3(key, signed_text(entry) if signed is None else signed)


def checkpoint_mac(key: bytes, checkpoint: Mapping[str, object]) -> str:
    """HMAC-SM3 under ``key`` of a checkpoint without its ``mac``."""
    body = {k: v for k, v in checkpoint.items() if k != "mac"}
    return hmac_sm3(key, canonical(body).encode("utf-8"))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _pending(
    *,
    who: str,
    role: str,
    action: str,
    status: int,
    key_id: str | None = None,
    params: Mapping[str, object] | None = None,
    rows: int = 0,
    client: str | None = None,
    **extra: object,
) -> _Pending:
    reserved = {"seq", "at", "prev", "mac", "hash"} & extra.keys()
    if reserved:
        raise TypeError(f"audit fields {sorted(reserved)} are set by the log itself")
    fields = {
        "who": who,
        "role": role,
        "key_id": key_id,
        "action": action,
        "params": dict(params or {}),
        "status": status,
        "rows": rows,
        "client": client,
        **extra,
    }
    # Round-trip first so the hash covers exactly what a reader will parse back.
    return _Pending(json.loads(json.dumps(fields, default=str)))


def _settle(durables: list[asyncio.Future]) -> None:
    for durable in durables:
        if not durable.done():
            durable.set_result(None)


@dataclass
class _Pending:
    """One entry waiting for its batch to be written."""

    fields: dict
    done: bool = False
    entry: dict | None = None
    #: The event loop and future of an ``append_async`` caller, settled by the writing
    #: thread once the entry is durable (or failed).
    loop: asyncio.AbstractEventLoop | None = None
    durable: asyncio.Future | None = None
    error: StorageError | None = None


class _Syslog(logging.handlers.SysLogHandler):
    """A syslog handler that reports a failed send as a warning, not a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        log.warning(
            "could not send an audit checkpoint to syslog at %s; the lake copy was "
            "still written. Check OPSLAKE_AUDIT_SYSLOG",
            self.address,
        )


class Anchors:
    """The second places a checkpoint goes: the lake (read back by verify) and syslog."""

    def __init__(self, lake: Lake | None, syslog: str | None = None) -> None:
        self.lake = lake
        self.syslog = syslog
        self._handler: logging.Handler | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Anchors:
        """The installation's lake and ``OPSLAKE_AUDIT_SYSLOG``."""
        return cls(Lake.from_settings(settings), settings.audit_syslog)

    def write(self, checkpoint: Mapping[str, object]) -> None:
        """Add one checkpoint: a new lake object (never overwriting one) and a syslog line."""
        line = canonical(checkpoint)
        if self.lake is not None:
            stamp = datetime.fromisoformat(str(checkpoint["at"])).strftime("%Y%m%dT%H%M%S%fZ")
            # Unique per write: a log rolled back and written on reaches the same seq again.
            name = f"{int(checkpoint['seq']):012d}-{stamp}-{secrets.token_hex(4)}.json"
            self.lake.put_atomic(self.lake.path(CHECKPOINTS, name), [line.encode() + b"\n"])
        handler = self._syslog()
        if handler is not None:
            handler.handle(
                logging.LogRecord(
                    __name__,
                    logging.INFO,
                    __file__,
                    0,
                    f"{SYSLOG_TAG}: checkpoint {line}",
                    None,
                    None,
                )
            )

    def _syslog(self) -> logging.Handler | None:
        if self._handler is None and self.syslog:
            host, sep, port = self.syslog.rpartition(":")
            address: str | tuple[str, int] = (
                (host, int(port)) if sep and port.isdigit() else self.syslog
            )
            try:
                self._handler = _Syslog(address, facility=_Syslog.LOG_AUTHPRIV)
            except OSError as exc:  # no such socket, unknown host: try again next time
                log.warning(
                    "cannot reach syslog at %s (%s); audit checkpoints go to the lake "
                    "only. Check OPSLAKE_AUDIT_SYSLOG",
                    self.syslog,
                    exc,
                )
        return self._handler

    def read(self) -> Iterator[tuple[str, dict | None]]:
        """Every checkpoint in the lake, oldest ``seq`` first: (name, content or None)."""
        if self.lake is None:
            return
        for path in self.lake.list_files(self.lake.path(CHECKPOINTS)):
            try:
                content = json.loads(self.lake.read_bytes(path))
            except (UnicodeDecodeError, ValueError):
                content = None
            yield path.rpartition("/")[2], content if isinstance(content, dict) else None


class AuditLog:
    """The audit log kept in one directory of day files, keyed and checkpointed elsewhere.

    Without ``key`` (tests, and how logs were written before keys existed) entries are only
    chained, and no checkpoint is written.
    """

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], datetime] = _utcnow,
        key: bytes | None = None,
        anchors: Anchors | None = None,
        checkpoint_entries: int = 1000,
        checkpoint_seconds: float = 300,
    ) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._key = key
        self._anchors = anchors or Anchors(None)
        self._every = checkpoint_entries
        self._seconds = checkpoint_seconds
        # This process's last checkpoint (monotonic) and whether it wrote entries since.
        self._checkpointed = monotonic()
        self._unanchored = False
        self._cv = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        # The thread that writes for event loops (append_async): started once, then woken
        # for each busy spell; a thread started per spell cost more than the entries did.
        self._writer: threading.Thread | None = None
        self._writer_pid = 0
        self._kicked = False
        # The log's last entry as this object last wrote it: (day file, its inode and size
        # then, the entry). Valid while the file is unchanged (see _tail).
        self._wrote: tuple[Path, int, int, dict] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, create_key: bool = True) -> AuditLog:
        """The installation's audit log under ``state_dir/audit``, keyed and anchored.

        ``create_key`` false (for checking only) leaves a missing key file missing, so
        :meth:`verify` can say it is gone rather than fail every MAC against a new one.
        """
        key = key_file(
            settings.audit_key_path,
            KEY_BYTES,
            create=create_key,
            alternative="set OPSLAKE_AUDIT_KEY_FILE to a readable key file",
        )
        audit = cls(
            settings.state_dir / "audit",
            key=key,
            anchors=Anchors.from_settings(settings),
            checkpoint_entries=settings.audit_checkpoint_entries,
            checkpoint_seconds=settings.audit_checkpoint_seconds,
        )
        atexit.register(_close_at_exit, weakref.ref(audit))
        return audit

    def close(self) -> None:
        """Checkpoint the head if this process wrote entries since its last checkpoint."""
        if self._unanchored and self._key is not None:
            self._locked(self._checkpoint_locked)

    def append(
        self,
        *,
        who: str,
        role: str,
        action: str,
        status: int,
        key_id: str | None = None,
        params: Mapping[str, object] | None = None,
        rows: int = 0,
        client: str | None = None,
        **extra: object,
    ) -> dict:
        """Record one action durably and return the entry as written (with seq and hash).

        ``action`` is the route template (``GET /v1/metrics/{id}/data``), ``params`` the
        request's parameters, ``status`` the HTTP status and ``rows`` the rows returned;
        ``extra`` fields are stored as given. Values that JSON cannot hold are stored as text.
        """
        item = _pending(
            who=who,
            role=role,
            key_id=key_id,
            action=action,
            params=params,
            status=status,
            rows=rows,
            client=client,
            **extra,
        )
        with self._cv:
            self._queue.append(item)
            while self._writing and not item.done:
                self._cv.wait()
            if not item.done:
                self._writing = True
        if not item.done:
            self._lead()
        if item.error is not None:
            raise item.error
        return item.entry  # type: ignore[return-value]

    async def append_async(self, **fields: Any) -> dict:
        """:meth:`append` for an event loop: waits for the entry's batch without a thread.

        The batches are written by this log's writer thread, woken when the log goes from
        idle to busy, so no request ends up writing everyone else's entries under sustained
        load; the callers of one batch are settled with one call into their loop.
        """
        item = _pending(**fields)
        item.loop = asyncio.get_running_loop()
        item.durable = durable = item.loop.create_future()
        with self._cv:
            self._queue.append(item)
            if not self._writing:
                self._writing = self._kicked = True
                if (
                    self._writer is None
                    or self._writer_pid != os.getpid()
                    or not self._writer.is_alive()
                ):
                    self._writer_pid = os.getpid()
                    self._writer = threading.Thread(
                        target=self._write_forever, name="opslake-audit", daemon=True
                    )
                    self._writer.start()
                else:
                    self._cv.notify_all()
        await durable
        if item.error is not None:
            raise item.error
        return item.entry  # type: ignore[return-value]

    def _write_forever(self) -> None:
        """The writer thread: leads every busy spell :meth:`append_async` kicks off.

        Between spells it checkpoints entries left unanchored for ``checkpoint_seconds``.
        """
        while True:
            with self._cv:
                while not self._kicked:
                    wait = (
                        self._seconds - (monotonic() - self._checkpointed)
                        if self._unanchored and self._key is not None
                        else None
                    )
                    if (wait is not None and wait <= 0) or not self._cv.wait(wait):
                        break
                kicked, self._kicked = self._kicked, False
            if kicked:
                self._lead()
            else:
                self._checkpoint_quietly()

    def _lead(self) -> None:
        """Write what is queued, batch after batch, until nothing is (group commit).

        Requests that arrive while a batch is being written wait for the next one, and every
        batch costs one lock, one read of the last entry and one fsync however many entries
        it holds: under load the log keeps up without any request answering before its entry
        is on disk.
        """
        while True:
            with self._cv:
                batch, self._queue = self._queue, []
                if not batch:
                    self._writing = False
                    self._cv.notify_all()
                    return
            try:
                entries = self._write_batch([b.fields for b in batch])
            except OSError as exc:
                what = f"the audit log in {self.directory}"
                error = (
                    space_error(what, exc)
                    if refused_write(exc)
                    else StorageError(
                        f"cannot write {what} ({exc}); make sure OPSLAKE_STATE_DIR is writable "
                        "and retry: nothing was half-written"
                    )
                )
                for b in batch:
                    b.error = error
            else:
                for b, entry in zip(batch, entries, strict=True):
                    b.entry = entry
            with self._cv:
                for b in batch:
                    b.done = True
                self._cv.notify_all()
            waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
            for b in batch:
                if b.loop is not None:
                    waiting.setdefault(b.loop, []).append(b.durable)
            for loop, durables in waiting.items():
                try:
                    loop.call_soon_threadsafe(_settle, durables)
                except RuntimeError:  # the loop closed meanwhile: nobody waits any more
                    pass

    def _locked(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` holding the log: this process's lock, then the directory's flock."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _PROCESS_LOCK, open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return work()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write_batch(self, batch: list[dict]) -> list[dict]:
        return self._locked(lambda: self._append_locked(batch))

    def _append_locked(self, batch: list[dict]) -> list[dict]:
        now = self._clock().astimezone(UTC)
        last, last_day, whole = self._tail(now.date().isoformat())
        # The first keyed entry of a log is checkpointed at once, so that a keyed log
        # always has a checkpoint to be held against.
        first_keyed = self._key is not None and (last is None or "mac" not in last)
        # A clock stepped back across midnight must not put an entry before its predecessor.
        day = max(now.date().isoformat(), last_day or "")
        entries, lines = [], []
        for fields in batch:
            entry = {
                "seq": int(last["seq"]) + 1 if last else 1,
                "at": now.isoformat(timespec="milliseconds"),
                **fields,
                "prev": str(last["hash"]) if last else GENESIS,
            }
            # The entry is serialised once for its MAC and its hash.
            signed = signed_text(entry)
            if self._key is not None:
                entry["mac"] = entry_mac(self._key, entry, signed)
            entry["hash"] = entry_hash(entry, signed)
            entries.append(entry)
            lines.append(canonical(entry) + "\n")
            last = entry
        path = self.directory / f"{day}.jsonl"
        new_file = not path.exists()
        data = "".join(lines).encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            opened = os.fstat(fd)
            size = opened.st_size
            if size and not whole and not _ends_with_newline(path):
                # A crash tore the last line: keep it as evidence and start on a fresh one.
                data = b"\n" + data
            try:
                _write_all(fd, data)
                os.fsync(fd)
            except BaseException:
                # Whole or nothing: a torn entry left behind would fail every later verify.
                if new_file:
                    path.unlink()
                else:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                raise
        finally:
            os.close(fd)
        self._wrote = (path, opened.st_ino, size + len(data), entries[-1])
        if new_file:
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        if self._key is not None:
            self._unanchored = True
            crossed = entries[-1]["seq"] // self._every > (entries[0]["seq"] - 1) // self._every
            if first_keyed or crossed or monotonic() - self._checkpointed >= self._seconds:
                self._checkpoint_locked(entries[-1])
        return entries

    def _checkpoint_quietly(self) -> None:
        """Checkpoint from the writer thread; a failure is logged, the next one retries."""
        if not self._unanchored:  # another thread checkpointed meanwhile
            return
        try:
            self._locked(self._checkpoint_locked)
        except (OSError, OpsLakeError) as exc:
            log.error("cannot checkpoint the audit log in %s: %s", self.directory, exc)

    def _checkpoint_locked(self, head: dict | None = None) -> None:
        """Sign the head (``head``, else the last entry) and write it to the anchors.

        The entries are durable already: a checkpoint that cannot be written is logged as an
        error and retried at the next occasion rather than failing the append.
        """
        assert self._key is not None
        head = head or self._last_entry()[0]
        self._checkpointed = monotonic()
        if head is None:
            return
        checkpoint: dict[str, object] = {
            "seq": head["seq"],
            "head": head["hash"],
            "key": key_id(self._key),
            "at": self._clock().astimezone(UTC).isoformat(timespec="microseconds"),
        }
        checkpoint["mac"] = checkpoint_mac(self._key, checkpoint)
        try:
            self._anchors.write(checkpoint)
        except (OSError, OpsLakeError) as exc:
            log.error(
                "cannot write the audit checkpoint at seq %s to the lake (%s); it is "
                "retried at the next one. Check OPSLAKE_HOME",
                head["seq"],
                exc,
            )
            return
        self._unanchored = False

    def _tail(self, today: str) -> tuple[dict | None, str | None, bool]:
        """(last entry, its day, whether its file ends with it) for an append of ``today``.

        Held under the log's lock. The entry this object wrote last is still the last while
        its day file is the same file of the same size (the log is append-only: another
        process's entry would have grown it), today is not past that day, and the next day's
        file does not exist (another process's clock, or a clock stepped back, could have
        begun it). Else the directory is read (:meth:`_last_entry`), which costs more as the
        day files add up: 1.8 ms a batch at 400 of them, against 0.04 ms at one.
        """
        if self._wrote is not None:
            path, inode, size, entry = self._wrote
            day = path.stem
            following = self.directory / f"{date.fromisoformat(day) + timedelta(days=1)}.jsonl"
            with contextlib.suppress(OSError):
                stat = path.stat()
                if (
                    today <= day
                    and (stat.st_ino, stat.st_size) == (inode, size)
                    and not following.exists()
                ):
                    return entry, day, True
        return *self._last_entry(), False

    def _last_entry(self) -> tuple[dict | None, str | None]:
        for path in reversed(self._day_files()):
            for raw in _lines_backwards(path):
                entry = _parse(raw)
                if entry is not None:
                    return entry, path.stem
        return None, None

    def _day_files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _DAY_FILE.match(p.name))

    def read(self, day: date | str | None = None) -> Iterator[dict]:
        """Entries in order, of one UTC day or of all; lines that do not parse are skipped.

        Skipping keeps a reader working while another process is mid-append; use
        :meth:`verify` to learn whether anything was damaged.
        """
        if day is None:
            paths = self._day_files()
        else:
            try:
                name = date.fromisoformat(str(day)[:10]).isoformat()
            except ValueError as exc:
                raise InputError(f"audit day {day!r} is not a date; use YYYY-MM-DD") from exc
            path = self.directory / f"{name}.jsonl"
            paths = [path] if path.exists() else []
        for path in paths:
            with open(path, "rb") as f:
                for raw in f:
                    entry = _parse(raw)
                    if entry is not None:
                        yield entry

    def verify(self, known: Iterable[tuple[int, str]] = ()) -> VerifyResult:
        """Check every hash, seq, link and MAC, and the log against its checkpoints.

        ``known``: (seq, head) pairs kept elsewhere (the syslog copies), held against the log
        like the lake's checkpoints. Each problem names its file and line, or the checkpoint
        it contradicts.
        """
        problems: list[str] = []
        checkpoints = self._checkpoints(problems) + [
            (f"given as {seq}:{head}", {"seq": seq, "head": head}) for seq, head in known
        ]
        wanted = {int(c["seq"]) for _, c in checkpoints}
        at_checkpoints: dict[int, str] = {}  # seq -> hash the log holds there
        # Incomplete lines since the last entry, and those a crash left (no gap across them).
        suspects: list[str] = []
        torn: list[str] = []
        recent: OrderedDict[int, str] = OrderedDict()  # seq -> hash of entries seen lately
        entries, max_seq, last_hash, legacy, keyed = 0, 0, GENESIS, 0, False
        for path in self._day_files():
            with open(path, "rb") as f:
                for number, raw in enumerate(f, start=1):
                    where = f"{path.name} line {number}"
                    entry = _parse(raw)
                    if entry is None:
                        if raw.strip():
                            suspects.append(
                                f"{where}: not a complete audit entry (truncated or corrupted)"
                            )
                            problems.append(suspects[-1])
                        continue
                    entries += 1
                    seq, claimed = entry["seq"], entry["hash"]
                    if seq == max_seq + 1:
                        torn += suspects
                    suspects = []
                    signed = signed_text(entry)
                    if entry_hash(entry, signed) != claimed:
                        problems.append(
                            f"{where}: hash mismatch for seq {seq}: the entry was modified"
                        )
                    if "mac" in entry:
                        keyed = True
                        if self._key is not None and not hmac.compare_digest(
                            entry_mac(self._key, entry, signed), str(entry["mac"])
                        ):
                            problems.append(
                                f"{where}: HMAC mismatch for seq {seq}: the entry "
                                "was not written with the audit key (forged, or "
                                "the log rewritten)"
                            )
                    elif keyed:
                        problems.append(
                            f"{where}: seq {seq} has no HMAC although entries "
                            "before it have: it was written without the audit key"
                        )
                    else:
                        legacy += 1
                    if seq <= max_seq:
                        problems.append(
                            f"{where}: seq {seq} comes after seq {max_seq}: "
                            "entries were reordered, duplicated or inserted"
                        )
                    elif seq > max_seq + 1:
                        missing = (
                            f"seq {max_seq + 1}"
                            if seq == max_seq + 2
                            else f"seq {max_seq + 1}..{seq - 1}"
                        )
                        problems.append(
                            f"{where}: {missing} missing before seq {seq}: "
                            "entries were deleted or moved"
                        )
                    expected_prev = GENESIS if seq == 1 else recent.get(seq - 1)
                    if expected_prev is not None and entry["prev"] != expected_prev:
                        problems.append(
                            f"{where}: broken link: prev of seq {seq} is not the "
                            f"hash of seq {seq - 1}: an entry before it was "
                            "modified, inserted or deleted"
                        )
                    recent.setdefault(seq, claimed)
                    if len(recent) > _WINDOW:
                        recent.popitem(last=False)
                    if seq in wanted:
                        at_checkpoints.setdefault(seq, claimed)
                    if seq > max_seq:
                        max_seq, last_hash = seq, claimed
        torn += suspects  # at the very end: what a crash in the last append leaves
        if keyed and self._key is None:
            problems.append(
                "entries carry HMACs but no audit key was loaded: restore the key "
                "file (OPSLAKE_AUDIT_KEY_FILE, by default <state dir>/keys/"
                "audit.key) and verify again"
            )
        # With no lake to look in (a log opened without anchors) no checkpoint is expected.
        problems += _against_checkpoints(
            checkpoints,
            at_checkpoints,
            max_seq,
            last_hash,
            keyed and self._anchors.lake is not None,
        )
        latest = max((int(c["seq"]) for _, c in checkpoints), default=0)
        return VerifyResult(
            len(problems) == len(torn),
            entries,
            problems,
            max_seq,
            last_hash,
            torn,
            legacy,
            len(checkpoints),
            latest,
        )

    def _checkpoints(self, problems: list[str]) -> list[tuple[str, dict]]:
        """The checkpoints whose MAC holds; each other one is added to ``problems``."""
        found = []
        for name, checkpoint in self._anchors.read():
            if (
                checkpoint is None
                or type(checkpoint.get("seq")) is not int
                or not isinstance(checkpoint.get("head"), str)
            ):
                problems.append(f"checkpoint {name}: not a checkpoint (damaged or planted)")
            elif self._key is None:
                problems.append(
                    f"checkpoint {name}: cannot be checked without the audit key; "
                    "restore the key file (OPSLAKE_AUDIT_KEY_FILE)"
                )
            elif not hmac.compare_digest(
                checkpoint_mac(self._key, checkpoint), str(checkpoint.get("mac"))
            ):
                other = checkpoint.get("key") != key_id(self._key)
                problems.append(
                    f"checkpoint {name}: HMAC mismatch: "
                    + (
                        f"signed with audit key {checkpoint.get('key')}, not the loaded "
                        f"{key_id(self._key)}; set OPSLAKE_AUDIT_KEY_FILE to that key"
                        if other
                        else "not written with the audit key (forged)"
                    )
                )
            else:
                found.append((name, checkpoint))
        return found


def _against_checkpoints(
    checkpoints: list[tuple[str, dict]],
    at_checkpoints: dict[int, str],
    max_seq: int,
    last_hash: str,
    expected: bool,
) -> list[str]:
    """What the log's entries contradict in its signed checkpoints (``expected``: some)."""
    if not checkpoints:
        return (
            [
                (
                    "the log has keyed entries but no checkpoint was found in the lake "
                    f"({CHECKPOINTS}/): the checkpoints were deleted, or OPSLAKE_HOME names "
                    "another lake"
                )
            ]
            if expected
            else []
        )
    problems = []
    for name, c in checkpoints:
        if c["seq"] <= max_seq and at_checkpoints.get(c["seq"]) != c["head"]:
            problems.append(
                f"checkpoint {name}{_made(c)}: the log's entry seq {c['seq']} is "
                "not the one checkpointed: the log was rewritten since"
            )
    name, latest = max(checkpoints, key=lambda nc: (nc[1]["seq"], str(nc[1].get("at"))))
    if max_seq < latest["seq"]:
        missing = (
            f"seq {latest['seq']}"
            if latest["seq"] == max_seq + 1
            else f"seq {max_seq + 1}..{latest['seq']}"
        )
        older = [c for _, c in checkpoints if c["seq"] == max_seq and c["head"] == last_hash]
        if older:
            # Cutting the end back to a checkpointed head looks the same as restoring a copy.
            problems.append(
                f"the log was rolled back (or cut) to an older checkpointed state: "
                f"it ends at seq {max_seq}, checkpointed{_made(older[0])}, but "
                f"checkpoint {name}{_made(latest)} recorded seq {latest['seq']} "
                f"later: {missing} missing; restore the newer log from backup and "
                "keep this one as evidence"
            )
        else:
            problems.append(
                f"the log was cut: it ends at seq {max_seq} but checkpoint {name}"
                f"{_made(latest)} recorded seq {latest['seq']}: {missing} missing "
                "at the end; restore them from backup"
            )
    return problems


def _made(checkpoint: Mapping[str, object]) -> str:
    return f" ({checkpoint['at']})" if checkpoint.get("at") else ""


def _close_at_exit(ref: weakref.ref[AuditLog]) -> None:
    """Checkpoint a log's unanchored entries as the interpreter exits, if it still exists."""
    audit = ref()
    if audit is not None:
        try:
            audit.close()
        except (OSError, OpsLakeError) as exc:
            log.error("cannot checkpoint the audit log in %s at exit: %s", audit.directory, exc)


def _parse(raw: bytes) -> dict | None:
    """The entry on one line, or None when the line is not a whole audit entry."""
    try:
        entry = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    if not (
        isinstance(entry, dict)
        and type(entry.get("seq")) is int
        and isinstance(entry.get("hash"), str)
        and isinstance(entry.get("prev"), str)
    ):
        return None
    return entry


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: one ``os.write`` may write less and return how much."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """Lines of ``path`` from the last to the first, reading only as far back as needed."""
    with open(path, "rb") as f:
        position = f.seek(0, os.SEEK_END)
        pending = b""
        while position > 0:
            step = min(_TAIL_CHUNK, position)
            position -= step
            f.seek(position)
            lines = (f.read(step) + pending).split(b"\n")
            pending = lines.pop(0)
            yield from (line for line in reversed(lines) if line.strip())
        if pending.strip():
            yield pending
