"""Chinese national cryptography (S6.6b): SM3 digests and HMACs, SM4-GCM for sensitive fields.

Sensitive values at rest (owner contacts in the CMDB, for example) are stored as tokens
``sm4gcm:v1:<key id>:<base64url(nonce + ciphertext + tag)>``: the prefix makes an encrypted
value recognisable, the version allows a later format, and the key id (first 8 hex digits of
the SM3 digest of the key) names the key that sealed it, so keys can rotate. Encryption uses
SM4 in GCM mode with a random 96-bit nonce; the field's context (its column name) and the
token header are authenticated as associated data, so a token copied into another column or
edited in any byte is refused rather than decrypted.

The 128-bit data key comes from ``OPSLAKE_DATA_KEY`` (32 hex digits) or, when that is unset,
from ``<state_dir>/keys/data.key``, created on first use readable by its owner only. The key
never belongs in the repository. To rotate, set the new key in ``OPSLAKE_DATA_KEY`` and list
the old ones in ``OPSLAKE_DATA_KEY_PREVIOUS`` (comma-separated) until every value has been
re-encrypted; new values are always sealed with the current key.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from opslake.errors import ConfigError, SecurityError
from opslake.settings import Settings

#: Every encrypted field value starts with this.
PREFIX = "sm4gcm:v1:"
KEY_ENV = "OPSLAKE_DATA_KEY"
PREVIOUS_KEYS_ENV = "OPSLAKE_DATA_KEY_PREVIOUS"
KEY_BYTES = 16
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID_CHARS = 8
_GENERATE_HINT = "generate one with: python -c 'import secrets; print(secrets.token_hex(16))'"


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


class FieldCipher:
    """Encrypts and decrypts single field values with SM4-GCM under a data key."""

    def __init__(self, key: bytes, *, previous: Iterable[bytes] = ()) -> None:
        """Seal with ``key``; open tokens sealed with ``key`` or any of ``previous``."""
        for candidate in (key, *previous):
            if len(candidate) != KEY_BYTES:
                raise ConfigError(f"an SM4 data key has {KEY_BYTES} bytes, not {len(candidate)}; "
                                  f"{_GENERATE_HINT}")
        self._key = key
        self._nonce_key = bytes.fromhex(hmac_sm3(key, b"opslake deterministic nonce"))
        self.key_id = key_id(key)
        self._keys = {key_id(k): k for k in previous}
        self._keys[self.key_id] = key

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None
                      ) -> FieldCipher:
        """The cipher for this installation: the key from the environment or the key file."""
        env = os.environ if environ is None else environ
        previous = [_parse_key(part.strip(), PREVIOUS_KEYS_ENV)
                    for part in env.get(PREVIOUS_KEYS_ENV, "").split(",") if part.strip()]
        return cls(data_key(settings, env), previous=previous)

    def field(self, context: str) -> tuple[Callable[[str], str], Callable[[str], str]]:
        """Seal and open functions for one field, for stores taking ``protect``/``unprotect``."""
        return (lambda text: self.encrypt(text, context),
                lambda token: self.decrypt(token, context))

    @staticmethod
    def is_encrypted(value: object) -> bool:
        """True when ``value`` is a token this module produced (no key needed to tell)."""
        return isinstance(value, str) and value.startswith(PREFIX)

    def encrypt(self, text: str, context: str, *, deterministic: bool = False) -> str:
        """Seal ``text`` for the field named ``context``; every call gives a different token.

        ``deterministic``: the nonce is derived from the key, context and text (HMAC-SM3 under
        a key of its own), so equal values give equal tokens. Pipelines that must rewrite a
        partition byte for byte use it; it reveals which rows share a value, nothing more.
        """
        nonce = (bytes.fromhex(hmac_sm3(self._nonce_key, f"{context}\0{text}".encode()))
                 [:_NONCE_BYTES] if deterministic else secrets.token_bytes(_NONCE_BYTES))
        encryptor = Cipher(algorithms.SM4(self._key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(_associated_data(self.key_id, context))
        sealed = encryptor.update(text.encode("utf-8")) + encryptor.finalize()
        body = base64.urlsafe_b64encode(nonce + sealed + encryptor.tag).decode("ascii")
        return f"{PREFIX}{self.key_id}:{body.rstrip('=')}"

    def decrypt(self, token: str, context: str) -> str:
        """Open a token sealed for the field ``context``; refuses wrong keys and any change."""
        if not self.is_encrypted(token):
            raise SecurityError(f"the value of {context!r} is not an encrypted field (expected "
                                f"'{PREFIX}...'); encrypt it with FieldCipher.encrypt first")
        kid, _, body = token.removeprefix(PREFIX).partition(":")
        key = self._keys.get(kid)
        if key is None:
            raise SecurityError(
                f"the value of {context!r} was encrypted with data key {kid}, but the loaded key "
                f"is {self.key_id}; set {KEY_ENV} to that key, or list it in "
                f"{PREVIOUS_KEYS_ENV} while values are re-encrypted")
        tampered = SecurityError(
            f"the encrypted value of {context!r} failed authentication: it was altered, or it "
            f"belongs to another field; restore it from the source system or re-encrypt it")
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError) as exc:
            raise tampered from exc
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise tampered
        nonce, sealed, tag = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:-_TAG_BYTES], blob[-_TAG_BYTES:]
        decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
        decryptor.authenticate_additional_data(_associated_data(kid, context))
        try:
            plain = decryptor.update(sealed) + decryptor.finalize()
        except InvalidTag as exc:
            raise tampered from exc
        return plain.decode("utf-8")


def _associated_data(kid: str, context: str) -> bytes:
    # The header is authenticated too, so a token cannot be relabelled with another key id.
    return f"{PREFIX}{kid}:{context}".encode()


def data_key(settings: Settings, environ: Mapping[str, str] | None = None) -> bytes:
    """The current data key: ``OPSLAKE_DATA_KEY``, else the key file (created on first use)."""
    env = os.environ if environ is None else environ
    raw = env.get(KEY_ENV, "").strip()
    if raw:
        return _parse_key(raw, KEY_ENV)
    key = key_file(settings.state_dir / "keys" / "data.key", alternative=f"set {KEY_ENV}")
    assert key is not None  # created when missing
    return key


def key_file(path: Path, size: int = KEY_BYTES, *, create: bool = True,
             alternative: str = "make OPSLAKE_STATE_DIR writable") -> bytes | None:
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
        raise ConfigError(f"cannot read or create the key file {path}: {exc}; make its "
                          f"directory writable, or {alternative}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"the key file {path} is readable by other users "
                          f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    return _parse_key(text.strip(), str(path), size)


def _parse_key(raw: str, source: str, size: int = KEY_BYTES) -> bytes:
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != size:
        raise ConfigError(f"{source} must be {2 * size} hex digits (a {8 * size}-bit key); "
                          "generate one with: python -c 'import secrets; "
                          f"print(secrets.token_hex({size}))'")
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
