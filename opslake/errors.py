"""The one exception hierarchy: every message says what to do about it."""


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
