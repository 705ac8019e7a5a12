"""Subscriptions: conditions, signing, idempotency, row scoping and backoff (injected clock)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg2
import pyarrow as pa
import pytest

from opslake import subscriptions as subs
from opslake.crypto import hmac_sm3
from opslake.delivery import sign, verify
from opslake.errors import DeliveryError, InputError
from opslake.security.crypto import FieldCipher
from opslake.security.roles import ROLES, Principal

T0 = datetime(2026, 3, 2, 10, 5, tzinfo=UTC)
OPS = Principal("alice", "ops_engineer", ROLES["ops_engineer"].scopes)
VIEWER = Principal(
    "dora", "dept_viewer", ROLES["dept_viewer"].scopes, departments=frozenset({"health"})
)


class Reader:
    """A warehouse stand-in: DuckDB in memory with the serving tables' columns."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        self.con.execute(
            "CREATE TABLE metric_values (metric_id VARCHAR, metric_version VARCHAR, grain VARCHAR,"
            " bucket_start TIMESTAMPTZ, scope VARCHAR, entity_id VARCHAR, business VARCHAR, "
            "department VARCHAR, region VARCHAR, object_kind VARCHAR, object_type VARCHAR, "
            "value DOUBLE, numerator DOUBLE, denominator DOUBLE, dt VARCHAR, family VARCHAR)"
        )
        self.con.execute(
            "CREATE TABLE metric_values_live AS SELECT * EXCLUDE (family), "
            "'00' AS hour FROM metric_values"
        )
        self.con.execute(
            "CREATE TABLE anomalies (ts TIMESTAMPTZ, entity_id VARCHAR, metric VARCHAR, "
            "series VARCHAR, value DOUBLE, expected DOUBLE, score DOUBLE, detector VARCHAR, "
            "explanation VARCHAR, is_event BOOLEAN, dt VARCHAR)"
        )
        self.con.execute(
            'CREATE TABLE quality_results (day DATE, layer VARCHAR, "table" VARCHAR, '
            '"check" VARCHAR, kind VARCHAR, severity VARCHAR, passed BOOLEAN, '
            'observed VARCHAR, threshold VARCHAR, "rows" BIGINT, unexpected_rows BIGINT)'
        )
        self.con.execute(
            "CREATE TABLE asset_ledger (entity_id VARCHAR, name VARCHAR, kind VARCHAR, "
            "department VARCHAR, business VARCHAR, warranty_end DATE, contract_end DATE, "
            "licence_end DATE, days_to_warranty_end INTEGER, days_to_contract_end INTEGER, "
            "days_to_licence_end INTEGER, owner_contact_sm4 VARCHAR, dt VARCHAR)"
        )
        self.served = {
            "metric_values",
            "metric_values_live",
            "anomalies",
            "quality_results",
            "asset_ledger",
        }

    def add(
        self,
        bucket: datetime,
        value: float,
        *,
        department: str | None = None,
        live: bool = False,
        metric: str = "cpu_busy",
    ) -> None:
        scope = "department" if department else "all"
        table = "metric_values_live" if live else "metric_values"
        tail = "?, ?" if live else "?, 'f'"
        self.con.execute(
            f"INSERT INTO {table} VALUES (?, '1.0', '1h', ?, ?, NULL, NULL, ?, "
            f"NULL, NULL, NULL, ?, NULL, NULL, {tail})",
            [
                metric,
                bucket,
                scope,
                department,
                value,
                bucket.date().isoformat(),
                *(["10"] if live else []),
            ],
        )

    def check(
        self, day: date, check: str, passed: bool, severity: str = "error", table: str = "events"
    ) -> None:
        self.con.execute(
            "INSERT INTO quality_results VALUES (?, 'silver', ?, ?, 'not_null', "
            "?, ?, '3', '0', 100, ?)",
            [day, table, check, severity, passed, 0 if passed else 3],
        )

    def asset(self, dt: date, entity: str, *, department: str = "ops", **ends: int | None) -> None:
        """A ledger row of day ``dt``; ``ends`` gives days left, e.g. ``warranty=10``."""
        left = {what: ends.get(what) for what in ("warranty", "contract", "licence")}
        end = {w: dt + timedelta(days=d) if d is not None else None for w, d in left.items()}
        self.con.execute(
            "INSERT INTO asset_ledger VALUES (?, ?, 'server', ?, 'tax', ?, ?, ?, ?, ?, ?, NULL, ?)",
            [
                entity,
                f"{entity} name",
                department,
                end["warranty"],
                end["contract"],
                end["licence"],
                left["warranty"],
                left["contract"],
                left["licence"],
                dt.isoformat(),
            ],
        )

    def query(self, sql: str, params=()) -> pa.Table:
        return self.con.cursor().sql(sql, params=list(params)).to_arrow_table()

    def tables(self) -> set[str]:
        return set(self.served)


class FakeSender:
    """Records what it is asked to send; fails while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, str, str]] = []
        self.tries = 0

    def send(self, sub, secret, key, body) -> str:
        self.tries += 1
        if self.down:
            raise DeliveryError("connection refused")
        self.sent.append((sub.id, key, body))
        return "ok"

    def close(self) -> None:
        pass


@pytest.fixture
def store(tmp_path: Path, database_url: str | None) -> subs.SubscriptionStore:
    """The store on each backend: SQLite, then PostgreSQL (see conftest's database_url)."""
    store = subs.SubscriptionStore(tmp_path, database_url=database_url)
    store.egress.add("127.0.0.1:9", by="test")  # the webhook receiver these tests name
    return store


def _subscribe(store, condition, owner=OPS, by="all", filters=None, delivery=None):
    sub, secret = subs.new_subscription(
        owner,
        {
            "condition": condition,
            "metric_id": "cpu_busy",
            "by": by,
            "filters": filters or {},
            "delivery": delivery or {"type": "webhook", "url": "http://127.0.0.1:9/hook"},
        },
        T0,
        egress=store.egress,
    )
    return store.add(sub, secret)


def _run(reader, store, sender, now, sleeps=None):
    return subs.evaluate(
        reader,
        store,
        now=now,
        sender=sender,
        sleep=(sleeps.append if sleeps is not None else lambda _s: None),
    )


def test_signature_is_hmac_sm3_of_timestamp_dot_body_and_verifies() -> None:
    body = subs.canonical({"b": 1, "a": "é"})
    assert body == '{"a":"é","b":1}'
    sig = sign("s3cret-s3cret-s3cret", 1760000000, body, subs.SIGNING_SCHEME)
    assert sig == "sm3=" + hmac_sm3(b"s3cret-s3cret-s3cret", f"1760000000.{body}".encode())
    assert verify("s3cret-s3cret-s3cret", "1760000000", body, sig, now=1760000100)
    assert not verify("s3cret-s3cret-s3cret", "1760000000", body + " ", sig, now=1760000100)
    assert not verify("another-secret-xx", "1760000000", body, sig, now=1760000100)
    assert not verify("s3cret-s3cret-s3cret", "1760000000", body, sig, now=1760001000)


def test_new_data_delivers_each_bucket_once(store) -> None:
    reader, sender = Reader(), FakeSender()
    sub = _subscribe(store, {"type": "new_data"})
    reader.add(T0 - timedelta(hours=3), 1.0)  # before the subscription: not news
    assert _run(reader, store, sender, T0).queued == 0
    reader.add(T0.replace(minute=0), 2.0)  # the bucket in progress when it subscribed
    reader.add(T0.replace(minute=0) + timedelta(hours=1), 3.0)
    first = _run(reader, store, sender, T0 + timedelta(hours=1))
    assert (first.queued, first.sent) == (2, 2)
    again = _run(reader, store, sender, T0 + timedelta(hours=1, minutes=1))
    assert (again.queued, again.sent) == (0, 0)
    reader.add(T0.replace(minute=0) + timedelta(hours=2), 4.0)
    assert _run(reader, store, sender, T0 + timedelta(hours=2)).sent == 1
    values = [json.loads(body)["value"] for _, _, body in sender.sent]
    assert values == [2.0, 3.0, 4.0]
    assert {k.split(":")[0] for _, k, _ in sender.sent} == {"new"}
    assert all(s == sub.id for s, _, _ in sender.sent)


def test_threshold_fires_when_crossed_not_while_above(store) -> None:
    reader, sender = Reader(), FakeSender()
    _subscribe(store, {"type": "threshold", "op": ">", "value": 90})
    h = T0.replace(minute=0)
    for i, value in enumerate([50, 95, 96, 80, 92]):
        reader.add(h + timedelta(hours=i), value)
        _run(reader, store, sender, h + timedelta(hours=i, minutes=30))
    docs = [json.loads(body) for _, _, body in sender.sent]
    assert [(d["value"], d["previous_value"]) for d in docs] == [(95, 50), (92, 80)]
    assert docs[0]["threshold"] == {"op": ">", "value": 90.0}


def test_daily_rows_win_over_live_rows_of_the_same_hour(store) -> None:
    reader, sender = Reader(), FakeSender()
    _subscribe(store, {"type": "threshold", "op": ">=", "value": 10})
    h = T0.replace(minute=0)
    reader.add(h, 5.0, live=True)
    reader.add(h, 12.0)
    _run(reader, store, sender, T0)
    assert [json.loads(b)["value"] for _, _, b in sender.sent] == [12.0]


def test_a_department_viewer_only_gets_its_own_rows(store) -> None:
    reader, sender = Reader(), FakeSender()
    with pytest.raises(InputError, match="mixes departments"):
        _subscribe(store, {"type": "new_data"}, owner=VIEWER)
    _subscribe(store, {"type": "new_data"}, owner=VIEWER, by="department")
    h = T0.replace(minute=0)
    reader.add(h, 1.0, department="health")
    reader.add(h, 2.0, department="finance")
    _run(reader, store, sender, T0)
    assert [json.loads(b)["series"] for _, _, b in sender.sent] == [{"department": "health"}]


def test_failed_delivery_backs_off_then_is_delivered_once(store) -> None:
    reader, sender, sleeps = Reader(), FakeSender(), []
    sub = _subscribe(store, {"type": "new_data"})
    reader.add(T0.replace(minute=0), 1.0)
    sender.down = True
    first = _run(reader, store, sender, T0, sleeps)
    assert (first.queued, first.failed, sender.tries) == (1, 1, 1 + len(subs.RETRY_PAUSES))
    assert sleeps == list(subs.RETRY_PAUSES)  # short pauses in the pass, no long sleeps
    failed = store.records(sub.id)[-1]
    assert failed.status == "failed"
    assert subs.parse_ts(failed.next_attempt_at) == T0 + timedelta(seconds=30)
    # Not due yet: nothing is tried.
    _run(reader, store, sender, T0 + timedelta(seconds=20))
    assert sender.tries == 3
    # Due: tried again, still down: the wait doubles.
    _run(reader, store, sender, T0 + timedelta(seconds=31))
    again = store.records(sub.id)[-1]
    assert subs.parse_ts(again.next_attempt_at) == T0 + timedelta(seconds=31 + 60)
    assert again.attempts == 6
    sender.down = False
    done = _run(reader, store, sender, T0 + timedelta(seconds=95))
    assert done.sent == 1 and len(sender.sent) == 1
    assert [r.status for r in store.records(sub.id)] == ["queued", "failed", "failed", "sent"]
    # Acknowledged: never again.
    assert _run(reader, store, sender, T0 + timedelta(hours=1)).sent == 0
    assert len(sender.sent) == 1


def test_backoff_doubles_up_to_ten_minutes() -> None:
    assert [subs.RETRY.backoff(n).total_seconds() for n in range(1, 8)] == [
        30,
        60,
        120,
        240,
        480,
        600,
        600,
    ]


def test_a_delivery_failing_for_a_week_expires(store) -> None:
    reader, sender = Reader(), FakeSender()
    sub = _subscribe(store, {"type": "new_data"})
    reader.add(T0.replace(minute=0), 1.0)
    sender.down = True
    _run(reader, store, sender, T0)
    result = _run(reader, store, sender, T0 + subs.GIVE_UP_AFTER)
    assert result.expired == 1
    assert store.records(sub.id)[-1].status == "expired"
    assert _run(reader, store, sender, T0 + subs.GIVE_UP_AFTER * 2).failed == 0


def test_the_log_is_append_only_and_events_queue_once(store) -> None:
    reader, sender = Reader(), FakeSender()
    sub = _subscribe(store, {"type": "new_data"})
    event = {"event_key": "new::x", "value": 1}
    assert store.advance(sub, [event, event], {}, T0) == 1
    assert store.advance(sub, [event], {}, T0) == 0
    refused = (sqlite3.DatabaseError, psycopg2.Error)
    with store.db.connect() as conn, pytest.raises(refused, match="append-only"):
        conn.execute("UPDATE deliveries SET status = 'sent'")
    with store.db.connect() as conn, pytest.raises(refused, match="append-only"):
        conn.execute("DELETE FROM deliveries")
    _run(reader, store, sender, T0)
    assert [k for _, k, _ in sender.sent] == ["new::x"]


def test_secrets_are_sealed_and_never_listed(tmp_path: Path, database_url: str | None) -> None:
    cipher = FieldCipher(bytes(range(16)))
    store = subs.SubscriptionStore(
        tmp_path,
        database_url=database_url,
        protect=lambda s: cipher.encrypt(s, "ctx"),
        unprotect=lambda s: cipher.decrypt(s, "ctx"),
    )
    sub, secret = subs.new_subscription(
        OPS,
        {"condition": {"type": "new_data"}, "metric_id": "cpu_busy", "delivery": {"type": "mqtt"}},
        T0,
    )
    store.add(sub, secret)
    with store.db.connect() as conn:
        stored = conn.execute("SELECT secret FROM subscriptions").fetchone()[0]
    assert stored and secret not in stored
    assert store.secret(sub.id) == secret
    assert secret not in json.dumps(store.get(sub.id).public())
    assert store.get(sub.id).public()["delivery"]["topic"] == f"opslake-out/subscriptions/{sub.id}"


def test_sse_events_are_buffered_not_sent(store) -> None:
    reader, sender = Reader(), FakeSender()
    sub = _subscribe(store, {"type": "new_data"}, delivery={"type": "sse"})
    reader.add(T0.replace(minute=0), 1.0)
    result = _run(reader, store, sender, T0)
    assert (result.buffered, sender.tries) == (1, 0)
    assert [r.status for r in store.records(sub.id)] == ["queued", "buffered"]
    assert _run(reader, store, sender, T0 + timedelta(minutes=1)).buffered == 0


def test_anomaly_condition_reads_scores_at_or_above(store) -> None:
    reader, sender = Reader(), FakeSender()
    _subscribe(store, {"type": "anomaly", "min_score": 0.8})
    for minute, score in ((10, 0.5), (11, 0.9)):
        reader.con.execute(
            "INSERT INTO anomalies VALUES (?, 'srv-1', 'cpu_busy', 's1', 99, 40,"
            " ?, 'z', 'spike', true, ?)",
            [T0.replace(minute=minute), score, T0.date().isoformat()],
        )
    _run(reader, store, sender, T0 + timedelta(minutes=20))
    docs = [json.loads(b) for _, _, b in sender.sent]
    assert [(d["entity_id"], d["score"]) for d in docs] == [("srv-1", 0.9)]


def test_removed_subscriptions_stop_and_bad_specs_are_refused(store) -> None:
    reader, sender = Reader(), FakeSender()
    sub = _subscribe(store, {"type": "new_data"})
    store.remove(sub.id, T0)
    reader.add(T0.replace(minute=0), 1.0)
    assert _run(reader, store, sender, T0).queued == 0
    with pytest.raises(InputError, match="op"):
        _subscribe(store, {"type": "threshold", "op": "!=", "value": 1})
    with pytest.raises(InputError, match="do not apply"):
        _subscribe(store, {"type": "new_data"}, filters={"department": "x"})
    with pytest.raises(InputError, match="anomalies:read"):
        _subscribe(store, {"type": "anomaly", "min_score": 1}, owner=VIEWER)
    with pytest.raises(InputError, match="url"):
        _subscribe(store, {"type": "new_data"}, delivery={"type": "webhook", "url": "file:/x"})
    with pytest.raises(InputError, match="not allow-listed"):
        _subscribe(
            store,
            {"type": "new_data"},
            delivery={"type": "webhook", "url": "http://127.0.0.1:10/hook"},
        )


def test_owner_is_narrowed_to_its_current_role_and_paused_when_disabled() -> None:
    class User:
        def __init__(self, disabled: bool) -> None:
            self.name, self.role, self.disabled = "alice", "dept_viewer", disabled
            self.departments, self.businesses = ("health",), ()

    sub, _ = subs.new_subscription(
        OPS, {"condition": {"type": "new_data"}, "metric_id": "m", "delivery": {"type": "sse"}}, T0
    )
    now = subs.owners_from([User(False)])(sub)
    assert now is not None and now.row_scoped and now.departments == {"health"}
    assert "anomalies:read" not in now.scopes
    assert subs.owners_from([User(True)])(sub) is None


def test_a_receiver_down_is_tried_once_per_pass_not_once_per_event(store) -> None:
    reader, sender, sleeps = Reader(), FakeSender(), []
    _subscribe(store, {"type": "new_data"})
    reader.add(T0.replace(minute=0), 1.0)
    reader.add(T0.replace(minute=0) + timedelta(hours=1), 2.0)
    sender.down = True
    result = _run(reader, store, sender, T0 + timedelta(hours=1), sleeps)
    assert (result.failed, sender.tries, len(sleeps)) == (2, 3, 2)


def test_quality_failed_delivers_each_failing_check_once_per_day(store) -> None:
    reader, sender = Reader(), FakeSender()
    sub = _subscribe(store, {"type": "quality_failed"})
    errors_only = _subscribe(store, {"type": "quality_failed"}, filters={"severity": "error"})
    today = T0.date()
    reader.check(today - timedelta(days=1), "before", passed=False)  # before it subscribed
    reader.check(today, "ts_present", passed=False)
    reader.check(today, "ids_unique", passed=True)
    reader.check(today, "volume", passed=False, severity="warning")
    reader.served.discard("quality_results")  # not served yet: nothing, cursor unmoved
    assert _run(reader, store, sender, T0).queued == 0 and store.state(sub.id) == {}
    reader.served.add("quality_results")
    first = _run(reader, store, sender, T0 + timedelta(minutes=1))
    assert (first.queued, first.sent) == (3, 3)
    docs = {(s, json.loads(b)["check"]): json.loads(b) for s, _, b in sender.sent}
    assert set(docs) == {(sub.id, "ts_present"), (sub.id, "volume"), (errors_only.id, "ts_present")}
    doc = docs[(sub.id, "ts_present")]
    assert (doc["day"], doc["layer"], doc["table"], doc["unexpected_rows"]) == (
        today.isoformat(),
        "silver",
        "events",
        3,
    )
    assert doc["event_key"] == f"quality:{today}:silver.events:ts_present"
    # The same day read again: already delivered.
    assert _run(reader, store, sender, T0 + timedelta(minutes=2)).queued == 0
    reader.check(today + timedelta(days=1), "ts_present", passed=False)
    later = _run(reader, store, sender, T0 + timedelta(days=1))
    assert (later.queued, later.sent) == (2, 2)
    assert {json.loads(b)["day"] for _, _, b in sender.sent[-2:]} == {
        (today + timedelta(days=1)).isoformat()
    }
    assert store.state(sub.id) == {"day": (today + timedelta(days=1)).isoformat()}


def test_asset_expiry_tells_once_per_end_date_from_the_newest_ledger(store) -> None:
    reader, sender = Reader(), FakeSender()
    sub = _subscribe(store, {"type": "asset_expiry", "within_days": 30})
    mine = _subscribe(store, {"type": "asset_expiry", "within_days": 30}, owner=VIEWER)
    today = T0.date()
    reader.asset(today - timedelta(days=1), "srv-old", warranty=5)  # an older ledger: ignored
    reader.asset(today, "srv-1", warranty=10, contract=200)
    reader.asset(today, "srv-2", licence=-5, department="health")  # already ended: counts
    reader.asset(today, "srv-3", warranty=31, contract=400)
    first = _run(reader, store, sender, T0)
    got = sorted(
        (s, (d := json.loads(b))["entity_id"], d["ends"], d["days_left"]) for s, _, b in sender.sent
    )
    assert got == sorted(
        [
            (sub.id, "srv-1", "warranty", 10),
            (sub.id, "srv-2", "licence", -5),
            (mine.id, "srv-2", "licence", -5),
        ]
    )  # the viewer: its department
    assert first.sent == 3
    doc = next(json.loads(b) for s, _, b in sender.sent if s == sub.id and "srv-1" in b)
    assert doc["end_date"] == (today + timedelta(days=10)).isoformat()
    assert doc["as_of"] == today.isoformat() and doc["condition"] == "asset_expiry"
    # The next ledger: srv-1's same end date is not news; srv-3 comes within the window.
    tomorrow = today + timedelta(days=1)
    reader.asset(tomorrow, "srv-1", warranty=9, contract=199)
    reader.asset(tomorrow, "srv-2", licence=-6, department="health")
    reader.asset(tomorrow, "srv-3", warranty=30, contract=399)
    later = _run(reader, store, sender, T0 + timedelta(days=1))
    assert (later.queued, later.sent) == (1, 1)
    assert json.loads(sender.sent[-1][2])["entity_id"] == "srv-3"
    with pytest.raises(InputError, match="within_days"):
        _subscribe(store, {"type": "asset_expiry", "within_days": 4000})
