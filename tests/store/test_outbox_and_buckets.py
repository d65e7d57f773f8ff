"""The notification outbox and the shared rate-limit buckets, on SQLite and on a real PostgreSQL:
rows are claimed by one owner at a time, leases run out, retries keep the row, and a bucket hands
out exactly its capacity however many stores (replicas) take from it at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from reconciler.store.outbox import OutboxEntry, OutboxStore
from reconciler.store.ratelimits import SharedBuckets
from reconciler.store.state import StateStore, open_state_store

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def entries(alert: str, *ids: str) -> list[OutboxEntry]:
    return [OutboxEntry(alert, i, f'{{"id": "{i}"}}') for i in ids]


def test_rows_are_claimed_oldest_first_by_one_owner_at_a_time(state: StateStore) -> None:
    a, b = OutboxStore(state, "a"), OutboxStore(state, "b")
    a.add(entries("ops", "n1", "n2"), T0)
    a.add(entries("ops", "n1"), T0)  # the same notification again: left alone
    first = a.claim("ops", T0)
    second = b.claim("ops", T0)
    assert first is not None and second is not None
    assert (first.notification, second.notification) == ('{"id": "n1"}', '{"id": "n2"}')
    assert a.claim("ops", T0) is None and b.claim("other", T0) is None
    assert not b.finish(first.seq, "delivered", 1, None, T0)  # not b's row
    assert a.finish(first.seq, "delivered", 1, None, T0)
    assert not a.finish(first.seq, "delivered", 1, None, T0)  # only once
    assert state_of(state) == {"ops": {"delivered": 1, "pending": 1}}


def test_a_lease_that_runs_out_frees_the_row_and_its_old_owner_cannot_finish_it(state: StateStore) -> None:
    a, b = OutboxStore(state, "a", lease_seconds=30), OutboxStore(state, "b", lease_seconds=30)
    a.add(entries("ops", "n1"), T0)
    claimed = a.claim("ops", T0)
    assert claimed is not None
    assert b.claim("ops", T0 + timedelta(seconds=29)) is None
    again = b.claim("ops", T0 + timedelta(seconds=31))
    assert again is not None and again.seq == claimed.seq
    assert not a.finish(claimed.seq, "delivered", 1, None, T0)
    assert b.finish(again.seq, "delivered", 1, None, T0)


def test_a_retry_keeps_the_row_until_its_next_try_and_counts_attempts(state: StateStore) -> None:
    a, b = OutboxStore(state, "a", lease_seconds=30), OutboxStore(state, "b", lease_seconds=30)
    a.add(entries("ops", "n1"), T0)
    claimed = a.claim("ops", T0)
    assert claimed is not None and claimed.attempts == 0
    assert a.retry(claimed.seq, 1, T0 + timedelta(seconds=10), "503")
    assert a.waiting("ops", T0) == (T0 + timedelta(seconds=40), 1)  # held past the next try
    assert b.claim("ops", T0 + timedelta(seconds=35)) is None
    assert a.release_claims() == 1  # a process starting on SQLite: the holder is gone
    assert a.waiting("ops", T0) == (T0 + timedelta(seconds=10), 1)
    assert b.claim("ops", T0 + timedelta(seconds=5)) is None  # not due yet
    taken = b.claim("ops", T0 + timedelta(seconds=10))
    assert taken is not None and taken.attempts == 1
    assert b.finish(taken.seq, "failed", 2, "503", T0)
    assert a.waiting("ops", T0) == (None, 0)


def test_a_full_outbox_drops_its_oldest_unclaimed_rows(state: StateStore) -> None:
    a = OutboxStore(state, "a")
    a.add(entries("ops", "n1"), T0)
    assert a.claim("ops", T0) is not None  # n1 is being sent: never dropped
    dropped = a.add(entries("ops", "n2", "n3", "n4"), T0, keep=2)
    assert [d.notification for d in dropped] == ['{"id": "n2"}']
    assert a.waiting("ops", T0)[1] == 3
    assert a.drop_alert("ops", T0) == 3
    assert state_of(state) == {"ops": {"dropped": 4}}


def test_concurrent_claims_from_many_owners_take_each_row_once(state_url: str) -> None:
    stores = [open_state_store(database_url=state_url) for _ in range(4)]
    try:
        OutboxStore(stores[0], "seed").add(entries("ops", *(f"n{i}" for i in range(40))), T0)

        def drain(index: int) -> list[int]:
            outbox = OutboxStore(stores[index], f"owner-{index}")
            taken = []
            while (row := outbox.claim("ops", T0)) is not None:
                assert outbox.finish(row.seq, "delivered", 1, None, T0)
                taken.append(row.seq)
            return taken

        with ThreadPoolExecutor(4) as pool:
            taken = [seq for seqs in pool.map(drain, range(4)) for seq in seqs]
        assert sorted(taken) == sorted(set(taken)) and len(taken) == 40
    finally:
        for store in stores:
            store.close()


def test_a_bucket_refills_at_its_rate_up_to_its_capacity(state: StateStore) -> None:
    buckets = SharedBuckets(state)
    took = [buckets.take("alice", "deployment", 3, 0.5, 100.0) for _ in range(4)]
    assert [t.granted for t in took] == [True, True, True, False]
    assert took[3].tokens == 0.0
    assert buckets.take("bob", "deployment", 3, 0.5, 100.0).granted  # per subject
    assert buckets.take("alice", "execution", 3, 0.5, 100.0).granted  # per class
    assert not buckets.take("alice", "deployment", 3, 0.5, 101.0).granted  # half a token
    assert buckets.take("alice", "deployment", 3, 0.5, 102.0).granted  # one more
    assert not buckets.take("alice", "deployment", 3, 0.5, 50.0).granted  # a clock behind refills nothing
    assert [buckets.take("alice", "deployment", 3, 0.5, 10_000.0).granted for _ in range(4)] == [True] * 3 + [False]
    assert buckets.forget_full(20_000.0) == 3


def test_replicas_taking_at_once_share_one_budget(state_url: str) -> None:
    stores = [open_state_store(database_url=state_url) for _ in range(4)]
    try:

        def hammer(index: int) -> int:
            buckets = SharedBuckets(stores[index])
            return sum(buckets.take("alice", "deployment", 25, 25 / 86_400, 100.0).granted for _ in range(20))

        with ThreadPoolExecutor(4) as pool:
            assert sum(pool.map(hammer, range(4))) == 25
    finally:
        for store in stores:
            store.close()


def state_of(store: StateStore) -> dict[str, dict[str, int]]:
    return OutboxStore(store, "reader").states()
