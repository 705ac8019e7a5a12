"""The one exception hierarchy: every message says what to do about it."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


class OpsLakeError(Exception):
    """Root of every error OpsLake raises on purpose; the CLI prints it without a traceback."""

    exit_code = 1


class ConfigError(OpsLakeError):
    """A setting or file the user controls is wrong."""

    exit_code = 2


class InputError(OpsLakeError):
    """Data handed to OpsLake cannot be accepted as a whole (single bad rows go to quarantine)."""

    exit_code = 3


class StorageError(OpsLakeError):
    """The lake or the warehouse cannot be read or written."""

    exit_code = 4


class NotFoundError(OpsLakeError):
    """Something asked for by name does not exist yet."""

    exit_code = 5


class SecurityError(OpsLakeError):
    """A credential, key or protected value failed a check (wrong key, tampered data)."""

    exit_code = 6


class BackupError(OpsLakeError):
    """A backup cannot be made, verified or restored (missing passphrase, damaged archive)."""

    exit_code = 1


#: How SQLite words a write the disk refused (SQLITE_FULL, SQLITE_IOERR and its kin).
_SQLITE_REFUSALS = ("database or disk is full", "disk i/o error")
_OS_REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


def refused_write(exc: BaseException) -> bool:
    """Whether ``exc`` is the disk refusing a write: full, over quota or failing."""
    if isinstance(exc, sqlite3.OperationalError):
        return str(exc).lower().startswith(_SQLITE_REFUSALS)
    return isinstance(exc, OSError) and exc.errno in _OS_REFUSALS


def space_error(what: str, exc: BaseException) -> StorageError:
    """The StorageError for ``what`` (a store, a log) that its disk refused to write."""
    return StorageError(f"cannot write {what} ({exc}); free space on its disk (the state "
                        "directory, OPSLAKE_STATE_DIR) and retry: nothing was half-written")


@contextmanager
def state_writes(what: str) -> Iterator[None]:
    """Raise a refused write inside as :func:`space_error` (a 503 in the API), others as is."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as exc:
        if refused_write(exc):
            raise space_error(what, exc) from exc
        raise
