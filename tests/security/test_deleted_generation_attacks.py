"""Attacks on the generation a deleted node's row leaves behind (commit 69bdcf7, `SqlNodes.delete_node`
keeps it in `deleted_node_generations`; `SqlNodes.upsert_node` starts the row made for that node id no
lower, and deletes the kept row).

Played from the outside, over HTTP against a real control plane (`cluster`, on SQLite and on
PostgreSQL; two replicas on one PostgreSQL for one test), as a node-token holder, a viewer, a developer,
an operator and an admin would; the store is read only to observe (and, in the one race below, a
PostgreSQL row lock held by the test stands in for a slow transaction, to make the race deterministic).

What was tried, and what holds:

* who may delete a node, and so write the kept row: a viewer, a developer, the node's own token and
  another node's token are refused (403), the row stays, nothing is kept. An operator may delete a node
  (the route takes admin or operator, as `reconciler.api.control` says; SECURITY.md does not say admin
  alone). Deleting an id that has no row is a 404 and keeps nothing. No other route deletes a node row.
* a node-token holder pushing the row to the cap (a registration at 2**53) right before the delete: the
  kept generation is the row's, which the control plane numbered itself (at most MAX_ROW_GENERATION plus
  its publishes), never past the last table it published; the row made on rejoin has the headroom it
  would have had without the change (the holder's 2**53 is capped at MAX_ROW_GENERATION there too).
* delete and rejoin cycles, by the genuine node (at what it applied) and by the token holder (at 2**53):
  the numbering never goes back, every table answered validates and is bound to the node, every one is
  past what the node applied, the kept row is taken over and gone after each rejoin, and a node id that
  was never deleted is untouched (it starts where its registration says).
* registrations at mixed generations racing an admin delete (concurrently, on both back ends): no 500,
  the row (or the kept row) stays within [0, MAX_GENERATION], and the genuine node rejoining afterwards
  is answered a valid table past the one it applied.
* two replicas: a delete on one, the node registering again on the other: its new row starts at the
  kept generation and the second replica answers a table past the one it applied.

Found, and fixed since (the tests below failed before the fix):

* PostgreSQL (READ COMMITTED): `delete_node` read the row's generation with a plain SELECT, then
  deleted. A publish whose UPDATE committed between that read and the DELETE was lost from the kept
  generation, so a pinned node that took that table and registered again was next answered a table
  numbered as the one it applied, and refused it. `delete_node` now locks the row first, as every write
  of node rows does (`test_a_publish_committing_while_the_delete_waits_is_in_the_kept_generation`). Seen
  along the way: when the delete's `_forget` ran before the publish's write returned, `NodeHub.publish`
  raised KeyError; it now returns None for a node deleted meanwhile, as do a heartbeat and a drain.
* `NodeHub._register` upserts the row, records a heartbeat and reads the row back in three
  transactions, and asserted the row was there: an admin delete landing in between made the
  registration a 500 with an ERROR traceback. The registration now makes the row again, from the
  generation the delete kept (`test_a_registration_whose_row_a_delete_removes_midway_makes_it_again`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from edge.nodeapi import NODES_PATH
from edge.protocol import MAX_GENERATION
from reconciler.server import ControlPlane
from reconciler.store.nodes import MAX_ROW_GENERATION
from tests.e2e.cluster import Cluster, FleetRepo, poll
from tests.ha.replicas import shared_key, start_replica
from tests.security.test_generation_bound_attacks import (
    SLACK,
    _entries,
    _publish_and_take,
    _register,
    _row,
    _table,
    backend,
    cluster,
)
from tests.security.test_table_binding_attacks import _call

__all__ = ["backend", "cluster"]  # the fixtures, taken over from the generation-bound attacks

NODE = "edge-us-east-1"
BYSTANDER = "edge-us-east-2"


def _kept(cluster: Cluster, node_id: str) -> int | None:
    """The generation the store keeps for a deleted `node_id`, or None."""
    db = cluster.plane.store.nodes.db
    found = db.read(lambda tx: tx.one("SELECT generation FROM deleted_node_generations WHERE id = ?", node_id))
    return None if found is None else int(found[0])


def _all_kept(cluster: Cluster) -> dict[str, int]:
    db = cluster.plane.store.nodes.db
    rows = db.read(lambda tx: tx.all("SELECT id, generation FROM deleted_node_generations"))
    return {str(r[0]): int(r[1]) for r in rows}


async def _delete(cluster: Cluster, node_id: str, role: str = "admin") -> int:
    status, raw, _ = await _call(cluster, "DELETE", f"{NODES_PATH}/{node_id}", cluster.token(role))
    if status not in (204, 403, 404):
        raise AssertionError((status, raw[:500]))
    return status


async def _gone(cluster: Cluster, node_id: str) -> None:
    await poll(lambda: cluster.plane.store.get_node(node_id) is None, f"{node_id}'s row to be gone")


# -- who may delete ------------------------------------------------------------------------------------


async def test_only_admin_and_operator_delete_a_node_and_a_refused_delete_keeps_nothing(cluster: Cluster) -> None:
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    status, answer = await _register(cluster, BYSTANDER, 0)
    assert status == 201, answer
    before = _row(cluster, NODE)

    path = f"{NODES_PATH}/{NODE}"
    for token in (
        cluster.token("viewer"),
        cluster.token("developer"),
        cluster.plane.mint(NODE, "node"),  # the node itself
        cluster.plane.mint(BYSTANDER, "node"),  # another node
    ):
        status, raw, _ = await _call(cluster, "DELETE", path, token)
        assert status in (401, 403), (status, raw[:300])
        assert before <= _row(cluster, NODE) <= before + SLACK
        assert _all_kept(cluster) == {}
    for token in (cluster.token("viewer"), cluster.plane.mint(NODE, "node")):  # nor by undraining/draining
        status, raw, _ = await _call(cluster, "DELETE", f"{path}/drain", token)
        assert status in (401, 403), (status, raw[:300])

    assert await _delete(cluster, "edge-never-registered") == 404
    assert _all_kept(cluster) == {}, "a delete of an unknown id kept a generation"

    assert await _delete(cluster, NODE, "operator") == 204  # the route takes operator as well as admin
    await _gone(cluster, NODE)
    kept = _kept(cluster, NODE)
    assert kept is not None and before <= kept <= before + SLACK
    assert await _delete(cluster, NODE) == 404  # a second delete: nothing found, the kept row stays as it was
    assert _kept(cluster, NODE) == kept
    assert _all_kept(cluster) == {NODE: kept}, "the bystander was touched"
    assert cluster.plane.store.get_node(BYSTANDER) is not None


# -- the token holder before the delete ----------------------------------------------------------------


async def test_a_token_holder_at_the_bound_before_the_delete_keeps_no_more_than_the_control_plane_published(
    cluster: Cluster,
) -> None:
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    for generation in (MAX_GENERATION, MAX_GENERATION - 1, MAX_ROW_GENERATION + 1):  # the holder, again and again
        status, answer = await _register(cluster, NODE, generation)
        assert status == 200, answer
    table = cluster.plane.hub.table(NODE)
    assert table is not None
    published = table.generation
    assert MAX_ROW_GENERATION <= published <= MAX_ROW_GENERATION + SLACK

    assert await _delete(cluster, NODE) == 204
    await _gone(cluster, NODE)
    kept = _kept(cluster, NODE)
    assert kept is not None
    assert kept <= MAX_ROW_GENERATION + SLACK, f"kept {kept}: past what the control plane numbers"
    assert published - SLACK <= kept, (published, kept)

    # The holder registers again at 2**53 at once: its new row has the headroom it would have had before
    # the change (capped at MAX_ROW_GENERATION), within the controller's own publishes.
    status, answer = await _register(cluster, NODE, MAX_GENERATION)
    assert status == 201, answer
    assert _kept(cluster, NODE) is None, "the kept row outlived the row made from it"
    row = _row(cluster, NODE)
    assert max(MAX_ROW_GENERATION, kept) <= row <= max(MAX_ROW_GENERATION, kept) + SLACK, (kept, row)
    assert MAX_GENERATION - row >= 2**32 - 2 * SLACK, "less headroom than a row capped at MAX_ROW_GENERATION"
    taken = await _publish_and_take(cluster, NODE, 3)
    assert taken[0] > kept and taken[-1] <= MAX_GENERATION, taken


# -- cycles ----------------------------------------------------------------------------------------------


async def test_delete_and_rejoin_cycles_never_take_the_numbering_back_nor_touch_another_node(
    cluster: Cluster,
) -> None:
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    applied = (await _publish_and_take(cluster, NODE, 2))[-1]
    highest = applied
    for cycle in range(6):
        if cycle % 2 == 1:  # the token holder pushes the row to the cap before this delete
            status, answer = await _register(cluster, NODE, MAX_GENERATION)
            assert status == 200, answer
            applied = (await _publish_and_take(cluster, NODE, 1, start=100 * cycle))[-1]
        before = _row(cluster, NODE)
        assert await _delete(cluster, NODE) == 204
        await _gone(cluster, NODE)
        kept = _kept(cluster, NODE)
        assert kept is not None and before <= kept <= before + SLACK, (cycle, before, kept)
        assert 0 <= kept <= MAX_GENERATION

        rejoin = applied if cycle % 3 else 0  # the genuine node at what it applied, or a wiped node at 0
        status, answer = await _register(cluster, NODE, rejoin)
        assert status == 201, (cycle, answer)
        assert _kept(cluster, NODE) is None, f"cycle {cycle}: the kept row lingers after the rejoin"
        row = _row(cluster, NODE)
        assert kept <= row <= MAX_GENERATION, (cycle, kept, row)
        assert row >= highest, f"cycle {cycle}: the numbering went back from {highest} to {row}"
        # The row made again holds the deleted row's table under its number (fa4236c): the node's next
        # table, whoever publishes it, is valid, bound to the node, and past what it applied.
        taken = await _publish_and_take(cluster, NODE, 2, start=100 * cycle + 10)
        assert taken[0] > applied and taken[-1] <= MAX_ROW_GENERATION + 16 * SLACK, (cycle, applied, taken)
        applied = highest = taken[-1]

    # A node id never deleted starts where its own registration says, whatever was kept for another id.
    status, answer = await _register(cluster, BYSTANDER, 5)
    assert status == 201, answer
    assert 5 <= _row(cluster, BYSTANDER) <= 5 + SLACK
    assert BYSTANDER not in _all_kept(cluster)


# -- races -----------------------------------------------------------------------------------------------


async def test_registrations_racing_a_delete_answer_no_500_and_leave_every_number_in_bounds(
    cluster: Cluster,
) -> None:
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    applied = (await _publish_and_take(cluster, NODE, 2))[-1]
    for round_ in range(3):
        generations = [MAX_GENERATION, applied, MAX_ROW_GENERATION + 1, 0, MAX_GENERATION - 1] * 2
        racing: list[Any] = [_register(cluster, NODE, g) for g in generations]
        racing.insert(len(racing) // 2, _delete(cluster, NODE))
        results = await asyncio.gather(*racing)
        registrations = [r for r in results if isinstance(r, tuple)]
        # A registration whose row the delete removed under it may be a 500: that defect is shown
        # deterministically by test_a_registration_whose_row_a_delete_removes_midway_makes_it_again.
        assert all(s in (200, 201, 500) for s, _ in registrations), [r for r in registrations if r[0] >= 300][:3]
        answered = [a for s, a in registrations if s in (200, 201)]
        assert all(0 <= a["generation"] <= MAX_GENERATION for a in answered), answered
        node = cluster.plane.store.get_node(NODE)
        kept = _kept(cluster, NODE)
        assert node is not None or kept is not None, "the row and its generation are both gone"
        for number in (node.generation if node else 0, kept or 0):
            assert 0 <= number <= MAX_ROW_GENERATION + 16 * SLACK, (round_, node, kept)

        # The genuine node (re)registers at what it applied: a valid table past it.
        status, answer = await _register(cluster, NODE, applied)
        assert status in (200, 201), answer
        table = await _table(cluster, NODE, applied)
        assert applied < table.generation <= MAX_GENERATION, (applied, table.generation)
        applied = (await _publish_and_take(cluster, NODE, 1, start=10 * round_))[-1]


@contextlib.contextmanager
def _row_locked(database_url: str, node_id: str) -> Iterator[psycopg.Connection[Any]]:
    """The node's row locked FOR UPDATE by a transaction of the test's (which writes nothing), as a slow
    publish holds it; rolled back when the block ends."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT 1 FROM nodes WHERE id = %s FOR UPDATE", (node_id,))
        try:
            yield conn
        finally:
            conn.rollback()


def _waiting(database_url: str, statement: str) -> int:
    """Backends waiting on a lock while running a statement that starts with `statement`."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE %s",
            (statement + "%",),
        ).fetchone()
    return int(found[0]) if found else 0


async def _registered_on_postgresql(cluster: Cluster, backend: str | None) -> str:
    """NODE registered at generation 0; the PostgreSQL URL the cluster's store is on."""
    assert backend is not None
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    return backend


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite serialises write transactions
async def test_a_publish_committing_while_the_delete_waits_is_in_the_kept_generation(
    cluster: Cluster, backend: str | None
) -> None:
    database_url = await _registered_on_postgresql(cluster, backend)
    status, answer = await _register(cluster, NODE, MAX_GENERATION)  # the token holder, as in 69bdcf7's case
    assert status == 200, answer
    applied = (await _publish_and_take(cluster, NODE, 2))[-1]
    assert applied > MAX_ROW_GENERATION

    hub = cluster.plane.hub
    before = _row(cluster, NODE)  # nothing else writes the row while the test holds its lock

    async def publish() -> BaseException | int | None:
        try:
            return await hub.publish(NODE, _entries(99))  # a publish, as the controller makes
        except KeyError as exc:  # the hub forgot the node while its write was under way (seen, by chance)
            return exc

    with _row_locked(database_url, NODE):
        publishing = asyncio.ensure_future(publish())
        await poll(lambda: _waiting(database_url, "SELECT id FROM nodes") >= 1, "the publish to wait on the row")
        deleting = asyncio.ensure_future(_delete(cluster, NODE))  # locks the row first, as the publish does
        await poll(
            lambda: _waiting(database_url, "SELECT generation, table_sha FROM nodes") == 1,
            "the delete to wait on the row",
        )
    answered = await publishing
    assert await deleting == 204
    await _gone(cluster, NODE)
    published = before + 1  # the publish's write committed first: it numbered the row past `before`
    assert answered is None or isinstance(answered, KeyError) or answered == published, (before, answered)
    kept = _kept(cluster, NODE)
    assert kept is not None

    # The node took `published` (its long-poll was answered it); the operator's delete made it register again.
    status, answer = await _register(cluster, NODE, published)
    assert status == 201, answer
    taken = await _publish_and_take(cluster, NODE, 1, start=50)
    assert kept >= published and taken[0] > published, (
        f"the control plane published {published}, kept {kept}; the rejoined node, which applied "
        f"{published}, is next answered {taken[0]}: a pinned node refuses it"
    )


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite serialises write transactions
async def test_a_registration_whose_row_a_delete_removes_midway_makes_it_again(
    cluster: Cluster, backend: str | None
) -> None:
    database_url = await _registered_on_postgresql(cluster, backend)
    before = _row(cluster, NODE)

    with _row_locked(database_url, NODE):
        registering = asyncio.ensure_future(_register(cluster, NODE, MAX_GENERATION))  # the token holder
        await poll(lambda: _waiting(database_url, "INSERT INTO nodes") == 1, "the registration to wait on the row")
        deleting = asyncio.ensure_future(_delete(cluster, NODE))
        await poll(
            lambda: _waiting(database_url, "SELECT generation, table_sha FROM nodes") == 1,
            "the delete to wait on the row",
        )
    status, answer = await registering
    assert await deleting == 204
    # The registration's upsert went first (renumbering the row to the cap), the delete kept that, and
    # the registration, finding its row gone, made it again from what the delete kept.
    assert status in (200, 201), f"the registration racing the delete was answered {status}: {answer}"
    assert _kept(cluster, NODE) is None
    assert MAX_ROW_GENERATION <= answer["generation"] <= _row(cluster, NODE), (before, answer)


# -- two replicas --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _two_replicas(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Cluster, Cluster]]:
    repo = FleetRepo(tmp_path / "repo")
    key = shared_key(tmp_path)
    blobs = str(tmp_path / "blobs")
    planes: list[ControlPlane] = []
    try:
        planes.append(await start_replica(repo, tmp_path / "a", database_url, blobs, key))
        await poll(lambda: planes[0].controller.leader, "the first replica to lead")
        planes.append(await start_replica(repo, tmp_path / "b", database_url, blobs, key))
        data = tmp_path / "data"
        data.mkdir()
        yield Cluster(repo, planes[0], data), Cluster(repo, planes[1], data)
    finally:
        for plane in reversed(planes):
            await plane.stop()


async def test_a_delete_on_one_replica_and_a_rejoin_on_the_other_numbers_on(tmp_path: Path, database_url: str) -> None:
    async with _two_replicas(tmp_path, database_url) as (leader, follower):
        status, answer = await _register(follower, NODE, 0)
        assert status == 201, answer
        status, answer = await _register(follower, NODE, MAX_GENERATION)  # the token holder
        assert status == 200, answer
        table = await _table(follower, NODE, 0)
        applied = table.generation
        assert applied >= MAX_ROW_GENERATION

        assert await _delete(leader, NODE) == 204
        await _gone(leader, NODE)
        kept = _kept(leader, NODE)
        assert kept is not None and kept >= applied, (applied, kept)
        await poll(lambda: follower.plane.hub.table(NODE) is None, "the follower to forget the node")

        status, answer = await _register(follower, NODE, applied)  # the genuine node, on the other replica
        assert status == 201, answer
        assert _kept(leader, NODE) is None
        assert kept <= _row(leader, NODE) <= MAX_GENERATION
        status, raw, _ = await _call(
            follower, "GET", f"{NODES_PATH}/{NODE}", follower.token("viewer")
        )  # readable on the follower
        assert status == 200, raw[:300]
        assert json.loads(raw)["id"] == NODE
        await poll(
            lambda: (t := follower.plane.hub.table(NODE)) is not None and t.generation > applied,
            "the follower to hold a table past the one the node applied",
        )
        answered = await _table(follower, NODE, applied)
        assert answered.generation > applied, (applied, answered.generation)
