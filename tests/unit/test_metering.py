"""API-key quotas and usage counted in memory and written in batches (UsageMeter)."""
# ruff: noqa: F811 - the fixtures imported from another module are these tests' parameters

from __future__ import annotations

import pytest

from opslake.errors import QuotaExceeded
from opslake.security.identity import Holder, IdentityStore
from opslake.security.metering import UsageMeter
from tests.unit.test_identity import Clock, _use, clock, store  # noqa: F401 - fixtures


@pytest.fixture
def database_url() -> None:
    """SQLite only: these are the in-memory meter's tests, the meter of a SQLite store (one
    host). On a shared database the meter reserves in the database instead; its tests are in
    test_quota_reservations (both backends) and test_api_hosts (two API processes)."""
    return


def test_quota_holds_from_memory_and_counts_reach_the_store_in_one_batch(
    store: IdentityStore,
) -> None:
    key_id, _ = store.create_key("alice", quota_per_day=4)
    holder = Holder("key", key_id)
    _use(store, key_id, "GET /v1/incidents", 2, 200)  # an earlier process's use
    meter = UsageMeter(store, interval_s=3600)  # no rereads in this test
    meter.keep(meter.reserve(holder), "GET /v1/metrics/{metric_id}/data", 10, 200)
    for _ in range(2):  # from memory now
        meter.keep(meter.try_reserve(holder), "GET /v1/metrics/{metric_id}/data", 10, 200)
    with pytest.raises(QuotaExceeded):
        meter.try_reserve(holder)
    assert [u.requests for u in store.usage(key_id)] == [1]  # nothing written yet
    meter.flush()
    rows = {u.endpoint: (u.requests, u.rows, u.errors) for u in store.usage(key_id)}
    assert rows == {"GET /v1/incidents": (1, 2, 0), "GET /v1/metrics/{metric_id}/data": (3, 30, 0)}
    with pytest.raises(QuotaExceeded):  # still out after the flush
        meter.try_reserve(holder)


def test_use_by_other_processes_is_seen_at_the_next_reread(store: IdentityStore) -> None:
    key_id, _ = store.create_key("alice", quota_per_day=6)
    holder = Holder("key", key_id)
    meter = UsageMeter(store, interval_s=0)  # always reread
    meter.keep(meter.reserve(holder), "GET /v1/incidents", 0, 404)  # kept, not yet written
    in_flight = meter.reserve(holder)  # not settled yet
    for _ in range(3):
        _use(store, key_id, "GET /v1/incidents", 0, 200)  # another API process
    meter.keep(meter.reserve(holder), "GET /v1/incidents", 0, 200)  # the 6th of 6
    with pytest.raises(QuotaExceeded):
        meter.reserve(holder)
    meter.refund(in_flight)
    meter.flush()
    meter.keep(meter.reserve(holder), "GET /v1/incidents", 0, 200)  # the refunded unit
    meter.flush()
    [row] = store.usage(key_id)
    assert (row.requests, row.errors) == (6, 1)


def test_a_failed_write_keeps_the_counts_for_the_next_flush(
    store: IdentityStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id, _ = store.create_key("alice")
    holder = Holder("key", key_id)
    meter = UsageMeter(store)
    meter.keep(meter.reserve(holder), "GET /v1/incidents", 7, 200)
    original = store.record_uses

    def broken(_counts: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "record_uses", broken)
    with pytest.raises(OSError):
        meter.flush()
    monkeypatch.setattr(store, "record_uses", original)
    meter.keep(meter.reserve(holder), "GET /v1/incidents", 1, 200)
    meter.stop()  # flushes
    [row] = store.usage(key_id)
    assert (row.requests, row.rows) == (2, 8)


def test_a_verified_key_is_remembered_for_seconds_but_revoking_here_is_immediate(
    store: IdentityStore,
    clock: Clock,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opslake.errors import AuthError
    from opslake.security import keys
    from opslake.security.identity import KEY_CACHE_SECONDS
    from opslake.settings import Settings

    key_id, raw = store.create_key("alice")
    elsewhere = IdentityStore(Settings(state_dir=tmp_path), now=clock)  # e.g. the CLI
    assert store.authenticate_key(raw).user == "alice"
    elsewhere.revoke_key(key_id)
    assert store.authenticate_key(raw).user == "alice"  # remembered a moment more
    later = keys.monotonic() + KEY_CACHE_SECONDS
    monkeypatch.setattr(keys, "monotonic", lambda: later)
    with pytest.raises(AuthError, match="revoked"):
        store.authenticate_key(raw)
    other_id, other = store.create_key("alice")
    assert store.authenticate_key(other).key_id == other_id
    store.revoke_key(other_id)
    with pytest.raises(AuthError, match="revoked"):
        store.authenticate_key(other)


def test_the_flushing_thread_keeps_quota_states_fresh(store: IdentityStore) -> None:
    import time

    key_id, _ = store.create_key("alice", quota_per_day=10)
    holder = Holder("key", key_id)
    meter = UsageMeter(store, interval_s=0.05)
    meter.refund(meter.reserve(holder))
    meter.start()
    try:
        meter.keep(meter.reserve(holder), "GET /v1/incidents", 0, 200)
        _use(store, key_id, "GET /v1/incidents", 0, 200)  # another API process
        deadline = time.monotonic() + 5
        while (
            sum(u.requests for u in store.usage(key_id)) < 2 and time.monotonic() < deadline
        ):  # flushed by the thread
            time.sleep(0.02)
        time.sleep(0.3)  # and reread after it
        taken = []
        while time.monotonic() < deadline:  # from memory, no reread
            try:
                reservation = meter.try_reserve(holder)
            except QuotaExceeded:
                break
            if reservation is None:  # the thread is behind
                time.sleep(0.01)
            else:
                taken.append(reservation)
        assert len(taken) == 8
        for reservation in taken:
            meter.refund(reservation)
    finally:
        meter.stop()
    assert sum(u.requests for u in store.usage(key_id)) == 2
