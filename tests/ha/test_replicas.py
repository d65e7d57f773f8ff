"""Two in-process replicas on one PostgreSQL: one leads, the other follows and serves; the leader's
tables reach nodes long-polling the follower through LISTEN/NOTIFY; a stopped leader hands over; a
leader whose lease connection dies steps down and leads again only once it holds the lease anew."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import psycopg
import pytest

from reconciler.store.lease import lease_key
from tests.e2e.cluster import Load, poll
from tests.ha.replicas import (
    Pair,
    assert_no_step_twice,
    replica_pair,
    status_of,
    step_history,
)

NODE = "edge-us-east-1"


@pytest.fixture
async def pair(tmp_path: Path, database_url: str) -> AsyncIterator[Pair]:
    async with replica_pair(tmp_path, database_url, NODE) as both:
        yield both


async def test_status_says_which_replica_leads(pair: Pair) -> None:
    token = pair.cluster.token("viewer")
    leading = await status_of(pair.leader.url, token)
    following = await status_of(pair.follower.url, token)
    assert leading is not None and following is not None
    assert (leading["leader"], following["leader"]) == (True, False)
    assert leading["replica"] != following["replica"]
    assert following["replica"] == pair.follower.replicas.id if pair.follower.replicas else False
    # The follower knows the nodes the leader placed and reports the same tables.
    assert [n["id"] for n in following["nodes"]] == [n["id"] for n in leading["nodes"]] == [NODE]


async def test_a_long_poll_on_the_follower_returns_when_the_leader_publishes(pair: Pair) -> None:
    table = pair.follower.hub.table(NODE)
    assert table is not None
    url = f"{pair.follower.url}/api/v1/wasm/nodes/{NODE}/assignment?after={table.generation}&wait=60"
    headers = {"Authorization": f"Bearer {pair.cluster.plane.mint(NODE, 'node')}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        waiting = asyncio.create_task(session.get(url))
        await asyncio.sleep(0)  # the request is on its way before the commit
        source = pair.repo.derive_wat("greeter-1.1.0.wat", "greeter-1.3.0.wat", **{"1.1.0": "1.3.0"})
        pair.repo.set_module("greeter", "1.3.0", source)
        # Well inside the 60 s the request asked to wait: an answer now means the follower was woken.
        async with await asyncio.wait_for(waiting, 30) as response:
            assert response.status == 200
            body = await response.json()
    published = pair.leader.hub.table(NODE)
    assert published is not None
    assert body["generation"] > table.generation
    assert body["generation"] <= published.generation  # what the leader published, read from the store
    assert "1.3.0" in {m["version"] for m in body["modules"] if m["module"] == "greeter"}


async def test_a_stopped_leader_hands_over_and_the_follower_finishes_the_rollout(pair: Pair, database_url: str) -> None:
    cluster = pair.cluster
    pair.repo.edit("strategies/canary.yaml", "stepSeconds: 0.6", "stepSeconds: 1.0")
    source = pair.repo.derive_wat("greeter-1.1.0.wat", "greeter-1.3.0.wat", **{"1.1.0": "1.3.0"})
    async with Load(cluster, "greeter", "greet", lambda i: {"name": "x" * (i % 5)}) as load:
        pair.repo.set_module("greeter", "1.3.0", source)
        await poll(
            lambda: (r := cluster.latest("greeter")) is not None and r.target.version == "1.3.0" and r.step >= 1,
            "the canary to reach its second step",
        )
        await pair.leader.stop()
        await poll(lambda: pair.follower.controller.leader, "the follower to lead")
        record = await cluster.wait_ended("greeter", "1.3.0")
        assert record.phase.value == "Promoted", record
        await cluster.wait_all_serving("greeter", "1.3.0", [NODE])
    stored, steps = step_history(database_url, "greeter", "1.3.0")
    assert_no_step_twice(stored["history"], steps)
    assert load.result.failures == []


async def test_a_leader_whose_lease_connection_dies_steps_down_and_takes_the_lease_again(
    pair: Pair, database_url: str
) -> None:
    replicas = pair.leader.replicas
    assert replicas is not None and replicas.elections == 1
    await pair.follower.stop()  # alone, the leader is the one to get the lease back
    key = lease_key(replicas.lease_name)
    with psycopg.connect(database_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid::bigint = %s AND objid::bigint = %s",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        ).fetchall()
    assert killed == [(True,)]
    pair.leader.controller.poke()
    await poll(lambda: replicas.elections == 2, "the leader to step down and lead again")
    assert pair.leader.controller.leader


async def test_a_listener_whose_connection_drops_listens_again_and_catches_up(pair: Pair, database_url: str) -> None:
    replicas = pair.follower.replicas
    assert replicas is not None
    before = replicas.listener.connections
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "{replicas.channel}"',),
        )
    await poll(lambda: replicas.listener.connections > before, "the follower to listen again")
    published = pair.leader.hub.table(NODE)
    assert published is not None
    source = pair.repo.derive_wat("greeter-1.1.0.wat", "greeter-1.3.0.wat", **{"1.1.0": "1.3.0"})
    pair.repo.set_module("greeter", "1.3.0", source)

    def caught_up() -> bool:
        mine, theirs = pair.follower.hub.table(NODE), pair.leader.hub.table(NODE)
        if mine is None or theirs is None or theirs.generation <= published.generation:
            return False
        return (mine.generation, mine.model_dump(mode="json")["modules"]) == (
            theirs.generation,
            theirs.model_dump(mode="json")["modules"],
        )

    await poll(caught_up, "the follower to hold the table the leader published after the drop")
