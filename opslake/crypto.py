"""Chinese national cryptography below every layer (S6.6b): SM3, HMAC-SM3, SM4-GCM, data keys.

These primitives depend on settings and errors only, so the lake (which seals sensitive
landing objects) and the domain packages (sealed fields, the audit chain, backups) share
one implementation; ``opslake.security.crypto`` builds its field tokens on them.

The 128-bit data key comes from ``OPSLAKE_DATA_KEY`` (32 hex digits) or, when that is unset,
from ``<state_dir>/keys/data.key``, created on first use readable by its owner only. The key
never belongs in the repository. To rotate, set the new key in ``OPSLAKE_DATA_KEY`` and list
the old ones in ``OPSLAKE_DATA_KEY_PREVIOUS`` (comma-separated) while data sealed under
them is still read; new data is always sealed with the current key.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from opslake.errors import ConfigError, SecurityError
from opslake.settings import Settings

KEY_ENV = "OPSLAKE_DATA_KEY"
PREVIOUS_KEYS_ENV = "OPSLAKE_DATA_KEY_PREVIOUS"
KEY_BYTES = 16
#: GCM's recommended 96-bit nonce; random per message (a key seals far fewer than 2^32).
NONCE_BYTES = 12
TAG_BYTES = 16
_KEY_ID_CHARS = 8


def sm3(data: bytes) -> str:
    """SM3 digest of ``data`` (GB/T 32905) as 64 hex digits."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize().hex()


def hmac_sm3(key: bytes, data: bytes) -> str:
    """HMAC (RFC 2104) of ``data`` under ``key`` with SM3 as the hash, as 64 hex digits."""
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize().hex()


def key_id(key: bytes) -> str:
    """The short public name of a data key: the first 8 hex digits of its SM3 digest."""
    return sm3(key)[:_KEY_ID_CHARS]


def sm4_gcm_encrypt(
    key: bytes, nonce: bytes, chunks: Iterable[bytes], associated: bytes
) -> Iterator[bytes]:
    """SM4-GCM ciphertext of ``chunks``, chunk by chunk, then the 16-byte tag as the last."""
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(associated)
    for chunk in chunks:
        yield encryptor.update(chunk)
    yield encryptor.finalize() + encryptor.tag


def sm4_gcm_decrypt(key: bytes, nonce: bytes, sealed: bytes, associated: bytes) -> bytes:
    """The plaintext of ``sealed`` (ciphertext then tag); SecurityError when it fails to verify."""
    if len(sealed) < TAG_BYTES:
        raise SecurityError(
            "the SM4-GCM message is shorter than its tag; it was cut off, "
            "restore it from its source"
        )
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, sealed[-TAG_BYTES:])).decryptor()
    decryptor.authenticate_additional_data(associated)
    try:
        return decryptor.update(sealed[:-TAG_BYTES]) + decryptor.finalize()
    except InvalidTag as exc:
        raise SecurityError(
            "the SM4-GCM message failed authentication: it was altered or "
            "sealed under another key or context; restore it from its "
            "source"
        ) from exc


@dataclass(frozen=True)
class DataKeys:
    """The current SM4 data key and the previous ones still accepted for reading."""

    current: bytes
    previous: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        for candidate in (self.current, *self.previous):
            if len(candidate) != KEY_BYTES:
                raise ConfigError(
                    f"an SM4 data key has {KEY_BYTES} bytes, not "
                    f"{len(candidate)}; generate one with: python -c "
                    "'import secrets; print(secrets.token_hex(16))'"
                )

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> DataKeys:
        """This installation's keys: the current one (environment or key file) and previous.

        ``environ``, where given, stands for the environment the keys are read from.
        """
        given = settings.or_from(environ)
        previous = tuple(
            _parse_key(part.strip(), PREVIOUS_KEYS_ENV)
            for part in (given.data_key_previous or "").split(",")
            if part.strip()
        )
        return cls(data_key(settings, environ), previous)

    @property
    def current_id(self) -> str:
        """The key id of the current key."""
        return key_id(self.current)

    def get(self, kid: str) -> bytes | None:
        """The key named ``kid`` (current or previous), or None when it is not loaded."""
        return next((k for k in (self.current, *self.previous) if key_id(k) == kid), None)


def data_key(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes:
    """The current data key: ``OPSLAKE_DATA_KEY``, else the key file (created on first use)."""
    raw = settings.or_from(environ).data_key
    if raw:
        return _parse_key(raw, KEY_ENV)
    key = key_file(settings.state_dir / "keys" / "data.key", alternative=f"set {KEY_ENV}")
    assert key is not None  # created when missing
    return key


def key_file(
    path: Path,
    size: int = KEY_BYTES,
    *,
    create: bool = True,
    alternative: str = "make OPSLAKE_STATE_DIR writable",
) -> bytes | None:
    """The secret key of ``size`` bytes kept as hex in ``path``, created (mode 600) if missing.

    With ``create`` false a missing file gives None. A file other users may read is refused.
    """
    try:
        if not path.exists():
            if not create:
                return None
            _create_key_file(path, size)
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read or create the key file {path}: {exc}; make its "
            f"directory writable, or {alternative}"
        ) from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"the key file {path} is readable by other users "
            f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    return _parse_key(text.strip(), str(path), size)


def _parse_key(raw: str, source: str, size: int = KEY_BYTES) -> bytes:
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != size:
        raise ConfigError(
            f"{source} must be {2 * size} hex digits (a {8 * size}-bit key); "
            "generate one with: python -c 'import secrets; "
            f"print(secrets.token_hex({size}))'"
        )
    return key


def _create_key_file(path: Path, size: int) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written in full under a private name, then linked into place: a concurrent first use
    # either wins the link or reads the winner's complete key, never half a file.
    staged = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(size) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.link(staged, path)
    except FileExistsError:
        pass
    finally:
        staged.unlink(missing_ok=True)
