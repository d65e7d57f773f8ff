"""The signed generation floor: a pinned node takes no table of its own older than the control plane's
numbering, even with no table yet.

A node pinned to the control plane's key (`--control-plane-key`) refuses a table numbered at or under
the one it applied. A node with no table (new, or its cache dir wiped) had nothing to compare with, so
someone in the path could hand it one of its own older tables, genuine in every byte, binding included.
Now its registration carries a nonce (`edge.nodeapi.Registration.nonce`), and the control plane answers
with a JWT binding the node id, the nonce and the generation it numbers the node's tables from
(`RegistrationAnswer.floor`, `reconciler.apply.tables.TableEncoder.floor`); the node refuses a table
numbered under it (`edge.agent`, `edge.tablecache.verify_floor`). A registration answer whose floor is
missing or does not verify leaves the node registered (it heartbeats, and serves what it has) but every
table refused until a registration's floor verifies.

Played with a real pinned `hotswap edge` process against `RoguePlane` (tests/security/pinned_plane.py),
and with the real control plane over HTTP for its side.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.nodeapi import NODES_PATH
from edge.protocol import MAX_GENERATION, TABLE_AUDIENCE
from edge.tablecache import TableRefusedError, verify_floor
from tests.e2e.cluster import Cluster, poll
from tests.security.pinned_plane import Keys, RoguePlane, kept_table, spawn_node
from tests.security.test_generation_bound_attacks import _publish_and_take, runs_from, start_pinned
from tests.security.test_pinned_table_attacks import (
    GOOD,
    NODE,
    OTHER,
    REFUSED,
    Pinned,
    pinned_factory,
    plane,
)
from tests.security.test_table_binding_attacks import _call, _key, _registration, cluster

__all__ = ["cluster", "pinned_factory", "plane"]  # the fixtures, taken over from other attack files


async def test_a_node_with_no_table_refuses_its_own_table_numbered_under_the_floor(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned]
) -> None:
    plane.floor = 2  # the control plane numbers this node's tables from 2: generation 1 is an old one
    pinned = pinned_factory()
    await pinned.registered()
    nonce = pinned.plane.registrations[-1]["nonce"]
    assert isinstance(nonce, str) and len(nonce) == 32

    old = plane.offer_signed(1, OTHER)  # genuine in every byte, bound to this node under 1
    await pinned.refused(old)
    await poll(lambda: "is under 2, from which the control plane numbers" in pinned.log(), "the node to say why")
    await pinned.alive()
    assert plane.running() == set(), "the node serves a table older than the control plane's numbering"
    assert not kept_table(pinned.data, NODE).exists()

    plane.offer_signed(2, GOOD)  # the control plane's own table: at the floor
    await pinned.serving("1.0.0")
    assert plane.reported_generation() == 2
    assert len({r["nonce"] for r in plane.registrations}) == len(plane.registrations), "a nonce used twice"


BAD_FLOORS: dict[str, tuple[dict[str, Any], str]] = {
    # what the plane's floor carries instead of the right claims, and what the node says of it
    "no floor": ({}, "carries no signed generation floor"),
    "another key": ({}, "its generation floor does not verify"),
    "another nonce (a replayed floor)": ({"nonce": "x" * 32}, "signed for another registration"),
    "no nonce": ({"nonce": None}, "signed for another registration"),
    "another node's": ({"sub": "edge-eu-central-1"}, "signed for another registration"),
    "a table signature's audience": ({"aud": TABLE_AUDIENCE}, "its generation floor does not verify"),
    "another issuer": ({"iss": "someone-else"}, "its generation floor does not verify"),
    "no generation": ({"generation": None}, "its generation floor does not verify"),  # a required claim
    "a negative generation": ({"generation": -1}, "is not a generation"),
    "past the wire bound": ({"generation": MAX_GENERATION + 1}, "is not a generation"),
    "a string": ({"generation": "5"}, "is not a generation"),
    "true": ({"generation": True}, "is not a generation"),
    "a float": ({"generation": 5.0}, "is not a generation"),
}


@pytest.mark.parametrize("name", list(BAD_FLOORS), ids=lambda n: n.replace(" ", "-"))
async def test_a_floor_that_does_not_verify_leaves_every_table_refused_until_one_does(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned], name: str
) -> None:
    claims, said = BAD_FLOORS[name]
    if name == "no floor":
        plane.floor = None
    elif name == "another key":
        plane.floor_keys = Keys()
    plane.floor_claims = claims
    pinned = pinned_factory()
    await pinned.registered()  # registered all the same: it heartbeats

    answer = plane.offer_signed(1, GOOD)  # genuine, bound to it, at the floor
    await pinned.refused(answer)
    await poll(lambda: said in pinned.log(), f"the node to say {said!r}")
    assert REFUSED in pinned.log()
    await pinned.alive()
    assert plane.running() == set()
    assert not kept_table(pinned.data, NODE).exists()

    registrations = len(plane.registrations)
    plane.floor, plane.floor_keys, plane.floor_claims = 0, None, {}
    await pinned.serving("1.0.0")  # it registered again, and that floor verified: the table is taken
    assert len(plane.registrations) > registrations
    assert plane.reported_generation() == 1


async def test_an_unpinned_node_sends_no_nonce(plane: RoguePlane, tmp_path: Path) -> None:
    node = spawn_node(plane.url, NODE, tmp_path)
    try:
        await poll(lambda: bool(plane.heartbeats), "the node to register and heartbeat")
        assert all(r.get("nonce") is None for r in plane.registrations)
        assert plane.floors == []
    finally:
        node.stop()


# -- the control plane's side ----------------------------------------------------------------------------


async def _register(cluster: Cluster, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    token = cluster.plane.mint(NODE, "node")
    status, raw, _ = await _call(cluster, "POST", NODES_PATH, token, json=body)
    return status, json.loads(raw)


async def test_the_control_plane_answers_a_nonce_with_a_floor_for_that_node_and_nonce(cluster: Cluster) -> None:
    nonce = "a" * 16 + "-_" + "B" * 14
    status, answer = await _register(cluster, {**_registration(NODE, 0), "nonce": nonce})
    assert status == 201, answer
    floor, generation = answer.get("floor"), answer["generation"]
    assert isinstance(floor, str) and isinstance(generation, int), answer
    assert verify_floor(NODE, nonce, floor, _key(cluster)) == generation
    with pytest.raises(TableRefusedError, match="another registration"):
        verify_floor(NODE, "c" * 32, floor, _key(cluster))
    with pytest.raises(TableRefusedError, match="another registration"):
        verify_floor("edge-eu-central-1", nonce, floor, _key(cluster))

    await _publish_and_take(cluster, NODE, 2)  # tables published since: a new registration's floor follows
    status, answer = await _register(cluster, {**_registration(NODE, 0), "nonce": "d" * 32})
    assert status == 200, answer
    assert isinstance(answer["generation"], int) and answer["generation"] > generation
    floor = answer.get("floor")
    assert isinstance(floor, str), answer
    assert verify_floor(NODE, "d" * 32, floor, _key(cluster)) == answer["generation"]

    status, answer = await _register(cluster, _registration(NODE, 0))  # no nonce: no floor
    assert status == 200 and answer.get("floor") is None, answer


@pytest.mark.parametrize("nonce", ["a" * 15, "a" * 65, "a" * 31 + "=", "a" * 31 + "\n", 12345678901234567890, None])
async def test_a_nonce_outside_its_pattern_is_a_400_naming_it(cluster: Cluster, nonce: object) -> None:
    body = {**_registration(NODE, 0), "nonce": nonce}
    status, answer = await _register(cluster, body)
    if nonce is None:  # the same as no nonce
        assert status == 201 and answer.get("floor") is None, answer
        return
    assert status == 400, (nonce, answer)
    assert "nonce" in json.dumps(answer), answer


# -- what the attack review did not try: a node with workers, a control plane restarted on its store -----


async def test_a_pinned_node_with_workers_keeps_to_the_floor_too(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned]
) -> None:
    """With `--workers` the supervisor runs the agent: the same floor, before any worker gets a table."""
    plane.floor = 2
    pinned = pinned_factory("--workers", "2")
    await pinned.registered()
    assert isinstance(plane.registrations[-1].get("nonce"), str)
    old = plane.offer_signed(1, OTHER)
    await pinned.refused(old)
    await poll(lambda: "is under 2, from which the control plane numbers" in pinned.log(), "the node to say why")
    assert plane.running() == set()
    plane.offer_signed(2, GOOD)
    await pinned.serving("1.0.0")


async def test_a_pinned_node_takes_the_tables_of_a_control_plane_restarted_on_its_store(
    cluster: Cluster, tmp_path: Path
) -> None:
    node = start_pinned(cluster, tmp_path, NODE)

    def runs(generation: int) -> bool:
        return runs_from(cluster, node, NODE, generation)

    await poll(lambda: runs(1), "the pinned node to run its first table")
    applied = cluster.plane.hub.table(NODE).generation  # type: ignore[union-attr]
    await cluster.restart_control_plane()  # the same store: the same numbering, the same signing key
    await poll(lambda: cluster.plane.hub.known(NODE) and runs(applied), "the node to register with the new plane")
    assert await cluster.plane.hub.publish(NODE, ()) == applied + 1  # a change of its table
    await poll(lambda: runs(applied + 2), "the node to run the controller's table again, past it")
    log = node.log.read_text(errors="replace")
    assert REFUSED not in log, log[-3000:]
