"""Backup and restore of an installation: its state, its lake, its keys sealed (S6.10d).

A backup is one gzip tar whose first member, ``backup.json``, is its manifest: format
version, when, OpsLake's version, the source home and state directory, every other member's
path, size, mode and sha256, the KDF parameters, the sealed keys, and an HMAC-SM3 over all
of it. Members are ``state/<path under state_dir>`` and ``lake/<path under the lake root>``;
when the lake and the state share one directory (the default) the whole of it is ``state/``.

The state directory is taken whole except what is rebuilt or transient (:data:`SKIPPED`);
every SQLite database in it (identity store, subscriptions, Superset's metadata, Dagster's
instance) is copied through SQLite's online backup API, so a live service's WAL is included
consistently. The audit log is copied under its appenders' lock, after the lake, so the
lake's audit checkpoints never run ahead of the copied log. A local lake's files are taken
(hard-linked into a staging directory first: lake objects are replaced by rename, never
rewritten, so the link is a consistent snapshot); with ``lake_mode="manifest"``, the choice
for an S3 lake whose own object versioning is the copy, only each object's path, size and
sha256 are recorded and checked against the lake later.

Keys are never stored in clear: the SM4 data key (and previous ones) and the audit HMAC key
are sealed with SM4-GCM under a key derived from an operator passphrase by argon2id (random
salt, parameters recorded). The same derivation gives the manifest's HMAC key, so an edited
manifest, a changed member and a wrong passphrase are each detected and named.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import secrets
import shutil
import sqlite3
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import pyarrow.fs as pafs
from argon2.exceptions import HashingError
from argon2.low_level import ARGON2_VERSION, Type, hash_secret_raw

from opslake.crypto import data_key, hmac_sm3, key_file
from opslake.errors import BackupError, OpsLakeError
from opslake.lake.state_db import redacted
from opslake.lake.storage import STAGING, Lake
from opslake.security.audit import canonical
from opslake.security.crypto import FieldCipher
from opslake.settings import Settings

FORMAT = "opslake-backup"
FORMAT_VERSION = 1
MANIFEST = "backup.json"
LakeMode = Literal["files", "manifest"]
#: Top-level entries of the state directory never backed up: rebuilt from the lake
#: (the warehouse and its build files), transient (spills, staging, the local cluster's
#: processes, logs), the backups themselves, and the keys, which are sealed instead.
SKIPPED = (
    "warehouse.duckdb*",
    ".warehouse.duckdb.*",
    "duckdb-spill",
    "opslake-sort-*",
    "cluster",
    "logs",
    "backups",
    "keys",
    STAGING,
)
#: File names skipped anywhere: locks, process ids, and SQLite's side files (the online
#: backup API folds a WAL into the copy).
SKIPPED_FILES = ("*.lock", "*.pid", "*-wal", "*-shm", "*-journal")
#: Directories whose writers hold ``<dir>/.lock`` while appending (the audit log).
LOCKED_DIRS = ("audit",)
MIN_PASSPHRASE = 12
#: argon2id at RFC 9106's second recommended option (64 MiB, 3 passes); 48 bytes out: the
#: SM4 sealing key (16) and the manifest's HMAC-SM3 key (32).
KDF_DEFAULTS = {"time_cost": 3, "memory_cost": 65536, "parallelism": 4, "hash_len": 48}
# Read before the manifest can be authenticated: an edited one must not make verify take
# all memory or run for days.
_KDF_LIMITS = {"time_cost": 64, "memory_cost": 2**20, "parallelism": 64}
_SQLITE_MAGIC = b"SQLite format 3\x00"
_CHUNK = 1 << 20
_BACKUP_NAME = "opslake-{stamp}.tar.gz"
_BACKUP_GLOB = "opslake-[0-9]*T[0-9]*Z.tar.gz"


@dataclass(frozen=True)
class Created:
    """What :func:`create` wrote."""

    path: Path
    entries: int
    size: int
    lake: LakeMode
    lake_objects: int
    #: The database the state stores live in (password hidden), which the archive does not
    #: hold: it must be backed up with the database's own tools. None on SQLite.
    database: str | None = None

    @property
    def warning(self) -> str | None:
        """What an operator must be told this archive lacks, if anything."""
        if self.database is None:
            return None
        return (
            f"the state stores (identity, subscriptions, Dagster, Superset…) are in {self.database}"
            " (OPSLAKE_DATABASE_URL), not in this archive: back that database up with pg_dump "
            "or the database's own tool (docs/state-store.md#backups)"
        )


@dataclass(frozen=True)
class Verified:
    """An archive whose manifest, keys and every member checked out."""

    manifest: dict[str, Any]
    keys: dict[str, str]


@dataclass(frozen=True)
class Restored:
    """What :func:`restore` put where."""

    home: Path
    entries: int
    keys: list[Path]
    manifest: dict[str, Any]


def passphrase_from_env(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """The passphrase from the variable ``settings.backup_passphrase_env`` names, if set."""
    return settings.or_from(environ).backup_passphrase


def create(
    settings: Settings,
    output: Path,
    passphrase: str,
    *,
    lake_mode: LakeMode | None = None,
    environ: Mapping[str, str] | None = None,
) -> Created:
    """Write a backup of ``settings``' installation to ``output`` (atomically, mode 600).

    ``lake_mode`` defaults to ``files`` for a local lake and ``manifest`` for S3.
    """
    _check_passphrase(passphrase)
    lake = Lake.from_settings(settings)
    mode: LakeMode = lake_mode or ("manifest" if settings.is_object_store else "files")
    state_dir = settings.state_dir
    shared = not settings.is_object_store and Path(settings.home) == state_dir
    if shared and mode == "manifest":
        raise BackupError(
            f"the lake shares the state directory {state_dir}, so it cannot be "
            "left out: drop --lake manifest (a manifest-only backup is for a "
            "lake kept apart, on S3 or outside OPSLAKE_STATE_DIR)"
        )
    output = output.expanduser().resolve()
    keys = _collect_keys(settings, environ)
    salt = secrets.token_bytes(16)
    kdf = {"name": "argon2id", "version": ARGON2_VERSION, "salt": salt.hex(), **KDF_DEFAULTS}
    seal_key, mac_key = _derive(passphrase, kdf)
    cipher = FieldCipher(seal_key)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "opslake_version": importlib.metadata.version("opslake"),
        "source": {
            "home": settings.home,
            "state_dir": str(state_dir),
            "audit_key_file": str(settings.audit_key_path),
            # Recorded so a restore knows the stores were elsewhere, not lost.
            "database": redacted(settings.database_url) if settings.database_url else None,
        },
        "lake": mode,
        "kdf": kdf,
        "seal": {"cipher": "SM4-GCM", "key_id": cipher.key_id},
        "mac": "HMAC-SM3",
        "keys": {name: cipher.encrypt(value, _key_context(name)) for name, value in keys.items()},
    }
    settings.backups_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=settings.backups_dir))
    try:
        staged: list[tuple[str, Path]] = []
        lake_objects: list[dict[str, Any]] = []
        # The audit key may be configured anywhere, even inside these trees: sealed, never copied.
        skipped = [settings.audit_key_path]
        # The lake before the state: audit checkpoints in the lake then never run ahead of
        # the copy of the log, which `opslake audit verify` would report as a cut log.
        if not shared:
            inner = [state_dir] if lake.local and _within(state_dir, Path(settings.home)) else []
            for rel, info in _lake_files(lake, [*skipped, *inner]):
                if mode == "manifest":
                    lake_objects.append(_describe_object(lake, rel, info))
                elif (frozen := _stage_object(lake, rel, staging)) is not None:
                    staged.append((f"lake/{rel}", frozen))
        if not settings.is_object_store and _within(Path(settings.home), state_dir):
            skipped.append(Path(settings.home))
        staged += [
            (f"state/{rel}", path) for rel, path in _stage_state(state_dir, staging, skipped)
        ]
        manifest["entries"] = [_describe(name, path) for name, path in staged]
        if mode == "manifest":
            manifest["lake_objects"] = lake_objects
        manifest["hmac"] = hmac_sm3(mac_key, canonical(manifest).encode())
        total = _write_archive(output, manifest, staged)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Created(
        output, len(staged), total, mode, len(lake_objects), manifest["source"]["database"]
    )


def verify(archive: Path, passphrase: str) -> Verified:
    """Check the manifest's HMAC, the sealed keys and every member; raise naming each problem.

    A manifest-only backup's lake is checked apart, by :func:`check_lake`.
    """
    with _open(archive) as tar:
        manifest, keys = _open_manifest(tar, passphrase)
        problems = _check_members(tar, manifest, sink=None)
    if problems:
        raise BackupError(_problems(archive, problems))
    return Verified(manifest, keys)


def check_lake(manifest: Mapping[str, Any], lake: Lake) -> list[str]:
    """Objects of a manifest-only backup that ``lake`` lacks or holds changed."""
    problems = []
    for obj in manifest.get("lake_objects", []):
        path = lake.path(obj["path"])
        info = lake.fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            problems.append(f"lake object {obj['path']} is missing")
        elif info.size != obj["size"] or _object_sha256(lake, path) != obj["sha256"]:
            problems.append(f"lake object {obj['path']} changed since the backup")
    return problems


def restore(archive: Path, home: Path, passphrase: str) -> Restored:
    """Restore ``archive`` into the new or empty ``home`` (lake and state), keys mode 600."""
    home = home.expanduser().resolve()
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise BackupError(
            f"{home} is not empty; restore into a new or empty directory "
            "(e.g. --home /srv/opslake-restored), then point OPSLAKE_HOME at it: "
            "a restore never overwrites an installation"
        )
    created = not home.exists()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with _open(archive) as tar:
            manifest, keys = _open_manifest(tar, passphrase)
            problems = _check_members(tar, manifest, sink=home)
        if problems:
            raise BackupError(_problems(archive, problems) + f"; nothing was kept in {home}")
        written = [_write_key(home / "keys" / name, value) for name, value in keys.items()]
    except BaseException:
        # Half a restore must not pass for an installation.
        _empty(home, remove=created)
        raise
    return Restored(home, len(manifest["entries"]), written, manifest)


def scheduled(settings: Settings, passphrase: str) -> tuple[Created, list[Path]]:
    """One backup into ``settings.backups_dir``, verified, then all but the newest kept."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    made = create(settings, settings.backups_dir / _BACKUP_NAME.format(stamp=stamp), passphrase)
    try:
        verify(made.path, passphrase)
    except BackupError:
        # An archive that does not verify never displaces a good one.
        made.path.unlink(missing_ok=True)
        raise
    return made, prune(settings.backups_dir, settings.backup_keep)


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups (by their UTC timestamp names) in ``directory``."""
    backups = sorted(directory.glob(_BACKUP_GLOB), reverse=True)
    for old in backups[keep:]:
        old.unlink(missing_ok=True)
    return backups[keep:]


# -- keys and the manifest --------------------------------------------------------------
def _check_passphrase(passphrase: str) -> None:
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(
            f"the backup passphrase has {len(passphrase)} characters; use at "
            f"least {MIN_PASSPHRASE} (a few random words)"
        )


def _collect_keys(settings: Settings, environ: Mapping[str, str] | None) -> dict[str, str]:
    """Every key the installation needs, as hex: the data key(s) and the audit key."""
    given = settings.or_from(environ)
    keys: dict[str, str] = {}
    data = (
        data_key(settings, environ).hex()
        if given.data_key
        else _key_hex(settings.state_dir / "keys" / "data.key", 16)
    )
    if data:
        keys["data.key"] = data
    if given.data_key_previous:
        keys["data.key.previous"] = given.data_key_previous
    audit = _key_hex(settings.audit_key_path, 32)
    if audit:
        keys["audit.key"] = audit
    return keys


def _key_hex(path: Path, size: int) -> str | None:
    # key_file checks the size and the mode; a missing key was never used, so none is made.
    key = key_file(path, size, create=False)
    return key.hex() if key is not None else None


def _key_context(name: str) -> str:
    return f"opslake-backup:{name}"


def _derive(passphrase: str, kdf: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The SM4 sealing key and the HMAC key derived from ``passphrase`` as ``kdf`` records."""
    try:
        if kdf["name"] != "argon2id":
            raise ValueError(f"KDF {kdf['name']!r}")
        for name, limit in _KDF_LIMITS.items():
            if not 0 < int(kdf[name]) <= limit:
                raise ValueError(f"{name} {kdf[name]} beyond {limit}")
        raw = hash_secret_raw(
            passphrase.encode(),
            bytes.fromhex(kdf["salt"]),
            time_cost=int(kdf["time_cost"]),
            memory_cost=int(kdf["memory_cost"]),
            parallelism=int(kdf["parallelism"]),
            hash_len=48,
            type=Type.ID,
            version=int(kdf["version"]),
        )
    except (KeyError, TypeError, ValueError, HashingError) as exc:
        raise BackupError(
            f"backup.json's KDF parameters are not usable ({exc}); the manifest "
            "was edited or is not from OpsLake: use another backup"
        ) from exc
    return raw[:16], raw[16:]


def _open_manifest(tar: tarfile.TarFile, passphrase: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The manifest, authenticated, and the keys it seals, opened."""
    first = tar.next()
    if first is None or first.name != MANIFEST:
        raise BackupError(f"{tar.name} does not start with {MANIFEST}: not an OpsLake backup")
    handle = tar.extractfile(first)
    try:
        manifest = json.loads(handle.read() if handle else b"")
        if manifest["format"] != FORMAT or manifest["format_version"] != FORMAT_VERSION:
            raise ValueError(f"format {manifest['format']} {manifest['format_version']}")
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(
            f"{MANIFEST} in {tar.name} is not a version-{FORMAT_VERSION} OpsLake "
            f"manifest ({exc}); use a backup made by this OpsLake"
        ) from exc
    seal_key, mac_key = _derive(passphrase, manifest.get("kdf", {}))
    cipher = FieldCipher(seal_key)
    if cipher.key_id != manifest.get("seal", {}).get("key_id"):
        raise BackupError(
            f"wrong passphrase for {tar.name} (or its KDF parameters were edited): "
            "give the passphrase it was made with"
        )
    unsigned = {k: v for k, v in manifest.items() if k != "hmac"}
    if hmac_sm3(mac_key, canonical(unsigned).encode()) != manifest.get("hmac"):
        raise BackupError(
            f"{MANIFEST} in {tar.name} was edited after the backup was made "
            "(its HMAC does not match): do not restore it; use another backup"
        )
    try:
        keys = {
            name: cipher.decrypt(token, _key_context(name))
            for name, token in manifest["keys"].items()
        }
    except OpsLakeError as exc:
        raise BackupError(
            f"a sealed key in {tar.name} does not open ({exc}); use another backup"
        ) from exc
    return manifest, keys


def _check_members(
    tar: tarfile.TarFile, manifest: Mapping[str, Any], sink: Path | None
) -> list[str]:
    """Problems of the members against the manifest; each good one written under ``sink``."""
    expected = {e["path"]: e for e in manifest["entries"]}
    problems = []
    # next(), not iteration: iterating restarts at the manifest, already read.
    while (member := tar.next()) is not None:
        entry = expected.pop(member.name, None)
        if entry is None or not member.isfile():
            problems.append(f"{member.name} is in the archive but not in its manifest")
            continue
        target = _target(sink, member.name) if sink is not None else None
        digest, size = _copy(tar.extractfile(member), target, entry.get("mode", 0o600))
        if (digest, size) != (entry["sha256"], entry["size"]):
            problems.append(
                f"{member.name} does not match its sha256 in the manifest (altered or damaged)"
            )
    problems += [f"{name} is in the manifest but missing from the archive" for name in expected]
    return problems


def _target(home: Path, name: str) -> Path:
    """Where member ``name`` goes under ``home``: both trees restore to the new home."""
    parts = PurePosixPath(name).parts
    if len(parts) < 2 or parts[0] not in ("lake", "state") or ".." in parts:
        raise BackupError(
            f"member {name!r} has no place in an installation; the archive is not from OpsLake"
        )
    return home.joinpath(*parts[1:])


def _problems(archive: Path, problems: list[str]) -> str:
    shown = "; ".join(problems[:10]) + (
        f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
    )
    return f"{archive} failed verification: {shown}. Do not restore it; use another backup"


# -- reading the installation -------------------------------------------------------------
def _within(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _lake_files(lake: Lake, skipped: list[Path]) -> Iterator[tuple[str, pafs.FileInfo]]:
    """Every lake object but staged writes and what lies under ``skipped`` (local paths)."""
    sel = pafs.FileSelector(lake.root, allow_not_found=True, recursive=True)
    for info in sorted(lake.fs.get_file_info(sel), key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(lake.root) + 1 :]
        if rel.split("/", 1)[0] == STAGING or (lake.local and _under(Path(info.path), skipped)):
            continue
        yield rel, info


def _describe_object(lake: Lake, rel: str, info: pafs.FileInfo) -> dict[str, Any]:
    return {"path": rel, "size": info.size, "sha256": _object_sha256(lake, info.path)}


def _object_sha256(lake: Lake, path: str) -> str:
    digest = hashlib.sha256()
    with lake.fs.open_input_stream(path) as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stage_object(lake: Lake, rel: str, staging: Path) -> Path | None:
    """A frozen copy of one lake object (a hard link locally when it can); None if it is gone.

    An object deleted since it was listed was replaced or pruned by a writer: the backup
    holds the lake as it was listed, less that object.
    """
    target = staging / "lake" / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if lake.local:
            # Another file system refuses the link: copied below (a vanished object fails there).
            with contextlib.suppress(OSError):
                os.link(lake.path(rel), target)
                return target
        with lake.fs.open_input_stream(lake.path(rel)) as stream, open(target, "wb") as out:
            shutil.copyfileobj(stream, out, _CHUNK)
    except FileNotFoundError:
        return None
    return target


def _stage_state(state_dir: Path, staging: Path, skipped: list[Path]) -> Iterator[tuple[str, Path]]:
    """Consistent copies of the state directory's files, the audit log's last."""
    if not state_dir.is_dir():
        return
    tops = sorted(
        (
            p
            for p in state_dir.iterdir()
            if not any(fnmatch.fnmatch(p.name, pat) for pat in SKIPPED)
        ),
        key=lambda p: (p.name in LOCKED_DIRS, p.name),
    )
    for top in tops:
        with _held(top / ".lock" if top.name in LOCKED_DIRS else None):
            for source in _files(top):
                if _under(source, skipped):
                    continue
                rel = source.relative_to(state_dir).as_posix()
                target = staging / "state" / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    _copy_file(source, target)
                except FileNotFoundError:
                    continue  # removed since listed: a temporary file of a running service
                yield rel, target


def _files(top: Path) -> Iterator[Path]:
    if top.is_file():
        candidates: Iterator[Path] = iter([top])
    else:
        candidates = (p for p in sorted(top.rglob("*")) if p.is_file())
    for path in candidates:
        if not path.is_symlink() and not any(
            fnmatch.fnmatch(path.name, pat) for pat in SKIPPED_FILES
        ):
            yield path


@contextlib.contextmanager
def _held(lock: Path | None) -> Iterator[None]:
    """Hold the exclusive ``flock`` the directory's appenders take, if it has one."""
    if lock is None or not lock.exists():
        yield
        return
    with open(lock, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_file(source: Path, target: Path) -> None:
    """Copy one state file; an SQLite database through the online backup API."""
    with open(source, "rb") as head:
        is_sqlite = head.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    if not is_sqlite:
        shutil.copyfile(source, target)
    else:
        try:
            src = sqlite3.connect(source, timeout=30)
            dst = sqlite3.connect(target)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
        except sqlite3.Error as exc:
            raise BackupError(
                f"cannot copy the SQLite database {source} ({exc}); check it "
                f"with: sqlite3 {source} 'PRAGMA integrity_check'"
            ) from exc
    shutil.copymode(source, target)


def _describe(name: str, path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    stat = path.stat()
    return {
        "path": name,
        "size": stat.st_size,
        "sha256": digest.hexdigest(),
        "mode": stat.st_mode & 0o777,
    }


# -- the archive ----------------------------------------------------------------------------
def _write_archive(
    output: Path, manifest: Mapping[str, Any], staged: list[tuple[str, Path]]
) -> int:
    """The tar (manifest first), written beside ``output`` and renamed into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                body = json.dumps(manifest, indent=1, ensure_ascii=False).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode, info.mtime = (
                    len(body),
                    0o600,
                    int(datetime.now(UTC).timestamp()),
                )
                tar.addfile(info, io.BytesIO(body))
                for name, path in staged:
                    # Not gettarinfo: it would store a lake file hard-linked twice as a link.
                    stat = path.stat()
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = (
                        stat.st_size,
                        stat.st_mode & 0o777,
                        int(stat.st_mtime),
                    )
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return output.stat().st_size


@contextlib.contextmanager
def _open(archive: Path) -> Iterator[tarfile.TarFile]:
    """The archive for reading; its damage (bad gzip, cut short) as one BackupError."""
    if not archive.is_file():
        raise BackupError(f"no backup at {archive}; give the path of an opslake-*.tar.gz")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            yield tar
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BackupError(
            f"{archive} is damaged or not a gzip tar ({exc}); do not restore it; use another backup"
        ) from exc


def _copy(source: IO[bytes] | None, target: Path | None, mode: int) -> tuple[str, int]:
    """Hash (and write, when ``target``) one member; returns its sha256 and size."""
    digest, size = hashlib.sha256(), 0
    with contextlib.ExitStack() as stack:
        out = None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o777 or 0o600)
            out = stack.enter_context(open(fd, "wb"))
        while source is not None and (chunk := source.read(_CHUNK)):
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    return digest.hexdigest(), size


def _write_key(path: Path, value: str) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(value + "\n")
    return path


def _empty(home: Path, *, remove: bool) -> None:
    for child in home.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    if remove:
        home.rmdir()
