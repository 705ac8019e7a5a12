"""API keys for tests that push: a push-only sender (role ``ingest``) and its key file."""

from __future__ import annotations

import os
from pathlib import Path

from opslake.security.identity import IdentityStore
from opslake.settings import Settings

PASSWORD = "Correct-Horse-42-Battery"


def ingest_key(
    settings: Settings, user: str = "sender", role: str = "ingest", scopes: list[str] | None = None
) -> str:
    """A new key of a new user ``user`` with ``role`` (default: push only) in ``settings``."""
    store = IdentityStore.sealed(settings)
    store.add_user(user, role, PASSWORD, departments=["ops"] if role == "dept_viewer" else ())
    return store.create_key(user, scopes, quota_per_day=10_000_000)[1]


def ingest_key_file(settings: Settings, path: Path) -> Path:
    """Write a push-only key to ``path`` (mode 0600, no newline) as a sender's config reads it."""
    path.write_text(ingest_key(settings), encoding="ascii")
    os.chmod(path, 0o600)
    return path


def bearer(key: str) -> dict[str, str]:
    """The Authorization header carrying ``key``."""
    return {"Authorization": f"Bearer {key}"}
