"""SM4-GCM tokens for sensitive field values (S6.6b), on the primitives of ``opslake.crypto``.

Sensitive values at rest (owner contacts in the CMDB, for example) are stored as tokens
``sm4gcm:v1:<key id>:<base64url(nonce + ciphertext + tag)>``: the prefix makes an encrypted
value recognisable, the version allows a later format, and the key id (first 8 hex digits of
the SM3 digest of the key) names the key that sealed it, so keys can rotate. Encryption uses
SM4 in GCM mode with a random 96-bit nonce; the field's context (its column name) and the
token header are authenticated as associated data, so a token copied into another column or
edited in any byte is refused rather than decrypted.

The data key and its rotation (``OPSLAKE_DATA_KEY``, ``OPSLAKE_DATA_KEY_PREVIOUS``, the key
file) are described in ``opslake.crypto``; new values are always sealed with the current key.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Iterable, Mapping

from opslake.crypto import (
    KEY_ENV,
    NONCE_BYTES,
    PREVIOUS_KEYS_ENV,
    TAG_BYTES,
    DataKeys,
    hmac_sm3,
    key_id,
    sm4_gcm_decrypt,
    sm4_gcm_encrypt,
)
from opslake.errors import SecurityError
from opslake.settings import Settings

#: Every encrypted field value starts with this.
PREFIX = "sm4gcm:v1:"


class FieldCipher:
    """Encrypts and decrypts single field values with SM4-GCM under a data key."""

    def __init__(self, key: bytes, *, previous: Iterable[bytes] = ()) -> None:
        """Seal with ``key``; open tokens sealed with ``key`` or any of ``previous``."""
        keys = DataKeys(key, tuple(previous))  # checks every key's size
        self._key = key
        self._nonce_key = bytes.fromhex(hmac_sm3(key, b"opslake deterministic nonce"))
        self.key_id = key_id(key)
        self._keys = {key_id(k): k for k in keys.previous}
        self._keys[self.key_id] = key

    @classmethod
    def from_settings(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> FieldCipher:
        """The cipher for this installation: the key from the environment or the key file."""
        keys = DataKeys.from_settings(settings, environ)
        return cls(keys.current, previous=keys.previous)

    def field(self, context: str) -> tuple[Callable[[str], str], Callable[[str], str]]:
        """Seal and open functions for one field, for stores taking ``protect``/``unprotect``."""
        return (
            lambda text: self.encrypt(text, context),
            lambda token: self.decrypt(token, context),
        )

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
        nonce = (
            bytes.fromhex(hmac_sm3(self._nonce_key, f"{context}\0{text}".encode()))[:NONCE_BYTES]
            if deterministic
            else secrets.token_bytes(NONCE_BYTES)
        )
        sealed = b"".join(
            sm4_gcm_encrypt(
                self._key, nonce, [text.encode("utf-8")], _associated_data(self.key_id, context)
            )
        )
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{PREFIX}{self.key_id}:{body.rstrip('=')}"

    def decrypt(self, token: str, context: str) -> str:
        """Open a token sealed for the field ``context``; refuses wrong keys and any change."""
        if not self.is_encrypted(token):
            raise SecurityError(
                f"the value of {context!r} is not an encrypted field (expected "
                f"'{PREFIX}...'); encrypt it with FieldCipher.encrypt first"
            )
        kid, _, body = token.removeprefix(PREFIX).partition(":")
        key = self._keys.get(kid)
        if key is None:
            raise SecurityError(
                f"the value of {context!r} was encrypted with data key {kid}, but the loaded key "
                f"is {self.key_id}; set {KEY_ENV} to that key, or list it in "
                f"{PREVIOUS_KEYS_ENV} while values are re-encrypted"
            )
        tampered = SecurityError(
            f"the encrypted value of {context!r} failed authentication: it was altered, or it "
            f"belongs to another field; restore it from the source system or re-encrypt it"
        )
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError) as exc:
            raise tampered from exc
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise tampered
        try:
            plain = sm4_gcm_decrypt(
                key, blob[:NONCE_BYTES], blob[NONCE_BYTES:], _associated_data(kid, context)
            )
        except SecurityError as exc:
            raise tampered from exc
        return plain.decode("utf-8")


def _associated_data(kid: str, context: str) -> bytes:
    # The header is authenticated too, so a token cannot be relabelled with another key id.
    return f"{PREFIX}{kid}:{context}".encode()
