"""The lake root as a pyarrow file system: a local directory or an S3-compatible bucket."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from opslake.errors import StorageError
from opslake.settings import Settings

#: Layers in flow order; ``landing`` holds raw bytes, the others Parquet tables.
LAYERS = ("landing", "bronze", "silver", "gold")

#: Directory under the root where writes are staged before their atomic move; no reader looks.
STAGING = "_incoming"
#: Age after which a staged object of a writer on another host counts as abandoned: a live
#: writer touches its object with every chunk, far more often than this.
STALE_STAGED_S = 3600.0
#: Seconds an S3 request may go without a byte before the SDK gives up and retries (its
#: default is 3). A commit is a server-side CopyObject that sends nothing until it is done:
#: a 400 MB copy on a loaded endpoint took longer, and the retried copy raced the first
#: (moto answered 500 with the source deleted under it).
S3_REQUEST_TIMEOUT_S = 300.0
# Reading Parquet over S3 with pyarrow's defaults costs thousands of ranged GETs; coalescing
# nearby ranges brought a full scan from 1,884 GETs to 36 (DESIGN.md, scale-out).
_S3_CACHE = pa.CacheOptions(hole_size_limit=64 * 2**20, range_size_limit=256 * 2**20)


class Lake:
    """Paths, Parquet tables and raw objects under the lake root."""

    def __init__(self, fs: pafs.FileSystem, root: str, *, local: bool) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.local = local

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        """Open the lake that ``settings.home`` names."""
        if settings.is_object_store:
            bucket_prefix = settings.home.removeprefix("s3://")
            kwargs: dict[str, object] = {
                "region": settings.s3_region,
                "request_timeout": S3_REQUEST_TIMEOUT_S,
            }
            if settings.s3_endpoint:
                scheme, _, host = settings.s3_endpoint.partition("://")
                kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
            try:
                fs = pafs.S3FileSystem(**kwargs)
            except (OSError, ValueError) as exc:
                raise StorageError(
                    f"cannot open {settings.home}: {exc}; check OPSLAKE_S3_ENDPOINT "
                    "and the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables"
                ) from exc
            return cls(fs, bucket_prefix, local=False)
        Path(settings.home).mkdir(parents=True, exist_ok=True)
        return cls(pafs.LocalFileSystem(), settings.home, local=True)

    def path(self, *parts: str) -> str:
        """Join ``parts`` under the lake root."""
        return "/".join([self.root, *(p.strip("/") for p in parts if p)])

    def table_path(self, layer: str, table: str, partition: Mapping[str, str] | None = None) -> str:
        """Directory of a table, or of one Hive partition of it (``dt=2026-11-24``)."""
        if layer not in LAYERS:
            raise StorageError(f"unknown layer {layer!r}; use one of {', '.join(LAYERS)}")
        hive = [f"{k}={v}" for k, v in (partition or {}).items()]
        return self.path(layer, table, *hive)

    # -- raw objects -------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        """True when a file or directory exists at ``path``."""
        if self.local:  # a stat, at a fifth of pyarrow's cost: landing asks 16 times a batch
            return os.path.exists(path)
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def list_files(self, path: str, *, recursive: bool = False) -> list[str]:
        """Files under ``path`` (sorted); empty when it does not exist."""
        sel = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
        return sorted(i.path for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File)

    def list_dirs(self, path: str) -> list[str]:
        """Immediate sub-directory names of ``path`` (sorted)."""
        sel = pafs.FileSelector(path, allow_not_found=True)
        return sorted(
            i.base_name for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.Directory
        )

    def read_bytes(self, path: str) -> bytes:
        """Whole content of one object, in one request on S3."""
        if self.local:
            with open(path, "rb") as f:
                return f.read()
        # An input *stream* on S3 reads in 256 KiB ranged GETs: 1,600 requests for a 400 MB
        # landed batch (and moto copies the whole object for each). A file reads it at once.
        with self.fs.open_input_file(path) as f:
            return f.read()

    def delete_dir(self, path: str) -> None:
        """Remove a directory tree if it exists."""
        if self.exists(path):
            self.fs.delete_dir(path)

    def stage(self, chunks: Iterable[bytes]) -> tuple[str, str, int]:
        """Write ``chunks`` durably to a staging object; returns (path, sha256, bytes).

        Locally the file is fsynced; on S3 an object only exists once its upload completed.
        Staged objects live in ``_incoming/`` and are invisible to every reader.
        """
        digest, size = hashlib.sha256(), 0
        staged = self._staged_path("part")
        try:
            if self.local:
                # Plain descriptors, and the directory made only when missing: landing stages
                # two small files a batch, where a buffered file and pathlib's mkdir showed.
                fd = _create(staged)
                try:
                    for chunk in chunks:
                        digest.update(chunk)
                        size += len(chunk)
                        _write_all(fd, chunk)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            else:
                with self.fs.open_output_stream(staged) as out:
                    for chunk in chunks:
                        digest.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
        except BaseException:
            # A failed write (a full disk, a broken source) leaves nothing behind; only a
            # killed writer can, and sweep_staged removes that.
            with contextlib.suppress(OSError):
                self.discard(staged)
            raise
        return staged, digest.hexdigest(), size

    def _staged_path(self, suffix: str) -> str:
        """A fresh staging name that says which process on which host writes it."""
        return self.path(STAGING, f"{writer_tag()}_{uuid.uuid4().hex}.{suffix}")

    def sweep_staged(self, older_than_s: float = STALE_STAGED_S) -> int:
        """Remove staged objects left by failed or killed writes; returns how many went.

        An object of a process on this host goes as soon as that process is gone; one of
        another host (a shared object store) once untouched for ``older_than_s``, so a
        write in progress anywhere survives.
        """
        sel = pafs.FileSelector(self.path(STAGING), allow_not_found=True)
        cutoff = time.time() - older_than_s
        host = socket.gethostname()
        removed = 0
        for info in self.fs.get_file_info(sel):
            if info.type != pafs.FileType.File:
                continue
            writer_host, _, pid = info.base_name.rpartition("_")[0].rpartition("_")
            if writer_host == host and pid.isdigit():
                abandoned = int(pid) != os.getpid() and not process_alive(int(pid))
            else:
                abandoned = info.mtime is not None and info.mtime.timestamp() <= cutoff
            if abandoned:
                with contextlib.suppress(FileNotFoundError):
                    self.discard(info.path)
                    removed += 1
        return removed

    def commit(self, staged: str, path: str) -> None:
        """Move a staged object to ``path`` atomically (rename + directory fsync locally)."""
        if self.local:
            parent = os.path.dirname(path)
            try:
                os.replace(staged, path)
            except FileNotFoundError:
                if not os.path.exists(staged):
                    raise
                make_dirs_durably(parent)  # the first object of a day: its directory is new
                os.replace(staged, path)
            fsync_dir(parent)
        else:
            self.fs.move(staged, path)

    def discard(self, staged: str) -> None:
        """Drop a staged object that turned out not to be needed."""
        self.fs.delete_file(staged)

    def put_atomic(self, path: str, chunks: Iterable[bytes]) -> None:
        """Write ``chunks`` so that ``path`` appears whole or not at all."""
        staged, _, _ = self.stage(chunks)
        try:
            self.commit(staged, path)
        except BaseException:
            with contextlib.suppress(OSError):
                self.discard(staged)
            raise

    # -- Parquet tables ----------------------------------------------------------------
    def write_parts(
        self,
        layer: str,
        name: str,
        partition: Mapping[str, str],
        parts: Iterable[tuple[str, pa.Table | Iterable[pa.Table]]],
        schema: pa.Schema,
        *,
        prune: bool = True,
    ) -> list[str]:
        """Replace one Hive partition of ``layer/name`` with the given part files.

        Each part streams its tables into one Parquet file that appears atomically; files of
        the partition that are not among the new parts are removed afterwards, unless
        ``prune`` is off (one shard of several writing its own part). Output is
        deterministic (fixed writer options, no run-dependent metadata), so the same input
        gives byte-identical files.
        """
        directory = self.table_path(layer, name, partition)
        written = []
        for part, tables in parts:
            chunks = [tables] if isinstance(tables, pa.Table) else tables
            target = f"{directory}/{part}.parquet"
            staged = self._staged_path("parquet")
            if self.local:
                Path(staged).parent.mkdir(parents=True, exist_ok=True)
            try:
                with (
                    self.fs.open_output_stream(staged) as sink,
                    pq.ParquetWriter(
                        sink,
                        schema.remove_metadata(),
                        compression="zstd",
                        coerce_timestamps="us",
                        allow_truncated_timestamps=False,
                        write_statistics=True,
                    ) as writer,
                ):
                    for chunk in _prefetch(chunks):
                        writer.write_table(
                            chunk.cast(schema.remove_metadata()), row_group_size=1_000_000
                        )
            except BaseException:
                self.discard(staged)
                raise
            if self.local:
                fd = os.open(staged, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.commit(staged, target)
            written.append(target)
        if prune:
            self.prune_parts(layer, name, partition, {p.rsplit("/", 1)[-1] for p in written})
        return written

    def prune_parts(
        self, layer: str, name: str, partition: Mapping[str, str], keep: Iterable[str]
    ) -> None:
        """Remove the files of one partition not named in ``keep`` (``part-0.parquet``)."""
        directory = self.table_path(layer, name, partition)
        kept = set(keep)
        for stale in self.list_files(directory):
            if stale.rsplit("/", 1)[-1] not in kept:
                self.fs.delete_file(stale)

    def write_table(
        self, table: pa.Table, layer: str, name: str, partition: Mapping[str, str]
    ) -> str:
        """Replace one Hive partition of ``layer/name`` with ``table`` (one file)."""
        return self.write_parts(layer, name, partition, [("part-0", table)], table.schema)[0]

    def partitions(self, layer: str, name: str, key: str = "dt") -> list[str]:
        """Values of the first-level partition ``key`` that exist for a table."""
        prefix = f"{key}="
        return [
            d.removeprefix(prefix)
            for d in self.list_dirs(self.table_path(layer, name))
            if d.startswith(prefix)
        ]

    def drop_partitions_before(
        self, tables: Iterable[tuple[str, str]], first_kept: str
    ) -> list[str]:
        """Delete the ``dt`` partitions older than ``first_kept`` of (layer, table) pairs."""
        dropped = []
        for layer, table in tables:
            for dt in self.partitions(layer, table):
                if dt < first_kept:
                    self.delete_dir(self.table_path(layer, table, {"dt": dt}))
                    dropped.append(f"{layer}/{table}/dt={dt}")
        return dropped

    def read_table(
        self,
        layer: str,
        name: str,
        *,
        schema: pa.Schema | None = None,
        dts: Iterable[str] | None = None,
        columns: list[str] | None = None,
        dictionary: Sequence[str] = (),
        part: str | None = None,
    ) -> pa.Table:
        """Read a table (optionally only some ``dt`` partitions, or one part file of each).

        Columns named in ``dictionary`` are read dictionary-encoded, which keeps highly
        repetitive strings (metric names, label sets) small in memory.
        """
        schema = _dictionary_schema(schema, dictionary)
        dataset = self.dataset(
            layer, name, schema=schema, dts=dts, dictionary=dictionary, part=part
        )
        if dataset is None:
            empty = schema.empty_table()
            return empty.select(columns) if columns else empty
        return dataset.to_table(columns=columns)

    def scan(
        self,
        layer: str,
        name: str,
        *,
        schema: pa.Schema,
        dts: Iterable[str],
        columns: list[str],
        dictionary: Sequence[str] = (),
        batch_rows: int = 1_000_000,
        part: str | None = None,
    ) -> Iterator[pa.Table]:
        """A table's rows in file order, at most ``batch_rows`` at a time (``read_table``'s
        options), reading one file ahead at most: memory follows the batch, not the table."""
        dataset = self.dataset(
            layer,
            name,
            schema=_dictionary_schema(schema, dictionary),
            dts=dts,
            dictionary=dictionary,
            part=part,
        )
        if dataset is None:
            return
        for batch in dataset.to_batches(
            columns=columns, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1
        ):
            if batch.num_rows:
                yield pa.Table.from_batches([batch])

    def dataset(
        self,
        layer: str,
        name: str,
        *,
        schema: pa.Schema | None = None,
        dts: Iterable[str] | None = None,
        dictionary: Sequence[str] = (),
        part: str | None = None,
    ) -> ds.Dataset | None:
        """A lazy dataset over a table's files (``None`` when there are none and ``schema``
        says what an empty table looks like); scans push projections and filters down.
        ``part`` keeps only the files of that name (``part-2``: one shard of each day)."""
        base = self.table_path(layer, name)
        wanted = None if dts is None else sorted(set(dts))
        suffix = ".parquet" if part is None else f"/{part}.parquet"
        files = [f for f in self.list_files(base, recursive=True) if f.endswith(suffix)]
        if wanted is not None:
            files = [f for f in files if any(f"/dt={d}/" in f for d in wanted)]
        if not files:
            if schema is None:
                raise StorageError(f"{layer}/{name} has no data yet; materialize it first")
            return None
        fmt = ds.ParquetFileFormat(
            read_options=ds.ParquetReadOptions(dictionary_columns=list(dictionary)),
            default_fragment_scan_options=ds.ParquetFragmentScanOptions(
                pre_buffer=True, cache_options=None if self.local else _S3_CACHE
            ),
        )
        # Partition values are not added as columns: every table carries its own time column.
        return ds.dataset(files, filesystem=self.fs, format=fmt, schema=schema)


def _dictionary_schema(schema: pa.Schema | None, dictionary: Sequence[str]) -> pa.Schema | None:
    """``schema`` with the columns named in ``dictionary`` read dictionary-encoded."""
    if schema is None or not dictionary:
        return schema
    return pa.schema(
        [
            f.with_type(pa.dictionary(pa.int32(), f.type)) if f.name in dictionary else f
            for f in schema
        ]
    )


def _prefetch(chunks: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """Produce the next chunk on a thread while the caller writes the current one.

    Building a slice (Arrow takes, polars work) and encoding Parquet both release the GIL,
    so overlapping them uses a second core. At most two chunks are held at once.
    """
    if isinstance(chunks, Sequence):
        yield from chunks
        return
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for chunk in chunks:
                if stop.is_set():
                    return
                handoff.put(chunk)
            handoff.put(done)
        except BaseException as exc:  # noqa: BLE001  (re-raised by the consumer)
            handoff.put(exc)

    thread = threading.Thread(target=produce, name="opslake-prefetch", daemon=True)
    thread.start()
    try:
        while (item := handoff.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # The consumer may stop early (a failed write): unblock and end the producer.
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                handoff.get(timeout=0.05)
        thread.join()


def writer_tag() -> str:
    """``<host>_<pid>`` of this process: names temporary files so a sweep knows their owner."""
    return f"{socket.gethostname()}_{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_file_atomic(path: Path, body: bytes) -> None:
    """Replace the local file ``path`` with ``body`` so it is whole or unchanged, durably."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _create(path: str) -> int:
    """A new file at ``path`` opened for writing, its directory made (durably) if missing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        make_dirs_durably(os.path.dirname(path))
        return os.open(path, flags, 0o666)


def _write_all(fd: int, chunk: bytes | bytearray | memoryview) -> None:
    """Write all of ``chunk`` (``os.write`` may write less than it is given)."""
    view = memoryview(chunk).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def make_dirs_durably(directory: str) -> None:
    """Create ``directory`` and missing parents, each new entry fsynced in its parent.

    A renamed object is durable once its directory is fsynced, but a directory created for
    it is only durable once the directory above it is fsynced too.
    """
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent writer made it first
            os.mkdir(new)
        fsync_dir(os.path.dirname(new) or ".")


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
