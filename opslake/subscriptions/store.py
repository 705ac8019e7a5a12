"""Subscriptions, cursors and the append-only delivery log: one SQLite file, or schema
``subscriptions`` of ``OPSLAKE_DATABASE_URL``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from opslake.errors import NotFoundError
from opslake.lake.state_db import Row, open_store
from opslake.security.egress import EgressPolicy
from opslake.settings import Settings
from opslake.subscriptions.model import Subscription, canonical, json_default, ts

DB_FILE = "subscriptions.db"
SECRET_CONTEXT = "subscriptions.secret"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, doc TEXT NOT NULL, secret TEXT NOT NULL,
    created_at TEXT NOT NULL, deleted_at TEXT);
CREATE TABLE IF NOT EXISTS cursors (
    sub_id TEXT PRIMARY KEY REFERENCES subscriptions(id), state TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, sub_id TEXT NOT NULL, event_key TEXT NOT NULL,
    channel TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL, at TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', next_attempt_at TEXT, payload TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS deliveries_one_event ON deliveries (sub_id, event_key)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries (sub_id, event_key, seq);
"""


@dataclass(frozen=True)
class DeliveryRecord:
    """One record of the delivery log."""

    seq: int
    sub_id: str
    event_key: str
    channel: str
    status: str  # queued, sent, failed, buffered, expired
    attempts: int
    at: str
    detail: str = ""
    next_attempt_at: str | None = None
    payload: str | None = None


class SubscriptionStore:
    """Subscriptions, cursors and the delivery log in ``state_dir/subscriptions.db`` (or the
    ``subscriptions`` schema of the database at ``database_url``).

    ``protect``/``unprotect`` encrypt and decrypt secrets at rest (SM4 field encryption in
    the service and the CLI); ``egress`` is the allow-list its webhooks are delivered under
    (by default only the entries added through the API to ``state_dir``).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        protect: Callable[[str], str] = lambda s: s,
        unprotect: Callable[[str], str] = lambda s: s,
        egress: EgressPolicy | None = None,
        database_url: str | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_FILE
        self._protect, self._unprotect = protect, unprotect
        self.egress = egress or EgressPolicy(self.state_dir, database_url=database_url)
        #: The store itself (SQLite file or a PostgreSQL schema).
        self.db = open_store(
            self.state_dir,
            database_url,
            DB_FILE,
            "subscriptions",
            _SCHEMA,
            "the subscriptions store",
            append_only={"deliveries": "the delivery log"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, cipher: Any | None = None) -> SubscriptionStore:
        """The store of ``settings`` under its egress policy; secrets sealed with ``cipher``
        (a FieldCipher)."""
        egress = EgressPolicy.from_settings(settings)
        if cipher is None:
            return cls(settings.state_dir, egress=egress, database_url=settings.database_url)
        return cls(
            settings.state_dir,
            protect=lambda s: cipher.encrypt(s, SECRET_CONTEXT),
            unprotect=lambda s: cipher.decrypt(s, SECRET_CONTEXT),
            egress=egress,
            database_url=settings.database_url,
        )

    # subscriptions

    def add(self, sub: Subscription, secret: str) -> Subscription:
        with self.db.tx() as conn:
            conn.execute(
                "INSERT INTO subscriptions (id, owner, doc, secret, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (sub.id, sub.owner, json.dumps(asdict(sub)), self._protect(secret), sub.created_at),
            )
        return sub

    @staticmethod
    def _sub(row: Row) -> Subscription:
        sub = Subscription(**json.loads(row["doc"]))
        sub.deleted_at = row["deleted_at"]
        return sub

    def list(self, owner: str | None = None, *, deleted: bool = False) -> list[Subscription]:
        """Subscriptions (of ``owner``, or all), oldest first."""
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT * FROM subscriptions WHERE (? IS NULL OR owner = ?) AND "
                "(? OR deleted_at IS NULL) ORDER BY created_at, id",
                (owner, owner, deleted),
            ).fetchall()
        return [self._sub(r) for r in rows]

    def get(self, sub_id: str) -> Subscription:
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT * FROM subscriptions WHERE id = ? AND deleted_at IS NULL", (sub_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"no subscription {sub_id!r}; list yours with "
                "GET /v1/subscriptions or `opslake subscriptions list`"
            )
        return self._sub(row)

    def secret(self, sub_id: str) -> str:
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT secret FROM subscriptions WHERE id = ?", (sub_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no subscription {sub_id!r}")
        return self._unprotect(row["secret"])

    def remove(self, sub_id: str, now: datetime) -> None:
        """Mark deleted: nothing more is evaluated or delivered; its log stays."""
        with self.db.tx() as conn:
            done = conn.execute(
                "UPDATE subscriptions SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL",
                (ts(now), sub_id),
            ).rowcount
        if not done:
            raise NotFoundError(f"no subscription {sub_id!r}")

    # cursors

    def state(self, sub_id: str) -> dict[str, Any]:
        with self.db.connect() as conn:
            row = conn.execute("SELECT state FROM cursors WHERE sub_id = ?", (sub_id,)).fetchone()
        return json.loads(row["state"]) if row else {}

    def advance(
        self,
        sub: Subscription,
        events: Sequence[Mapping[str, Any]],
        state: Mapping[str, Any],
        now: datetime,
    ) -> int:
        """Queue ``events`` and move the cursor to ``state`` in one transaction.

        Events already queued (same key) are skipped; returns how many are new.
        """
        new = 0
        with self.db.tx() as conn:
            for event in events:
                cur = conn.execute(
                    "INSERT INTO deliveries (sub_id, event_key, channel, status, attempts, at, "
                    "payload) VALUES (?, ?, ?, 'queued', 0, ?, ?) ON CONFLICT DO NOTHING",
                    (sub.id, event["event_key"], sub.delivery["type"], ts(now), canonical(event)),
                )
                new += cur.rowcount
            conn.execute(
                "INSERT INTO cursors (sub_id, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (sub_id) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at",
                (sub.id, json.dumps(state, default=json_default), ts(now)),
            )
        return new

    # the delivery log

    def append(self, record: DeliveryRecord) -> DeliveryRecord:
        """Append one record; its sequence number assigned."""
        with self.db.tx() as conn:
            cur = conn.execute(
                "INSERT INTO deliveries (sub_id, event_key, channel, status, attempts, at, "
                "detail, next_attempt_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "RETURNING seq",
                (
                    record.sub_id,
                    record.event_key,
                    record.channel,
                    record.status,
                    record.attempts,
                    record.at,
                    record.detail,
                    record.next_attempt_at,
                    record.payload,
                ),
            )
            seq = int(cur.fetchone()[0])
        return DeliveryRecord(**{**asdict(record), "seq": seq})

    def records(
        self,
        sub_id: str | None = None,
        *,
        after: int = 0,
        limit: int = 1000,
        status: str | None = None,
    ) -> list[DeliveryRecord]:
        """Log records (of one subscription), oldest first, after sequence ``after``."""
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT * FROM deliveries WHERE (? IS NULL OR sub_id = ?) AND seq > ? AND "
                "(? IS NULL OR status = ?) ORDER BY seq LIMIT ?",
                (sub_id, sub_id, after, status, status, limit),
            ).fetchall()
        return [DeliveryRecord(**dict(r)) for r in rows]

    def latest(self, sub_id: str, event_key: str) -> DeliveryRecord | None:
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT * FROM deliveries WHERE sub_id = ? AND event_key = ? "
                "ORDER BY seq DESC LIMIT 1",
                (sub_id, event_key),
            ).fetchone()
        return DeliveryRecord(**dict(row)) if row else None

    def due(self, now: datetime) -> list[tuple[DeliveryRecord, DeliveryRecord]]:
        """(latest record, queued record) of events to deliver now, oldest first."""
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT d.*, q.seq AS q_seq, q.at AS q_at, q.payload AS q_payload "
                "FROM deliveries d "
                "JOIN (SELECT sub_id, event_key, max(seq) AS seq FROM deliveries "
                "      GROUP BY sub_id, event_key) m ON m.seq = d.seq "
                "JOIN deliveries q ON q.sub_id = d.sub_id AND q.event_key = d.event_key "
                "     AND q.status = 'queued' "
                "JOIN subscriptions s ON s.id = d.sub_id AND s.deleted_at IS NULL "
                "WHERE d.status IN ('queued', 'failed') AND "
                "coalesce(d.next_attempt_at, '') <= ? ORDER BY q.seq",
                (ts(now),),
            ).fetchall()
        out = []
        for r in rows:
            row = dict(r)
            queued = DeliveryRecord(
                row.pop("q_seq"),
                row["sub_id"],
                row["event_key"],
                row["channel"],
                "queued",
                0,
                row.pop("q_at"),
                payload=row.pop("q_payload"),
            )
            out.append((DeliveryRecord(**row), queued))
        return out

    def failures(self, sub_id: str, event_key: str) -> int:
        with self.db.connect() as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM deliveries WHERE sub_id = ? AND "
                    "event_key = ? AND status = 'failed'",
                    (sub_id, event_key),
                ).fetchone()[0]
            )

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One evaluation at a time across threads, processes (service, CLI) and hosts."""
        with self.db.exclusive("evaluation"):
            yield
