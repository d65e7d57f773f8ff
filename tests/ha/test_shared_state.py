"""What replicas share through the store, piece by piece: node rows read by id, heartbeats with their
metric deltas (kept apart by replica, pruned by age), NOTIFY payloads, and the hub taking rows another
replica wrote without ever going back to an older table or report."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from edge.protocol import ModuleEntry, VersionMetrics
from reconciler.apply.leader import MAX_PAYLOAD_CHARS, pack, unpack
from reconciler.apply.metricswindow import MetricsWindow
from reconciler.apply.nodes import NodeHub
from reconciler.store.records import NodeRecord
from reconciler.store.state import SharedHeartbeat, StateStore, open_state_store
from tests.e2e.cluster import poll

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    url = f"sqlite:{tmp_path / 'state.db'}" if request.param == "sqlite" else request.getfixturevalue("database_url")
    opened = open_state_store(database_url=url)
    yield opened
    opened.close()


def node(node_id: str, generation: int = 0, **changes: object) -> NodeRecord:
    base = NodeRecord(id=node_id, region="us-east", url=f"http://{node_id}", generation=generation)
    return NodeRecord(**{**base.__dict__, **changes})


def metrics(requests: int) -> list[dict[str, object]]:
    return [VersionMetrics(module="greeter", version="1.0.0", requests=requests).model_dump(mode="json", by_alias=True)]


def test_nodes_are_read_by_id(store: StateStore) -> None:
    for node_id in ("a", "b", "c"):
        store.upsert_node(node(node_id))
    assert [n.id for n in store.get_nodes(["c", "a", "ghost", "a"])] == ["a", "c"]
    assert store.get_nodes([]) == []


def test_a_shared_heartbeat_stores_its_metric_deltas_apart_by_replica(store: StateStore) -> None:
    store.upsert_node(node("a"))
    beat = SharedHeartbeat("r1", "a", "us-east", {"generation": 3}, T0, metrics(5))
    assert store.record_shared_heartbeat(beat)
    assert store.record_shared_heartbeat(beat._replace(replica="r2", at=T0 + timedelta(seconds=1)))
    assert store.record_shared_heartbeat(beat._replace(metrics=[], at=T0 + timedelta(seconds=2)))  # no deltas
    assert not store.record_shared_heartbeat(beat._replace(node_id="ghost"))
    found = store.get_node("a")
    assert found is not None and found.reported == {"generation": 3}
    assert found.last_heartbeat_at == T0 + timedelta(seconds=2)
    others = store.metric_deltas_since(T0, exclude_replica="r1")
    assert [(d.replica, d.node_id, d.region, d.at, d.metrics) for d in others] == [
        ("r2", "a", "us-east", T0 + timedelta(seconds=1), metrics(5))
    ]
    assert len(store.metric_deltas_since(T0)) == 2
    assert store.metric_deltas_since(T0 + timedelta(seconds=1), exclude_replica="r2") == []
    assert store.prune_metric_deltas(T0 + timedelta(seconds=1)) == 1
    assert [d.replica for d in store.metric_deltas_since(T0)] == ["r2"]


def test_namespace_and_notify(store: StateStore, request: pytest.FixtureRequest) -> None:
    if store.dialect.name == "sqlite":
        assert store.namespace() == ""
        store.notify("anything", ["ignored"])  # one process: nobody to tell
        return
    namespace = store.namespace()
    assert namespace.startswith("t_")  # the test's schema, from the URL's search_path
    url = request.getfixturevalue("database_url")
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f'LISTEN "hotswap_{namespace}"')
        store.notify(f"hotswap_{namespace}", ["one", "two"])
        store.notify(f"hotswap_{namespace}", [])
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
    assert got == ["one", "two"]


def test_payloads_name_every_node_and_stay_under_the_limit() -> None:
    ids = [f"edge-node-{i:05d}" for i in range(2000)]
    payloads = pack("replica-1", ids)
    assert len(payloads) > 1
    assert all(len(p) < 8000 and len(p) <= MAX_PAYLOAD_CHARS + 100 for p in payloads)
    read = [unpack(p) for p in payloads]
    assert all(r is not None and r[0] == "replica-1" for r in read)
    assert [i for r in read if r is not None for i in r[1]] == ids
    assert pack("r", []) == []
    for garbage in ("", "not json", "[]", '{"r": 1, "n": []}', '{"r": "x", "n": [1]}', '{"r": "x"}'):
        assert unpack(garbage) is None


def test_a_late_metric_delta_is_counted_in_its_own_window() -> None:
    window = MetricsWindow()
    for at, requests in ((10.0, 1), (30.0, 2), (20.0, 4), (5.0, 8)):  # 20 and 5 arrive late
        window.add(at, "us-east", [VersionMetrics(module="m", version="1", requests=requests)])
    assert window.since("m", "1", "us-east", 15.0).requests == 6
    assert window.since("m", "1", "us-east", 0.0).requests == 15


async def test_the_hub_takes_newer_rows_wakes_long_polls_and_never_goes_back(tmp_path: Path) -> None:
    store = open_state_store(data_dir=tmp_path)
    try:
        store.upsert_node(node("a"))
        pokes: list[int] = []
        hub = NodeHub(store, poke=lambda: pokes.append(1))
        entry = ModuleEntry(module="greeter", version="1.0.0", digest="sha256:" + "0" * 64, weight=100)
        waiting = asyncio.create_task(hub.wait_assignment("a", 0, 30))
        await asyncio.sleep(0)
        now = datetime.now(UTC)
        newer = node(
            "a",
            2,
            assignment={"modules": [entry.model_dump(mode="json", by_alias=True)]},
            reported={"generation": 1, "running": []},
            last_heartbeat_at=now,
        )
        hub.merge([newer], [])
        table = await asyncio.wait_for(waiting, 5)
        assert table is not None and table.generation == 2 and table.modules == (entry,)
        assert pokes  # a report that changed is a reason to look again
        # A row read before the newer write arrives late: neither table nor report go back.
        hub.merge([node("a", 1, reported={"generation": 0}, last_heartbeat_at=now - timedelta(seconds=5))], [])
        kept = hub.table("a")
        assert kept is not None and kept.generation == 2
        assert next(v for v in hub.view() if v.id == "a").applied_generation == 1
        # A node another replica registered appears; one it deleted goes.
        hub.merge([node("b")], ["a"])
        assert [v.id for v in hub.view()] == ["b"]
        assert hub.table("a") is None
        assert not await hub.load("c")  # not shared: nothing to read
    finally:
        store.close()


async def test_a_leader_reads_again_the_rows_of_nodes_that_look_silent_before_it_plans(
    database_url: str, tmp_path: Path
) -> None:
    # A heartbeat that reached the other replica is in the store before its NOTIFY reaches a busy
    # leader: the leader must not replan the node as lost on its memory alone.
    from reconciler.apply.leader import Replicas
    from reconciler.apply.nodehealth import MISSED_HEARTBEATS
    from tests.ha.replicas import leading_controller

    store = open_state_store(database_url=database_url)
    try:
        store.upsert_node(node("quiet-here", last_heartbeat_at=T0))
        clock = [T0.timestamp()]
        replicas = Replicas(store, database_url, clock=lambda: clock[0])
        hub = NodeHub(store, heartbeat_seconds=1.0, clock=lambda: clock[0], peers=replicas)
        assert await hub.load("quiet-here")
        leading_controller(store, hub, replicas, tmp_path)
        clock[0] += MISSED_HEARTBEATS * 1.0 + 1
        assert hub.silent(clock[0]) == ["quiet-here"]
        later = datetime.fromtimestamp(clock[0] - 0.5, UTC)  # the other replica heard it half a second ago
        assert store.record_shared_heartbeat(SharedHeartbeat("other", "quiet-here", "us-east", {}, later, []))
        await replicas._recheck_silent()
        assert hub.silent(clock[0]) == []
        assert next(v for v in hub.view(clock[0]) if v.id == "quiet-here").status == "Healthy"
    finally:
        store.close()


async def test_rows_another_replica_wrote_share_their_entries_and_one_encoding(tmp_path: Path) -> None:
    # A follower answers thousands of long-polls from rows the leader wrote: a few distinct tables.
    store = open_state_store(data_dir=tmp_path)
    try:
        entry = ModuleEntry(module="greeter", version="1.0.0", digest="sha256:" + "0" * 64, weight=100)
        assignment = {"modules": [entry.model_dump(mode="json", by_alias=True)]}
        for name in ("a", "b", "c"):
            store.upsert_node(node(name))
        hub = NodeHub(store)
        hub.merge([node(name, 1, assignment=assignment) for name in ("a", "b", "c")], [])
        tables = [hub.table(name) for name in ("a", "b", "c")]
        assert all(t is not None and t.modules == (entry,) for t in tables)
        assert len({id(t.modules[0]) for t in tables if t is not None}) == 1  # one object, shared
        bodies = {hub.answer(name, t)[0] for name, t in zip(("a", "b", "c"), tables, strict=True) if t is not None}
        assert len(bodies) == 1 and hub.encoder.encoded == 1
    finally:
        store.close()


async def test_announced_rows_are_read_in_chunks_nodes_with_a_waiting_long_poll_first(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet-wide publish announces every node: the other replica reads the rows `READ_CHUNK` at a
    time, the nodes whose long-poll waits on it first, and wakes each as its chunk is merged."""
    from reconciler.apply import leader
    from reconciler.apply.leader import Replicas
    from tests.ha.replicas import leading_controller

    monkeypatch.setattr(leader, "READ_CHUNK", 50)
    store = open_state_store(database_url=database_url)
    try:
        names = [f"n{i:03d}" for i in range(120)]
        for name in names:
            store.upsert_node(node(name))
        replicas = Replicas(store, database_url)
        hub = NodeHub(store, peers=replicas)
        leading_controller(store, hub, replicas, tmp_path)
        entry = ModuleEntry(module="greeter", version="1.0.0", digest="sha256:" + "0" * 64, weight=100)
        waiting = names[-3:]  # last by id: read first all the same
        polls = [asyncio.create_task(hub.wait_assignment(name, 0, 30)) for name in waiting]
        await poll(lambda: hub.waiting_first(names)[:3] == waiting, "the long-polls to wait on the hub")
        assert store.publish_assignments(
            [(n, {"modules": [entry.model_dump(mode="json", by_alias=True)]}) for n in names]
        )
        reads: list[set[str]] = []
        get_nodes = store.get_nodes

        def recorded(node_ids: set[str]) -> list[NodeRecord]:
            reads.append(set(node_ids))
            return get_nodes(node_ids)

        monkeypatch.setattr(store, "get_nodes", recorded)
        for payload in pack("the-other-replica", names):
            replicas._on_message(payload)
        tables = await asyncio.gather(*polls)
        assert all(t is not None and t.generation == 1 for t in tables)
        assert replicas._reader is not None
        await replicas._reader
        assert all(t is not None and t.generation == 1 for t in map(hub.table, names))
        assert [len(r) for r in reads] == [50, 50, 20]
        assert set(waiting) <= reads[0]
        assert set().union(*reads) == set(names)
    finally:
        store.close()
