"""Identity store: password policy, lockout, expiry, sessions, TOTP, API keys, quotas, usage."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from opslake.errors import (
    AuthError,
    Forbidden,
    InputError,
    NotFoundError,
    PasswordExpired,
    QuotaExceeded,
)
from opslake.security.identity import Holder, IdentityStore, Use
from opslake.security.roles import ROLES
from opslake.security.totp import b32_key, hotp, totp
from opslake.settings import Settings

PASSWORD = "Correct-Horse-42"
START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


class Clock:
    """A settable clock for the store."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock, database_url: str | None) -> IdentityStore:
    """The store on each backend: SQLite, then PostgreSQL (see conftest's database_url)."""
    store = IdentityStore(Settings(state_dir=tmp_path, database_url=database_url), now=clock)
    store.bootstrap_admin("root", PASSWORD)
    store.add_user("alice", "ops_engineer", PASSWORD)
    store.add_user("bob", "dept_viewer", PASSWORD, departments=["税务局"], businesses=["税务服务"])
    return store


def _code(secret: str, at: datetime) -> str:
    return totp(b32_key(secret), at.timestamp())


# -- passwords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "needles"),
    [
        ("Sh0rt!", ["at least 12 characters (it has 6)"]),
        (
            "alllowercaseletters",
            ["3 of 4 character classes (it has 1", "an upper-case letter", "a digit", "a symbol"],
        ),
        ("lowerUPPERonlyhere", ["3 of 4 character classes (it has 2"]),
        ("Carol-Secret-99", ["no copy of the user name"]),
        ("carol", ["at least 12", "character classes", "user name"]),
    ],
)
def test_password_policy_refusals_list_what_is_missing(
    store: IdentityStore, password: str, needles: list[str]
) -> None:
    with pytest.raises(InputError) as err:
        store.add_user("carol", "ops_engineer", password)
    for needle in needles:
        assert needle in str(err.value)
    assert "carol" not in [u.name for u in store.users()]


def test_password_policy_accepts_three_classes(store: IdentityStore) -> None:
    store.add_user("carol", "ops_engineer", "lowerupper99XY")
    assert store.login("carol", "lowerupper99XY").token


def test_argon2id_hashes_are_salted_per_user(store: IdentityStore) -> None:
    with store.db.connect() as conn:
        hashes = {r[0]: r[1] for r in conn.execute("SELECT name, password FROM users").fetchall()}
    assert len(set(hashes.values())) == 3
    for stored in hashes.values():
        assert stored.startswith("$argon2id$")
        assert PASSWORD not in stored


def test_user_validation(store: IdentityStore) -> None:
    with pytest.raises(InputError, match="does not exist"):
        store.add_user("carol", "superuser", PASSWORD)
    with pytest.raises(InputError, match="at least one of them"):
        store.add_user("carol", "dept_viewer", PASSWORD)
    with pytest.raises(InputError, match="already exists"):
        store.add_user("alice", "ops_engineer", PASSWORD)
    with pytest.raises(InputError, match="not allowed"):
        store.add_user("bad name", "ops_engineer", PASSWORD)
    with pytest.raises(Forbidden, match="already exists"):
        store.bootstrap_admin("root2", PASSWORD)
    bob = next(u for u in store.users() if u.name == "bob")
    assert (bob.role, bob.departments, bob.businesses) == (
        "dept_viewer",
        ("税务局",),
        ("税务服务",),
    )


# -- login, lockout, expiry --------------------------------------------------------------


def test_lockout_after_five_failures_and_unlock_after_fifteen_minutes(
    store: IdentityStore, clock: Clock
) -> None:
    for _ in range(4):
        with pytest.raises(AuthError, match="wrong user name, password"):
            store.login("alice", "Wrong-Password-1")
        clock.advance(minutes=1)
    with pytest.raises(AuthError, match="now locked until"):
        store.login("alice", "Wrong-Password-1")
    with pytest.raises(AuthError, match="is locked"):
        store.login("alice", PASSWORD)  # even the right password while locked
    clock.advance(minutes=14, seconds=59)
    with pytest.raises(AuthError, match="is locked"):
        store.login("alice", PASSWORD)
    clock.advance(seconds=1)
    assert store.login("alice", PASSWORD).token
    assert next(u for u in store.users() if u.name == "alice").failed_attempts == 0


def test_a_lockout_ends_the_sessions_the_user_had(store: IdentityStore) -> None:
    token = store.login("alice", PASSWORD).token
    assert store.session(token).user == "alice"
    for _ in range(4):
        with pytest.raises(AuthError, match="wrong user name"):
            store.login("alice", "Wrong-Password-1")
    assert store.session(token).user == "alice"  # failures below the limit end nothing
    with pytest.raises(AuthError, match="now locked until"):
        store.login("alice", "Wrong-Password-1")
    with pytest.raises(AuthError, match="session unknown or ended"):
        store.session(token)


def test_failures_outside_the_window_do_not_lock(store: IdentityStore, clock: Clock) -> None:
    for _ in range(4):
        with pytest.raises(AuthError):
            store.login("alice", "Wrong-Password-1")
    clock.advance(minutes=16)
    with pytest.raises(AuthError, match="wrong user name"):
        store.login("alice", "Wrong-Password-1")  # a new window: count is 1
    assert store.login("alice", PASSWORD).token


def test_success_resets_the_failure_count(store: IdentityStore) -> None:
    for _ in range(4):
        with pytest.raises(AuthError):
            store.login("alice", "Wrong-Password-1")
    store.login("alice", PASSWORD)
    for _ in range(4):
        with pytest.raises(AuthError, match="wrong user name"):
            store.login("alice", "Wrong-Password-1")


def test_admin_unlock_and_unknown_user(store: IdentityStore) -> None:
    for _ in range(5):
        with pytest.raises(AuthError):
            store.login("alice", "Wrong-Password-1")
    store.unlock_user("alice")
    assert store.login("alice", PASSWORD).token
    with pytest.raises(AuthError, match="wrong user name"):
        store.login("nobody", PASSWORD)


def test_password_expiry_and_change(store: IdentityStore, clock: Clock) -> None:
    clock.advance(days=90)
    with pytest.raises(PasswordExpired, match="password expired; change it"):
        store.login("alice", PASSWORD)
    with pytest.raises(AuthError, match="wrong user name"):
        store.set_password("alice", "Brand-New-Pass-7", current="Wrong-Password-1")
    with pytest.raises(InputError, match="equals the current one"):
        store.set_password("alice", PASSWORD, current=PASSWORD)
    with pytest.raises(InputError, match="refused"):
        store.set_password("alice", "short", current=PASSWORD)
    store.set_password("alice", "Brand-New-Pass-7", current=PASSWORD)
    with pytest.raises(AuthError):
        store.login("alice", PASSWORD)
    assert store.login("alice", "Brand-New-Pass-7").token


def test_disabled_user_cannot_log_in_and_last_admin_stays(store: IdentityStore) -> None:
    token = store.login("alice", PASSWORD).token
    store.disable_user("alice")
    with pytest.raises(AuthError, match="session unknown"):
        store.session(token)
    with pytest.raises(AuthError, match="disabled"):
        store.login("alice", PASSWORD)
    with pytest.raises(Forbidden, match="last active administrator"):
        store.disable_user("root")
    with pytest.raises(NotFoundError):
        store.disable_user("nobody")


# -- sessions ----------------------------------------------------------------------------


def test_session_principal_and_logout(store: IdentityStore, clock: Clock) -> None:
    session = store.login("bob", PASSWORD)
    assert session.expires_at == clock.now + timedelta(minutes=30)
    assert len(session.token) >= 43
    with store.db.connect() as conn:
        assert not conn.execute(
            "SELECT 1 FROM sessions WHERE token_hash = ?", (session.token,)
        ).fetchone()
    principal = store.session(session.token)
    assert principal.user == "bob" and principal.role == "dept_viewer"
    assert principal.scopes == ROLES["dept_viewer"].scopes
    assert principal.departments == {"税务局"} and principal.businesses == {"税务服务"}
    assert principal.key_id is None and principal.row_scoped
    store.logout(session.token)
    with pytest.raises(AuthError, match="log in again"):
        store.session(session.token)


def test_session_idle_timeout_extends_with_use(store: IdentityStore, clock: Clock) -> None:
    token = store.login("alice", PASSWORD).token
    for _ in range(3):
        clock.advance(minutes=29)
        assert store.session(token).user == "alice"
    clock.advance(minutes=30)
    with pytest.raises(AuthError, match="idle"):
        store.session(token)
    with pytest.raises(AuthError, match="unknown"):
        store.session(token)


def test_session_absolute_lifetime(store: IdentityStore, clock: Clock) -> None:
    token = store.login("alice", PASSWORD).token
    for _ in range(16):
        clock.advance(minutes=29, seconds=59)
        store.session(token)
    clock.advance(minutes=1)  # 8 h 0 min 44 s after login, last used 1 min ago
    with pytest.raises(AuthError, match="8-hour limit"):
        store.session(token)


def test_password_change_ends_sessions(store: IdentityStore) -> None:
    token = store.login("alice", PASSWORD).token
    store.set_password("alice", "Brand-New-Pass-7")
    with pytest.raises(AuthError):
        store.session(token)


# -- TOTP --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "code"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_totp_rfc6238_sha1_vectors(at: int, code: str) -> None:
    assert totp(b"12345678901234567890", at, digits=8) == code


def test_hotp_rfc4226_vectors() -> None:
    expected = [
        "755224",
        "287082",
        "359152",
        "969429",
        "338314",
        "254676",
        "287922",
        "162583",
        "399871",
        "520489",
    ]
    assert [hotp(b"12345678901234567890", i) for i in range(10)] == expected


def test_enrol_and_verify_totp_with_window_and_replay(store: IdentityStore, clock: Clock) -> None:
    secret, uri = store.enrol_totp("alice")
    assert len(b32_key(secret)) == 20
    assert uri.startswith("otpauth://totp/OpsLake%3Aalice?secret=" + secret)
    assert "issuer=OpsLake" in uri and "digits=6" in uri and "period=30" in uri
    at = datetime(2026, 3, 1, 8, 0, 15, tzinfo=UTC)
    code = _code(secret, at)
    assert len(code) == 6
    store.verify_totp("alice", code, at=at)
    with pytest.raises(AuthError, match="already used"):
        store.verify_totp("alice", code, at=at)
    with pytest.raises(AuthError, match="already used"):
        store.verify_totp("alice", _code(secret, at - timedelta(seconds=30)), at=at)
    # The next step's code is accepted one step early (clock drift) but only once.
    following = _code(secret, at + timedelta(seconds=30))
    store.verify_totp("alice", following, at=at)
    with pytest.raises(AuthError, match="already used"):
        store.verify_totp("alice", following, at=at + timedelta(seconds=30))
    with pytest.raises(AuthError, match="wrong TOTP code"):
        store.verify_totp("alice", _code(secret, at + timedelta(minutes=5)), at=at)
    with pytest.raises(AuthError, match="6 digits"):
        store.verify_totp("alice", "12ab56", at=at)


def test_an_administrator_enrols_totp_before_signing_in(store: IdentityStore, clock: Clock) -> None:
    with pytest.raises(AuthError, match="enrol an authenticator first"):
        store.login("root", PASSWORD)
    with pytest.raises(AuthError, match="wrong user name"):  # says nothing without the password
        store.login("root", "Wrong-Password-1")
    secret, _ = store.enrol_totp("root")
    assert store.login("root", PASSWORD, totp=_code(secret, clock.now)).token


def test_login_needs_totp_once_enrolled(store: IdentityStore, clock: Clock) -> None:
    secret, _ = store.enrol_totp("alice")
    with pytest.raises(AuthError, match="TOTP authenticator"):
        store.login("alice", PASSWORD)
    with pytest.raises(AuthError, match="wrong user name"):
        store.login(
            "alice", PASSWORD, totp="000000" if _code(secret, clock.now) != "000000" else "111111"
        )
    assert store.login("alice", PASSWORD, totp=_code(secret, clock.now)).token


def test_totp_secret_goes_through_protect(
    tmp_path: Path, clock: Clock, database_url: str | None
) -> None:
    store = IdentityStore(
        Settings(state_dir=tmp_path, database_url=database_url),
        now=clock,
        protect=lambda s: "enc:" + s[::-1],
        unprotect=lambda s: s.removeprefix("enc:")[::-1],
    )
    store.bootstrap_admin("root", PASSWORD)
    secret, _ = store.enrol_totp("root")
    with store.db.connect() as conn:
        stored = conn.execute("SELECT totp_secret FROM users").fetchone()[0]
    assert stored == "enc:" + secret[::-1]
    store.verify_totp("root", _code(secret, clock.now))


def test_admin_second_factor(store: IdentityStore, clock: Clock) -> None:
    # An administrator's API key works before TOTP enrolment; its admin actions do not.
    admin = store.authenticate_key(store.create_key("root")[1])
    with pytest.raises(Forbidden, match="no TOTP authenticator"):
        store.require_second_factor(admin, "123456")
    secret, _ = store.enrol_totp("root")
    with pytest.raises(AuthError, match="need a TOTP code"):
        store.require_second_factor(admin, None)
    code = _code(secret, clock.now)
    store.require_second_factor(admin, code)
    store.require_second_factor(admin, code)  # the code on screen confirms several actions
    clock.advance(seconds=30)
    newer = _code(secret, clock.now)
    store.require_second_factor(admin, newer)
    with pytest.raises(AuthError, match="already used"):
        store.require_second_factor(admin, code)  # an older code never again
    with pytest.raises(AuthError, match="already used"):
        store.verify_totp("root", newer)  # nor the last one for signing in
    engineer = store.session(store.login("alice", PASSWORD).token)
    with pytest.raises(Forbidden, match="admin role"):
        store.require_second_factor(engineer, "123456")


def test_wrong_totp_codes_count_towards_lockout(store: IdentityStore, clock: Clock) -> None:
    secret, _ = store.enrol_totp("root")
    good = _code(secret, clock.now)
    bad = "000000" if good != "000000" else "111111"
    for _ in range(5):
        with pytest.raises(AuthError):
            store.verify_totp("root", bad)
    with pytest.raises(AuthError, match="is locked"):
        store.verify_totp("root", good)


# -- API keys ----------------------------------------------------------------------------


def test_key_authenticates_with_role_scopes_and_is_stored_hashed(store: IdentityStore) -> None:
    key_id, raw = store.create_key("bob")
    assert raw.startswith(f"olk_{key_id}_")
    principal = store.authenticate_key(raw)
    assert principal.user == "bob" and principal.key_id == key_id
    assert principal.scopes == ROLES["dept_viewer"].scopes
    assert principal.departments == {"税务局"}
    secret = raw.split("_", 2)[2]
    with store.db.connect() as conn:
        dump = "\n".join(
            repr(tuple(row))
            for table in ("users", "sessions", "api_keys", "api_usage", "session_usage")
            for row in conn.execute(f"SELECT * FROM {table}").fetchall()
        )
    assert key_id in dump  # the dump does hold the key's row
    assert secret not in dump
    [listed] = store.list_keys("bob")
    assert listed.key_id == key_id and listed.quota_per_day == 10000
    assert listed.expires_at - listed.created_at == timedelta(days=365)
    assert not hasattr(listed, "secret_hash")


def test_key_scopes_narrow_never_widen(store: IdentityStore) -> None:
    _, raw = store.create_key("alice", scopes=["metrics:read"])
    assert store.authenticate_key(raw).scopes == {"metrics:read"}
    with pytest.raises(Forbidden, match=r"lacks scopes \['admin:users'\]"):
        store.create_key("alice", scopes=["metrics:read", "admin:users"])
    with pytest.raises(InputError, match="unknown scopes"):
        store.create_key("alice", scopes=["everything"])
    with pytest.raises(InputError, match="at least one scope"):
        store.create_key("alice", scopes=[])


def test_key_refusals_have_distinct_messages(store: IdentityStore, clock: Clock) -> None:
    key_id, raw = store.create_key("alice", expires_days=30)
    with pytest.raises(AuthError, match="not an OpsLake API key"):
        store.authenticate_key("Bearer something")
    with pytest.raises(AuthError, match="not recognised"):
        store.authenticate_key(raw[:-1] + ("A" if raw[-1] != "A" else "B"))
    with pytest.raises(AuthError, match="not recognised"):
        store.authenticate_key("olk_0000000000000000_" + raw.split("_", 2)[2])
    clock.advance(days=30)
    with pytest.raises(AuthError, match="expired on"):
        store.authenticate_key(raw)
    other_id, other = store.create_key("alice")
    store.revoke_key(other_id)
    with pytest.raises(AuthError, match="revoked on"):
        store.authenticate_key(other)
    assert next(k for k in store.list_keys() if k.key_id == other_id).revoked_at == clock.now
    _, bobs = store.create_key("bob")
    store.disable_user("bob")
    with pytest.raises(AuthError, match="disabled user 'bob'"):
        store.authenticate_key(bobs)
    with pytest.raises(NotFoundError):
        store.revoke_key("nope")
    assert {k.user for k in store.list_keys()} == {"alice", "bob"}
    assert key_id in {k.key_id for k in store.list_keys("alice")}


# -- quotas and usage --------------------------------------------------------------------


def _use(store: IdentityStore, key_id: str, endpoint: str, rows: int, status: int) -> None:
    """Record one request of ``key_id`` today, as the API's meter does in batches."""
    store.record_uses(
        {(Holder("key", key_id), store.today(), endpoint): Use(1, rows, int(status >= 400))}
    )


def test_quota_per_utc_day(store: IdentityStore, clock: Clock) -> None:
    clock.now = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
    key_id, _ = store.create_key("alice", quota_per_day=3)
    for used in (0, 1, 2):
        assert store.quota_use(Holder("key", key_id)) == (3, used)
        _use(store, key_id, "/metrics", 10, 200)
    err = store.quota_exceeded(Holder("key", key_id), 3)
    assert "resets at 2026-03-02 00:00 UTC" in str(err) and "in 1 h 30 min" in str(err)
    assert err.reset_at == datetime(2026, 3, 2, tzinfo=UTC)
    assert err.http_status == 429 and isinstance(err, QuotaExceeded)
    clock.advance(hours=2)
    assert store.quota_use(Holder("key", key_id)) == (3, 0)
    with pytest.raises(NotFoundError):
        store.quota_use(Holder("key", "nope"))


def test_usage_counters(store: IdentityStore, clock: Clock) -> None:
    a, _ = store.create_key("alice")
    b, _ = store.create_key("bob")
    _use(store, a, "/metrics", 100, 200)
    _use(store, a, "/metrics", 50, 500)
    _use(store, a, "/incidents", 5, 200)
    _use(store, b, "/metrics", 0, 403)
    clock.advance(days=1)
    _use(store, a, "/metrics", 1, 200)
    day1, day2 = "2026-03-01", "2026-03-02"
    rows = {(u.key_id, u.endpoint, u.day): (u.requests, u.rows, u.errors) for u in store.usage()}
    assert rows == {
        (a, "/metrics", day1): (2, 150, 1),
        (a, "/incidents", day1): (1, 5, 0),
        (b, "/metrics", day1): (1, 0, 1),
        (a, "/metrics", day2): (1, 1, 0),
    }
    assert {(u.endpoint, u.day) for u in store.usage(key_id=a, day=day1)} == {
        ("/metrics", day1),
        ("/incidents", day1),
    }
    assert [u.key_id for u in store.usage(day=START.date() + timedelta(days=1))] == [a]
    assert next(k for k in store.list_keys("alice")).last_used_at == clock.now
    with pytest.raises(NotFoundError):
        _use(store, "nope", "/metrics", 0, 200)


def test_store_is_safe_across_threads(store: IdentityStore) -> None:
    key_id, _ = store.create_key("alice")

    def hammer() -> None:
        for _ in range(25):
            _use(store, key_id, "/metrics", 1, 200)

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(hammer) for _ in range(8)]:
            future.result()  # re-raises whatever a thread hit
    [row] = store.usage(key_id)
    assert (row.requests, row.rows) == (200, 200)
    if store.db.dialect == "sqlite":
        with store.db.connect() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
