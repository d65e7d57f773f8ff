"""Outside attacks on the bulk node writes (reconciler.store.nodes: one `UPDATE nodes ... FROM (VALUES
...)` per BULK_ROWS rows, PostgreSQL rows locked in id order first; reconciler.apply.nodes: a pass's
tables in one transaction), on SQLite and on a real PostgreSQL, in the store and through a real
control plane on 127.0.0.1 with a node token.

What holds:
- hostile text (quotes, `?`, `%s`, `$1`, `{values}`, NUL, lone surrogates, SQL, 200-deep nesting) in
  node ids, reports, tables and metric deltas is data: each node gets back exactly what was written
  for it, and a ghost id written beside known ones changes nothing;
- a batch carrying one node several times keeps that node's last report and every one of its metric
  deltas, each with its own time, once; a ghost's deltas are not kept;
- more than BULK_ROWS rows in one call (heartbeats, metric deltas and tables) are all written, once;
- a bad row makes the bulk write fail and the batch is written row by row: the bad row fails its
  caller only, no other row or metric delta is lost or doubled;
- a node deleted while its heartbeat waits in a batch is answered "unknown", its delta not kept;
- two replicas' bulk heartbeats and publishes (bulk and row-by-row paths) over the same nodes in
  crossing orders never deadlock on PostgreSQL, and every publish bumps the generation exactly once;
- through the node protocol: concurrent heartbeats of one node (one batch, the node many times in it)
  are all answered 200 and the last stays; hostile strings near the 1 MiB body cap round-trip; a body
  nested 100,000 deep is a 400; on PostgreSQL (shared heartbeats) every heartbeat's metrics are kept.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.nodeapi import NODES_PATH, Heartbeat
from reconciler.apply.threadbatch import RowBatch
from reconciler.store.nodes import BULK_ROWS
from reconciler.store.records import NodeRecord
from reconciler.store.rows import content_named, ts
from reconciler.store.state import SharedHeartbeat, StateStore, open_state_store
from tests.api.conftest import call, plane  # noqa: F401 - the fixture: a control plane alone
from tests.e2e.cluster import Cluster, start_cluster, stop_cluster
from tests.security.test_attack_node_reports import ROGUE, _registered_rogue_with_calc, _running

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
UNSERIALISABLE: dict[str, Any] = {"modules": {object()}}  # json.dumps refuses it inside the transaction

HOSTILE = [
    "it's",
    'say "hi"',
    "?",
    "%s",
    "%(x)s",
    "$1",
    "{values}",
    "\\",
    "\x00nul\x00",
    "\ud800lone",
    "lone\udfff",
    "'); DROP TABLE nodes; --",
    "\u202egnp.exe",
    "ünïcödé 😀",
]
HOSTILE_IDS = [
    "a'b",
    'q"x',
    "semi;--",
    "pct%s",
    "qm?",
    "dollar$1",
    "brace{values}",
    "back\\slash",
    "v.column1",
    "id",
    "' OR '1'='1",
]


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def _reported(i: int, marker: str) -> dict[str, Any]:
    return {"running": [marker, i], "hostile": HOSTILE, "deep": _deep(200), marker: {marker: marker}}


def _nodes(state: StateStore, *ids: str) -> None:
    for node_id in ids:
        state.upsert_node(NodeRecord(id=node_id, region="r0", url="http://127.0.0.1:9"))


def _many_nodes(state: StateStore, ids: list[str]) -> None:
    status = NodeRecord(id="x", region="r0", url="http://x").status
    empty, body = content_named({})  # the rows name their table (reconciler.store.nodes)
    with state.database.tx(write=True) as tx:
        tx.run(
            "INSERT INTO node_tables (sha, body, used_at) VALUES (?, ?, ?) ON CONFLICT (sha) DO NOTHING",
            empty,
            body,
            ts(T0),
        )
        for node_id in ids:
            tx.run(
                "INSERT INTO nodes (id, region, url, status, max_modules, registered_at, last_heartbeat_at, "
                "generation, table_sha, reported) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                node_id,
                "r0",
                "http://127.0.0.1:9",
                str(status),
                10,
                ts(T0),
                None,
                0,
                empty,
                "{}",
            )


def _node(state: StateStore, node_id: str) -> NodeRecord:
    node = state.get_node(node_id)
    assert node is not None, node_id
    return node


def _deltas(state: StateStore) -> list[tuple[str, datetime, Any]]:
    return [(d.node_id, d.at, d.metrics) for d in state.metric_deltas_since(T0 - timedelta(days=1))]


def _metrics(tag: object) -> list[dict[str, Any]]:
    return [{"module": "calc", "version": str(tag), "requests": 1, "note": HOSTILE}]


# -- the store, on SQLite and on PostgreSQL --------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    """An empty state store of each kind (as tests/store/conftest.py's `state`)."""
    url = (
        f"sqlite:{tmp_path / 'state.db'}" if request.param == "sqlite" else str(request.getfixturevalue("database_url"))
    )
    store = open_state_store(database_url=url)
    yield store
    store.close()


def test_hostile_ids_and_text_are_data_and_each_node_gets_its_own(state: StateStore) -> None:
    _nodes(state, *HOSTILE_IDS)
    ghost = "ghost'); DELETE FROM nodes; --"
    beats = [(node_id, _reported(i, node_id), T0 + timedelta(seconds=i)) for i, node_id in enumerate(HOSTILE_IDS)]
    heard = state.record_heartbeats([*beats, (ghost, {"x": 1}, T0)])
    assert heard == [True] * len(HOSTILE_IDS) + [False]
    tables = [(node_id, {"modules": HOSTILE, "for": node_id}) for node_id in reversed(HOSTILE_IDS)]
    assert state.publish_assignments([(ghost, {}), *tables]) == [None] + [1] * len(HOSTILE_IDS)
    shared = [
        SharedHeartbeat("r'1", node_id, "r0", _reported(i, node_id), T0 + timedelta(hours=1, seconds=i), _metrics(i))
        for i, node_id in enumerate(HOSTILE_IDS)
    ]
    assert state.record_shared_heartbeats([*shared, shared[0]._replace(node_id=ghost)]) == [True] * len(HOSTILE_IDS) + [
        False
    ]
    assert sorted(n.id for n in state.list_nodes()) == sorted(HOSTILE_IDS)  # nothing dropped, nothing added
    for i, node_id in enumerate(HOSTILE_IDS):
        node = _node(state, node_id)
        assert node.reported == _reported(i, node_id)
        assert node.last_heartbeat_at == T0 + timedelta(hours=1, seconds=i)
        assert (node.generation, node.assignment) == (1, {"modules": HOSTILE, "for": node_id})
    assert sorted(_deltas(state)) == sorted(
        (node_id, T0 + timedelta(hours=1, seconds=i), _metrics(i)) for i, node_id in enumerate(HOSTILE_IDS)
    )


def test_a_node_many_times_in_a_shared_batch_keeps_its_last_report_and_every_delta(state: StateStore) -> None:
    _nodes(state, "a", "b")

    def beat(node_id: str, n: int) -> SharedHeartbeat:
        return SharedHeartbeat("r1", node_id, "r0", {"n": n}, T0 + timedelta(seconds=n), _metrics(n))

    batch = [beat("a", 1), beat("b", 2), beat("a", 3), beat("ghost", 4), beat("a", 0), beat("b", 5)]
    assert state.record_shared_heartbeats(batch) == [True, True, True, False, True, True]
    # the last of the batch stays, as written one by one in order, even when its time is earlier
    assert (_node(state, "a").reported, _node(state, "a").last_heartbeat_at) == ({"n": 0}, T0)
    assert _node(state, "b").reported == {"n": 5}
    expected = [(b.node_id, b.at, b.metrics) for b in batch if b.node_id != "ghost"]
    assert sorted(_deltas(state)) == sorted(expected)
    heard = state.record_heartbeats([("b", {"m": 1}, T0), ("ghost", {}, T0), ("b", {"m": 2}, T0)])
    assert heard == [True, False, True] and _node(state, "b").reported == {"m": 2}


def test_more_than_bulk_rows_in_one_call_are_all_written_once(state: StateStore) -> None:
    ids = [f"n{i:05d}" for i in range(BULK_ROWS + 7)]
    _many_nodes(state, ids)
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    beats = [SharedHeartbeat("r1", n, "r0", {"n": n}, T0, _metrics(n)) for n in shuffled]
    # the same node on both sides of a chunk boundary, and ghosts among them
    beats += [beats[0]._replace(reported={"again": 1}), beats[-1]._replace(node_id="zz-ghost")]
    heard = state.record_shared_heartbeats(beats)
    assert heard == [True] * (len(ids) + 1) + [False]
    assert len(_deltas(state)) == len(ids) + 1  # one each, and the node twice has two
    tables = [(n, {"for": n}) for n in reversed(ids)] + [("ghost", {})]
    assert state.publish_assignments(tables) == [1] * len(ids) + [None]
    assert state.publish_assignments(tables) == [2] * len(ids) + [None]
    nodes = {n.id: n for n in state.list_nodes()}
    assert len(nodes) == len(ids)
    assert all(nodes[n].generation == 2 and nodes[n].assignment == {"for": n} for n in ids)
    assert nodes[shuffled[0]].reported == {"again": 1}
    assert all(nodes[n].reported == {"n": n} for n in shuffled[1:])


@pytest.mark.parametrize("bad", ["unserialisable", "nul-in-id"])
async def test_a_failed_bulk_write_falls_back_without_losing_or_doubling_rows_or_deltas(
    state: StateStore, bad: str
) -> None:
    _nodes(state, "a", "b", "c")
    if bad == "unserialisable":
        poison = SharedHeartbeat("r1", "b", "r0", UNSERIALISABLE, T0, _metrics("bad"))
    else:  # refused by PostgreSQL (text cannot hold NUL); an unknown node on SQLite
        poison = SharedHeartbeat("r1", "b\x00", "r0", {"n": "bad"}, T0, _metrics("bad"))
    bulks: list[int] = []

    def bulk(rows: list[SharedHeartbeat]) -> list[bool]:
        bulks.append(len(rows))
        if bad == "nul-in-id" and state.database.dialect.name != "postgresql":
            raise RuntimeError("make SQLite fail the bulk write too")
        return state.record_shared_heartbeats(rows)

    writes = RowBatch(bulk, state.record_shared_heartbeat)
    rows = [
        SharedHeartbeat("r1", "a", "r0", {"n": 1}, T0 + timedelta(seconds=1), _metrics(1)),
        SharedHeartbeat("r1", "a", "r0", {"n": 2}, T0 + timedelta(seconds=2), _metrics(2)),
        poison,
        SharedHeartbeat("r1", "c", "r0", {"n": 3}, T0 + timedelta(seconds=3), _metrics(3)),
        SharedHeartbeat("r1", "ghost", "r0", {"n": 4}, T0 + timedelta(seconds=4), _metrics(4)),
    ]
    answers = await asyncio.gather(*(writes.write(row) for row in rows), return_exceptions=True)
    assert bulks == [5]  # one bulk try, then row by row
    assert answers[:2] == [True, True] and answers[3:] == [True, False]
    if bad == "unserialisable" or state.database.dialect.name == "postgresql":
        assert isinstance(answers[2], Exception)
    else:
        assert answers[2] is False
    assert [_node(state, n).reported for n in "abc"] == [{"n": 2}, {}, {"n": 3}]
    assert sorted(_deltas(state)) == sorted((r.node_id, r.at, r.metrics) for r in (rows[0], rows[1], rows[3]))


async def test_a_node_deleted_while_its_heartbeat_waits_in_a_batch_is_unknown(state: StateStore) -> None:
    _nodes(state, "a", "b", "c")

    def bulk(rows: list[SharedHeartbeat]) -> list[bool]:
        assert state.delete_node("b")  # deleted after the heartbeats were queued, before the write
        return state.record_shared_heartbeats(rows)

    writes = RowBatch(bulk, state.record_shared_heartbeat)
    rows = [SharedHeartbeat("r1", n, "r0", {"n": n}, T0, _metrics(n)) for n in "abcb"]
    assert await asyncio.gather(*(writes.write(row) for row in rows)) == [True, False, True, False]
    assert sorted(n.id for n in state.list_nodes()) == ["a", "c"]
    assert sorted(d[0] for d in _deltas(state)) == ["a", "c"]


def test_two_replicas_crossing_bulk_writes_never_deadlock(database_url: str) -> None:
    ids = [f"n{i:03d}" for i in range(300)]
    first, second = open_state_store(database_url=database_url), open_state_store(database_url=database_url)
    rounds = 12
    try:
        _many_nodes(first, ids)
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def replica(store: StateStore, seed: int) -> None:
            rng = random.Random(seed)
            try:
                start.wait(30)
                for r in range(rounds):
                    order = ids[:]
                    rng.shuffle(order)
                    store.record_shared_heartbeats(
                        [SharedHeartbeat(f"r{seed}", n, "r0", {"r": r}, T0, _metrics(r)) for n in order]
                    )
                    store.publish_assignments([(n, {"seed": seed, "round": r}) for n in order[::-1]])
                    if r % 3 == 0:  # a node twice: the row-by-row path, crossing the other's bulk one
                        half = order[: len(order) // 2]
                        store.publish_assignments([(n, {"twice": seed}) for n in half + half[::-1]])
                    store.record_heartbeats([(n, {"plain": r}, T0) for n in order])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=replica, args=(store, seed)) for seed, store in ((1, first), (2, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        twice_rounds = len(range(0, rounds, 3))
        generations = {node.id: node.generation for node in first.list_nodes()}
        assert sorted(generations) == ids
        # every publish bumped once: each replica's bulk ones, and two each for half the nodes a twice-round
        assert sum(generations.values()) == len(ids) * 2 * rounds + 2 * twice_rounds * 2 * (len(ids) // 2)
        assert min(generations.values()) >= 2 * rounds
        assert len(_deltas(first)) == 2 * rounds * len(ids)
    finally:
        first.close()
        second.close()


# -- the node protocol, through a real control plane ----------------------------------------------------


def _stored(beat: dict[str, Any]) -> dict[str, Any]:
    """What the control plane keeps of a heartbeat body."""
    return Heartbeat.model_validate(beat).model_dump(mode="json", by_alias=True, exclude={"metrics"})


def _hostile_beat(table: dict[str, Any], i: int) -> dict[str, Any]:
    return {
        "generation": table["generation"],
        "running": _running(table),
        "failed": {f"{h}@{i}": h for h in HOSTILE},
        "cpuPercent": float(i),
    }


@pytest.fixture
async def pg_plane(tmp_path: Path, database_url: str) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, [], database_url=database_url)
    try:
        yield cluster
    finally:
        await stop_cluster(cluster)


async def test_concurrent_heartbeats_of_one_node_are_all_answered_and_the_last_stays(plane: Cluster) -> None:  # noqa: F811
    token, table = await _registered_rogue_with_calc(plane)
    beats = [_hostile_beat(table, i) for i in range(48)]
    url = f"{NODES_PATH}/{ROGUE}/heartbeat"
    answers = await asyncio.gather(*(call(plane.url, "POST", url, token, json=beat) for beat in beats))
    assert [a.status for a in answers] == [200] * len(beats), [a.body for a in answers if a.status != 200][:3]
    node = _node(plane.plane.store, ROGUE)
    assert node.reported in [_stored(beat) for beat in beats]
    # queued together in the hub: one batch, the node 48 times in it; the last of them stays
    hub = plane.plane.hub
    more = [_hostile_beat(table, 100 + i) for i in range(48)]
    before = hub.heartbeat_writes.batches
    results = await asyncio.gather(*(hub.heartbeat(ROGUE, Heartbeat.model_validate(beat)) for beat in more))
    assert all(r is not None for r in results)
    assert hub.heartbeat_writes.batches - before <= 2
    assert _node(plane.plane.store, ROGUE).reported == _stored(more[-1])
    again = await call(plane.url, "POST", url, token, json=beats[0])  # the control plane is still up
    assert again.status == 200 and _node(plane.plane.store, ROGUE).reported == _stored(beats[0])


async def test_hostile_strings_near_the_body_cap_round_trip(plane: Cluster) -> None:  # noqa: F811
    token, table = await _registered_rogue_with_calc(plane)
    beat = _hostile_beat(table, 1)
    base = len(json.dumps(beat).encode())
    beat["failed"]["'); DROP TABLE nodes; --" + "x" * ((1 << 20) - base - 200)] = "big"
    assert (1 << 20) - 1000 < len(json.dumps(beat).encode()) <= 1 << 20
    answer = await call(plane.url, "POST", f"{NODES_PATH}/{ROGUE}/heartbeat", token, json=beat)
    assert answer.status == 200, str(answer.body)[:300]
    assert _node(plane.plane.store, ROGUE).reported == _stored(beat)
    assert {n.id for n in plane.plane.store.list_nodes()} == {ROGUE}
    deep = b"[" * 100_000 + b"]" * 100_000
    answer = await call(
        plane.url,
        "POST",
        f"{NODES_PATH}/{ROGUE}/heartbeat",
        token,
        data=deep,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status == 400
    assert _node(plane.plane.store, ROGUE).reported == _stored(beat)


async def test_on_postgresql_every_concurrent_heartbeat_keeps_its_metrics_once(pg_plane: Cluster) -> None:
    token, table = await _registered_rogue_with_calc(pg_plane)
    calc = next(e for e in table["modules"] if e["module"] == "calc")
    store = pg_plane.plane.store
    since = datetime.now(UTC) - timedelta(hours=1)

    def ours() -> list[int]:
        return sorted(m["requests"] for d in store.metric_deltas_since(since) if d.node_id == ROGUE for m in d.metrics)

    already = ours()
    beats = [
        {**_hostile_beat(table, i), "metrics": [{"module": "calc", "version": calc["version"], "requests": 1000 + i}]}
        for i in range(40)
    ]
    url = f"{NODES_PATH}/{ROGUE}/heartbeat"
    answers = await asyncio.gather(*(call(pg_plane.url, "POST", url, token, json=beat) for beat in beats))
    assert [a.status for a in answers] == [200] * len(beats)
    assert sorted(set(ours()) - set(already)) == [1000 + i for i in range(40)]
    assert ours().count(1000) == 1  # not doubled
    assert _node(store, ROGUE).reported in [_stored(beat) for beat in beats]
