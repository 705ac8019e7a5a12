"""Passwords: argon2id for new hashes, scrypt hashes of earlier versions re-hashed at sign-in."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from opslake.errors import AuthError
from opslake.security import sessions
from opslake.security.identity import IdentityStore
from opslake.settings import Settings

PASSWORD = "Correct-Horse-42"


def _scrypt(password: str) -> str:
    """A hash as earlier versions stored it (scrypt N=2^14, r=8, p=1)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def _stored(store: IdentityStore, name: str) -> str:
    with store.db.connect() as conn:
        return conn.execute("SELECT password FROM users WHERE name = ?", (name,)).fetchone()[0]


@pytest.fixture
def store(tmp_path: Path, database_url: str | None) -> IdentityStore:
    store = IdentityStore(Settings(state_dir=tmp_path, database_url=database_url))
    store.bootstrap_admin("root", PASSWORD)
    store.add_user("alice", "ops_engineer", PASSWORD)
    with store.db.connect() as conn:
        conn.execute("UPDATE users SET password = ? WHERE name = 'alice'", (_scrypt(PASSWORD),))
    return store


def test_a_scrypt_user_signs_in_and_is_rehashed_to_argon2id(store: IdentityStore) -> None:
    assert _stored(store, "alice").startswith("scrypt$")
    assert store.login("alice", PASSWORD).token
    rehashed = _stored(store, "alice")
    assert rehashed.startswith("$argon2id$")
    assert store.login("alice", PASSWORD).token  # the new hash verifies
    assert _stored(store, "alice") == rehashed  # and is not re-made again


def test_a_wrong_password_leaves_the_scrypt_hash(store: IdentityStore) -> None:
    before = _stored(store, "alice")
    with pytest.raises(AuthError, match="wrong user name"):
        store.login("alice", "Wrong-Horse-4242")
    assert _stored(store, "alice") == before


def test_an_unknown_user_costs_one_argon2id_verify(
    store: IdentityStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[str] = []
    real = sessions.verify_password

    def spy(password: str, stored: str) -> bool:
        checked.append(stored)
        return real(password, stored)

    monkeypatch.setattr(sessions, "verify_password", spy)
    with pytest.raises(AuthError, match="wrong user name"):
        store.login("nobody", PASSWORD)
    assert len(checked) == 1 and checked[0].startswith("$argon2id$")
