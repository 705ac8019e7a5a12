"""SM3, HMAC-SM3 and SM4-GCM field encryption against the national standards' vectors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from opslake.crypto import hmac_sm3, key_id, sm3
from opslake.errors import ConfigError, SecurityError
from opslake.security.crypto import FieldCipher
from opslake.settings import Settings

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


def test_sm3_standard_vectors() -> None:
    # GB/T 32905-2016, appendix A, examples 1 and 2.
    assert sm3(b"abc") == ("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
    assert sm3(b"abcd" * 16) == ("debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732")


def test_hmac_sm3_follows_rfc2104() -> None:
    key, data = b"k" * 20, b"what do ya want for nothing?"
    block = 64
    padded = key.ljust(block, b"\0")
    inner = bytes.fromhex(sm3(bytes(b ^ 0x36 for b in padded) + data))
    expected = sm3(bytes(b ^ 0x5C for b in padded) + inner)
    assert hmac_sm3(key, data) == expected
    assert hmac_sm3(key, data) != hmac_sm3(key + b"x", data)


def test_sm4_standard_known_answer() -> None:
    # GB/T 32907-2016, appendix A, example 1: key = plaintext.
    block = bytes.fromhex("0123456789abcdeffedcba9876543210")
    encryptor = Cipher(algorithms.SM4(block), modes.ECB()).encryptor()
    assert (encryptor.update(block) + encryptor.finalize()).hex() == (
        "681edf34d206965e86b3e94f536e4246"
    )


def test_round_trip_and_token_format() -> None:
    cipher = FieldCipher(KEY)
    token = cipher.encrypt("张三 13800000000", "owner_contact")
    assert token.startswith(f"sm4gcm:v1:{key_id(KEY)}:")
    assert key_id(KEY) == sm3(KEY)[:8]
    assert FieldCipher.is_encrypted(token)
    assert not FieldCipher.is_encrypted("张三") and not FieldCipher.is_encrypted(None)
    assert cipher.decrypt(token, "owner_contact") == "张三 13800000000"
    assert cipher.encrypt("x", "c") != cipher.encrypt("x", "c")  # fresh nonce each time
    assert cipher.decrypt(cipher.encrypt("", "c"), "c") == ""


def test_tampered_token_is_refused() -> None:
    cipher = FieldCipher(KEY)
    token = cipher.encrypt("secret", "owner_contact")
    head, body = token.rsplit(":", 1)
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    for bad in (f"{head}:{flipped}", f"{head}:{body[:-4]}", f"{head}:!!!", f"{head}:"):
        with pytest.raises(SecurityError, match="failed authentication"):
            cipher.decrypt(bad, "owner_contact")
    with pytest.raises(SecurityError, match="not an encrypted field"):
        cipher.decrypt("secret", "owner_contact")


def test_wrong_context_is_refused() -> None:
    cipher = FieldCipher(KEY)
    token = cipher.encrypt("secret", "owner_contact")
    with pytest.raises(SecurityError, match="another field"):
        cipher.decrypt(token, "owner_email")


def test_wrong_key_names_the_key_needed() -> None:
    token = FieldCipher(KEY).encrypt("secret", "c")
    other = FieldCipher(bytes(16))
    with pytest.raises(SecurityError, match=f"data key {key_id(KEY)}.*OPSLAKE_DATA_KEY"):
        other.decrypt(token, "c")
    relabelled = token.replace(key_id(KEY), other.key_id)
    with pytest.raises(SecurityError, match="failed authentication"):
        other.decrypt(relabelled, "c")


def test_previous_keys_open_old_tokens_and_new_ones_use_the_current_key() -> None:
    old_token = FieldCipher(KEY).encrypt("secret", "c")
    rotated = FieldCipher(bytes(16), previous=[KEY])
    assert rotated.decrypt(old_token, "c") == "secret"
    assert f":{rotated.key_id}:" in rotated.encrypt("secret", "c")


def test_key_file_is_created_private_and_reused(settings: Settings) -> None:
    first = FieldCipher.from_settings(settings, environ={})
    path = settings.state_dir / "keys" / "data.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) == 32
    second = FieldCipher.from_settings(settings, environ={})
    assert second.key_id == first.key_id
    assert second.decrypt(first.encrypt("secret", "c"), "c") == "secret"
    assert [p.name for p in path.parent.iterdir()] == ["data.key"]


def test_readable_key_file_is_refused(settings: Settings) -> None:
    FieldCipher.from_settings(settings, environ={})
    path: Path = settings.state_dir / "keys" / "data.key"
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        FieldCipher.from_settings(settings, environ={})


def test_environment_key_wins(settings: Settings) -> None:
    cipher = FieldCipher.from_settings(settings, environ={"OPSLAKE_DATA_KEY": KEY.hex()})
    assert cipher.key_id == key_id(KEY)
    assert not (settings.state_dir / "keys" / "data.key").exists()
    FieldCipher.from_settings(settings, environ={})
    assert FieldCipher.from_settings(
        settings, environ={"OPSLAKE_DATA_KEY": KEY.hex()}
    ).key_id == key_id(KEY)


@pytest.mark.parametrize("raw", ["abc", "00" * 15, "zz" * 16, "00" * 32])
def test_malformed_environment_key_says_how_to_make_one(settings: Settings, raw: str) -> None:
    with pytest.raises(ConfigError, match="32 hex digits.*token_hex"):
        FieldCipher.from_settings(settings, environ={"OPSLAKE_DATA_KEY": raw})


def test_deterministic_tokens_are_equal_for_equal_values_and_still_open() -> None:
    cipher = FieldCipher(bytes(range(16)))
    a = cipher.encrypt("13800000001", "ledger.contact", deterministic=True)
    assert a == cipher.encrypt("13800000001", "ledger.contact", deterministic=True)
    assert a != cipher.encrypt("13800000002", "ledger.contact", deterministic=True)
    assert a != cipher.encrypt("13800000001", "other.column", deterministic=True)
    assert cipher.decrypt(a, "ledger.contact") == "13800000001"
