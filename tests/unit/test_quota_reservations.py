"""Quota reservations (UsageMeter): atomic under threads, refunded, per user for sessions."""
# ruff: noqa: F811 - the fixtures imported from another module are these tests' parameters

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from opslake.errors import QuotaExceeded
from opslake.security.identity import Holder, IdentityStore
from opslake.security.metering import UsageMeter
from opslake.settings import Settings
from tests.unit.test_identity import PASSWORD, Clock, clock, store  # noqa: F401 - fixtures


@pytest.mark.parametrize("interval_s", [3600, 0], ids=["from memory", "reread every time"])
def test_fifty_threads_never_overshoot_a_quota_of_twenty(
    store: IdentityStore, interval_s: float
) -> None:
    key_id, _ = store.create_key("alice", quota_per_day=20)
    holder = Holder("key", key_id)
    meter = UsageMeter(store, interval_s=interval_s)
    start = threading.Barrier(50)

    def one_request() -> bool:
        start.wait()  # all 50 reserve at once
        try:
            reservation = meter.reserve(holder)
        except QuotaExceeded:
            return False
        meter.keep(reservation, "GET /v1/incidents", 1, 200)
        return True

    with ThreadPoolExecutor(50) as pool:
        answered = [f.result() for f in [pool.submit(one_request) for _ in range(50)]]
    assert answered.count(True) == 20
    meter.flush()
    assert sum(u.requests for u in store.usage(key_id)) == 20


def test_a_refunded_unit_can_be_reserved_again_and_settling_twice_does_nothing(
    store: IdentityStore,
) -> None:
    key_id, _ = store.create_key("alice", quota_per_day=2)
    holder = Holder("key", key_id)
    meter = UsageMeter(store, interval_s=3600)
    first, second = meter.reserve(holder), meter.reserve(holder)
    with pytest.raises(QuotaExceeded):
        meter.reserve(holder)  # both units in flight
    meter.refund(first)
    meter.refund(first)  # no second unit back
    meter.keep(first, "GET /v1/incidents", 0, 200)  # nor kept after a refund
    third = meter.reserve(holder)
    with pytest.raises(QuotaExceeded):
        meter.reserve(holder)
    meter.keep(second, "GET /v1/incidents", 3, 200)
    meter.keep(third, "GET /v1/incidents", 4, 400)
    meter.refund(third)  # already kept: stays kept
    with pytest.raises(QuotaExceeded):
        meter.reserve(holder)
    meter.flush()
    [row] = store.usage(key_id)
    assert (row.requests, row.rows, row.errors) == (2, 7, 1)


def test_kept_units_survive_a_restart_and_in_flight_ones_count_at_a_reread(
    store: IdentityStore,
) -> None:
    key_id, _ = store.create_key("alice", quota_per_day=3)
    holder = Holder("key", key_id)
    meter = UsageMeter(store, interval_s=0)  # rereads every time
    meter.keep(meter.reserve(holder), "GET /v1/incidents", 0, 200)
    meter.reserve(holder)  # in flight across rereads
    meter.stop()  # shutdown writes what was kept
    meter.reserve(holder)  # the last unit, after a reread
    with pytest.raises(QuotaExceeded):
        meter.reserve(holder)
    restarted = UsageMeter(store, interval_s=3600)
    # In memory, a restarted meter reads the stored count (one kept): the old process's units
    # in flight are gone with it. Shared (PostgreSQL), the database keeps every unit taken and
    # not refunded, in flight or not: a crash never gives a holder more.
    for _ in range(0 if restarted.shared else 2):
        restarted.reserve(holder)
    with pytest.raises(QuotaExceeded):
        restarted.reserve(holder)


def test_sessions_count_against_their_users_quota(tmp_path: Path, clock: Clock) -> None:
    identities = IdentityStore(Settings(state_dir=tmp_path, session_quota_per_day=2), now=clock)
    identities.add_user("alice", "ops_engineer", PASSWORD)
    identities.add_user("bob", "ops_engineer", PASSWORD)
    meter = UsageMeter(identities, interval_s=3600)
    user = Holder.of(identities.session(identities.login("alice", PASSWORD).token))
    assert user == Holder("user", "alice")
    meter.keep(meter.reserve(user), "GET /v1/incidents", 0, 200)
    other = identities.session(identities.login("alice", PASSWORD).token)
    meter.keep(meter.reserve(Holder.of(other)), "GET /v1/incidents", 0, 200)  # same user
    with pytest.raises(QuotaExceeded, match="sessions of user 'alice' used all 2 requests"):
        meter.reserve(user)
    meter.reserve(Holder("user", "bob"))  # each user has their own
    meter.flush()
    assert identities.quota_use(user) == (2, 2)
    key_id, _ = identities.create_key("alice", quota_per_day=5)  # keys have their own quota
    assert identities.quota_use(Holder("key", key_id)) == (5, 0)
