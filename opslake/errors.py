"""The one exception hierarchy: every message says what to do about it.

The roots first (a kind of failure each, with its CLI exit code), then the errors of each
domain under them, in sections; raised where they happen, caught by their root.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime


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


# -- Pipeline runs -------------------------------------------------------------------------


class PipelineError(OpsLakeError):
    """A materialization run failed; the Dagster UI has the step that failed and its logs."""


class QualityBlocked(PipelineError):
    """Quality contracts failed: the affected partitions were not published downstream."""


class ClusterError(OpsLakeError):
    """A part of the local cluster cannot start, stop or be reached; the message says why."""


# -- The lake ------------------------------------------------------------------------------


class SealedBatchError(SecurityError):
    """A sealed landing batch cannot be written or opened: no key, a wrong key, or altered."""


class PurgedBatchError(NotFoundError):
    """A batch's object was purged by landing retention; only its tombstone is left."""


# -- Ingest --------------------------------------------------------------------------------


class RemoteWriteError(InputError):
    """A remote-write body that cannot be decompressed or decoded as a ``WriteRequest``."""


class RemoteWriteTooLarge(RemoteWriteError):
    """A remote-write body that decompresses to more (or more times its size) than accepted."""


class CollectionError(OpsLakeError):
    """A source could not be collected from (unreachable, HTTP error, unusable answer)."""

    exit_code = 6


class PushRefused(InputError):
    """A pushed body (or its headers) that cannot be accepted; answered with ``status``."""

    def __init__(self, status: int, error: str, fix: str) -> None:
        super().__init__(f"{error}; {fix}")
        self.status, self.error, self.fix = status, error, fix


# -- The metrics catalog -------------------------------------------------------------------


class DefinitionError(ConfigError):
    """One or more metric definitions are invalid; each problem names its file and line."""

    def __init__(self, problems: Sequence[object]) -> None:
        self.problems = problems
        super().__init__("invalid metric definitions:\n" + "\n".join(f"  {p}" for p in problems))


# -- Models --------------------------------------------------------------------------------


class ArtifactIntegrityError(StorageError):
    """A stored model artifact does not match the checksum recorded when it was registered."""


# -- Incident handling ---------------------------------------------------------------------


class HandlingError(InputError):
    """An incident action its handling state does not allow (resolving a resolved incident),
    or one with wrong fields (an unknown assignee)."""


# -- Delivery ------------------------------------------------------------------------------


class DeliveryError(OpsLakeError):
    """A receiver refused or could not be reached; the delivery is retried later."""


# -- Screens and reports -------------------------------------------------------------------


class ReportError(OpsLakeError):
    """A report could not be rendered, kept or sent."""

    exit_code = 8


class SupersetError(OpsLakeError):
    """Superset could not be started, reached or provisioned."""

    exit_code = 7


# -- Doors and identity --------------------------------------------------------------------


class DoorError(OpsLakeError):
    """A door cannot reach the UI behind it."""

    exit_code = 7


class AuthError(SecurityError):
    """Credentials are missing, wrong, locked or expired (HTTP 401)."""

    exit_code = 11
    http_status = 401


class PasswordExpired(AuthError):
    """The password is right but older than the maximum age; it must be changed first."""


class Forbidden(SecurityError):
    """The caller is known but may not do this (HTTP 403)."""

    exit_code = 12
    http_status = 403


class QuotaExceeded(SecurityError):
    """An API key, or a user's sessions, used up the UTC day's requests (HTTP 429);
    ``reset_at`` says when."""

    exit_code = 13
    http_status = 429

    def __init__(self, message: str, reset_at: datetime) -> None:
        super().__init__(message)
        self.reset_at = reset_at


class EgressRefused(InputError):
    """A webhook destination is not allowed; ``reason`` is the detail for the service log."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


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
    return StorageError(
        f"cannot write {what} ({exc}); free space on its disk (the state "
        "directory, OPSLAKE_STATE_DIR) and retry: nothing was half-written"
    )


@contextmanager
def state_writes(what: str) -> Iterator[None]:
    """Raise a refused write inside as :func:`space_error` (a 503 in the API), others as is."""
    try:
        yield
    except (sqlite3.OperationalError, OSError) as exc:
        if refused_write(exc):
            raise space_error(what, exc) from exc
        raise
