"""Attacks on the binding of a module table to one node and one generation (`edge.tablebinding`).

The long-poll answer's `X-Hotswap-Table-Binding` is `<jwt>;<base64url path>`: a JWT (audience
`hotswap-table-binding`, claim `root`) over the root of a Merkle tree of (node id, generation,
modules' SHA-256) triples, and the node's path to it. A node run with `--control-plane-key` checks it
on every table (`edge.agent.Agent._assignment_once`) and on the table it kept on disk
(`edge.tablecache.SavedTables.load`), and refuses a table numbered at or below the one it applied,
registering again so that the control plane numbers on past it (`reconciler.store.nodes.upsert_node`).

Played here, beyond what tests/security/test_pinned_table_attacks.py already covers:

* someone between the node and the control plane, holding no key: a binding whose JWT is signed by the
  pinned key but for another issuer or none, or forged with `alg: none` or HS256 keyed with the public
  key; a path at the maximum depth (40 levels, taken when signed) and one level past it (refused even
  when its root is signed); an older genuine answer sent again and again (the node backs off and
  registers once per refusal, not in a loop);
* a local shell that can write `<cache-dir>/nodes/<id>/table.json`: another node's genuine file, a
  bumped generation, a binding from another file, a format-1 file; only a genuine older table of the
  node itself is served (the documented limit), until the control plane's first answer replaces it;
* the holder of one node's token against a real control plane: it cannot get an answer, hence a
  binding, for another node, and the binding it gets names its own node only; it can choose the
  generation its table is bound under by registering with one (its own node's tables only). Registering
  with 2**53 (what a registration may carry) had its row renumbered to 2**53 + 1, past what any node
  takes, with a 500: a row now starts or is renumbered at `reconciler.store.nodes.MAX_ROW_GENERATION`
  at most, 2**32 under the bound, so the tables published after it stay within it too
  (`test_registering_at_the_wire_bound_does_not_number_the_table_past_it`, and
  `tests/store/test_state.py::test_a_registration_at_the_wire_bound_leaves_room_to_publish`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from edge import tablebinding
from edge.nodeapi import NODES_PATH
from edge.protocol import (
    MAX_GENERATION,
    TABLE_BINDING_HEADER,
    TABLE_SIGNATURE_HEADER,
    ModuleTable,
    canonical_json,
)
from edge.tablecache import SavedTables, TableRefusedError, TrustedKey, verify_table
from tests.e2e.cluster import Cluster, poll, start_cluster, stop_cluster
from tests.security.pinned_plane import Keys, RoguePlane, binding_claims, kept_table, table_body, unsigned_jwt
from tests.security.test_pinned_table_attacks import (  # noqa: F401
    GOOD,
    NODE,
    OTHER,
    SETTLE,
    Pinned,
    pinned,
    pinned_factory,
    plane,
)

OTHER_NODE = "edge-eu-central-1"


def _sha(modules: Any) -> str:
    return hashlib.sha256(canonical_json(modules)).hexdigest()


# -- in the network path: bindings the pinned key did not make for this node ------------------------


def _forged_bindings(keys: Keys) -> dict[str, tuple[str, str]]:
    """A binding header for NODE at generation 1 over GOOD that must not verify, and what the log says."""
    root = tablebinding.leaf(NODE, 1, _sha(GOOD))  # a batch of one: the leaf is the root, the path empty
    bad = "binding does not verify"
    return {
        "pinned key, another issuer": (tablebinding.header(keys.sign(binding_claims(root, iss="other")), b""), bad),
        "pinned key, no issuer": (tablebinding.header(keys.sign(binding_claims(root, iss=None)), b""), bad),
        "alg none": (tablebinding.header(unsigned_jwt({"alg": "none"}, binding_claims(root)), b""), bad),
        "HS256 keyed with the public key": (
            tablebinding.header(unsigned_jwt({"alg": "HS256"}, binding_claims(root), keys.pem.encode()), b""),
            bad,
        ),
        "root in upper case": (
            tablebinding.header(keys.sign({**binding_claims(root), "root": root.hex().upper()}), b""),
            "not given to node",
        ),
    }


@pytest.mark.parametrize("name", list(_forged_bindings(Keys())), ids=lambda n: n.replace(" ", "-").replace(",", ""))
async def test_a_binding_not_made_by_the_control_plane_for_this_issuer_is_refused(pinned: Pinned, name: str) -> None:  # noqa: F811
    binding, said = _forged_bindings(pinned.keys)[name]
    answer = pinned.plane.offer(
        table_body(1, GOOD), pinned.keys.table_signature(GOOD), 1, {TABLE_BINDING_HEADER: binding}
    )
    await pinned.refused(answer)
    await poll(lambda: said in pinned.log(), f"the node to say {said!r}")
    assert pinned.plane.running() == set(), "the node serves a table under a forged binding"
    assert not kept_table(pinned.data, NODE).exists(), "the node kept a table under a forged binding"

    pinned.plane.offer_signed(1, GOOD)
    await pinned.serving("1.0.0")


async def test_a_path_one_level_past_the_maximum_is_refused_even_signed_and_one_at_it_is_taken(
    pinned: Pinned,  # noqa: F811
) -> None:
    """40 levels is what a batch of 2**40 tables needs: folded and checked (cheap); 41 is refused
    before any hashing or signature check, even when its root is the one signed."""
    start = tablebinding.leaf(NODE, 1, _sha(GOOD))
    steps = b"".join(bytes((i % 2,)) + hashlib.sha256(bytes([i])).digest() for i in range(tablebinding.MAX_DEPTH))
    extra = b"\x01" + hashlib.sha256(b"one more").digest()
    over_root = tablebinding.fold(tablebinding.fold(start, steps), extra)
    over = tablebinding.header(pinned.keys.sign(binding_claims(over_root)), steps + extra)
    body, signature = table_body(1, GOOD), pinned.keys.table_signature(GOOD)

    answer = pinned.plane.offer(body, signature, 1, {TABLE_BINDING_HEADER: over})
    await pinned.refused(answer)
    await poll(lambda: "binding is malformed" in pinned.log(), "the node to call the 41-level path malformed")
    assert pinned.plane.running() == set()

    at_max = tablebinding.header(pinned.keys.sign(binding_claims(tablebinding.fold(start, steps))), steps)
    assert len(at_max.partition(";")[2]) == (tablebinding.STEP * tablebinding.MAX_DEPTH * 4 + 2) // 3
    pinned.plane.offer(body, signature, 1, {TABLE_BINDING_HEADER: at_max})
    await pinned.serving("1.0.0")
    assert kept_table(pinned.data, NODE).exists(), "the table taken under a 40-level binding was not kept"


async def test_an_older_answer_sent_again_and_again_is_met_with_backoff_not_a_registration_storm(
    pinned: Pinned,  # noqa: F811
) -> None:
    """Each refusal of a genuine but older table has the node register again (so a control plane that
    lost state numbers on past it); refused in a row, the node must back off, not hammer the plane."""
    old = await pinned.moved_on()

    registrations = len(pinned.plane.registrations)
    replay = pinned.plane.offer(old.body, old.signature, 1, old.headers)
    seen: list[tuple[int, float]] = []

    def served(times: int) -> bool:
        if not seen or seen[-1][0] != replay.served:
            seen.append((replay.served, time.monotonic()))
        return replay.served >= times

    await poll(lambda: served(1), "the node to get the older answer")
    await poll(lambda: served(6), "the node to get it five more times", timeout=SETTLE)
    first = next(at for count, at in seen if count >= 1)
    sixth = next(at for count, at in seen if count >= 6)
    # backoff 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s between the first refusal and the sixth answer
    assert sixth - first >= 2.0, f"six refusals in {sixth - first:.2f}s: the node does not back off"
    again = len(pinned.plane.registrations) - registrations
    assert 1 <= again <= 2 * replay.served + 2, f"{again} registrations for {replay.served} refusals"
    assert all(r["generation"] == 2 for r in pinned.plane.registrations[registrations:])
    await pinned.alive()
    assert pinned.plane.running() == {("calc", "1.0.0", 100)}, "the node went back to the older table"


# -- a local shell that can write the cache dir -------------------------------------------------------


def _kept(keys: Keys, directory: Path, node_id: str, generation: int, modules: Any, binding: str) -> dict[str, Any]:
    """A table file as `SavedTables.save` writes it for `node_id` (checked on the way in)."""
    saved = SavedTables(directory, node_id, TrustedKey(keys.pem, pinned=True))
    table = ModuleTable.model_validate({"generation": generation, "modules": modules})
    assert saved.save(table, modules, keys.table_signature(modules), binding), "a genuine table was not kept"
    body: dict[str, Any] = json.loads(saved.path.read_text())
    return body


def _cache_edits(keys: Keys, tmp: Path) -> dict[str, dict[str, Any]]:
    """What a local shell could write in NODE's table.json, from genuine files of this cache dir."""
    mine_old = _kept(keys, tmp / "mine-old", NODE, 1, OTHER, keys.table_binding(NODE, 1, OTHER))
    mine = _kept(keys, tmp / "mine", NODE, 2, GOOD, keys.table_binding(NODE, 2, GOOD, [(OTHER_NODE, 7, OTHER)]))
    theirs = _kept(keys, tmp / "theirs", OTHER_NODE, 7, OTHER, keys.table_binding(OTHER_NODE, 7, OTHER))
    token, _ = tablebinding.parse(mine["binding"])
    return {
        "another node's file": theirs,
        "another node's file, renamed to this node": {**theirs, "nodeId": NODE},
        "another node's file, renamed, at this node's generation": {**theirs, "nodeId": NODE, "generation": 2},
        "generation bumped": {**mine, "generation": 3},
        "generation bumped past the wire bound": {**mine, "generation": MAX_GENERATION + 1},
        "generation negative": {**mine, "generation": -1},
        "older modules under the current binding": {**mine, "modules": OTHER, "signature": mine_old["signature"]},
        "current modules under the older binding": {**mine, "binding": mine_old["binding"]},
        "current modules, older binding, older generation": {**mine, "binding": mine_old["binding"], "generation": 1},
        # NODE's file was bound in one batch with OTHER_NODE's (generation 7, OTHER): its token, and the
        # neighbour's path (its sibling is NODE's leaf), with the neighbour's table renamed to this node
        "the batch neighbour's table and path, renamed to this node": {
            **theirs,
            "nodeId": NODE,
            "binding": tablebinding.header(token, b"\x00" + tablebinding.leaf(NODE, 2, _sha(GOOD))),
        },
        "binding dropped": {k: v for k, v in mine.items() if k != "binding"},
        "format 1": {**{k: v for k, v in mine.items() if k != "binding"}, "format": 1},
    }


def _edit_names() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return list(_cache_edits(Keys(), Path(tmp)))


@pytest.mark.parametrize("name", _edit_names(), ids=lambda n: n.replace(" ", "-").replace(",", "").replace("'", ""))
def test_a_cache_file_edited_by_a_local_shell_is_refused(tmp_path: Path, name: str) -> None:
    keys = Keys()
    body = _cache_edits(keys, tmp_path)[name]
    saved = SavedTables(tmp_path / "node", NODE, TrustedKey(keys.pem, pinned=True))
    saved.path.write_text(json.dumps(body))
    with pytest.raises(TableRefusedError):
        saved.load()


def test_the_genuine_files_the_edits_start_from_load(tmp_path: Path) -> None:
    """The control for the test above: unedited, this node's file (bound in a batch of two) loads."""
    keys = Keys()
    body = _kept(keys, tmp_path / "mine", NODE, 2, GOOD, keys.table_binding(NODE, 2, GOOD, [(OTHER_NODE, 7, OTHER)]))
    saved = SavedTables(tmp_path / "node", NODE, TrustedKey(keys.pem, pinned=True))
    saved.path.write_text(json.dumps(body))
    found = saved.load()
    assert found is not None and found[0].generation == 2 and found[0].modules[0].version == "1.0.0"


async def test_an_older_genuine_table_put_back_on_disk_is_served_only_until_the_control_plane_answers(
    plane: RoguePlane,  # noqa: F811
    pinned_factory: Callable[..., Pinned],  # noqa: F811
) -> None:
    """The documented limit of the cache: its writer can put back a table the control plane once gave
    this node, under the generation it had. The restarted node serves it as ServingCachedTable, says
    so when it registers (its generation), and takes the current table at its first poll."""
    node = pinned_factory()
    await node.registered()
    plane.offer_signed(1, OTHER)
    await node.serving("1.1.0")
    older = kept_table(node.data, NODE).read_bytes()
    plane.offer_signed(2, GOOD)
    await node.serving("1.0.0")
    await poll(lambda: json.loads(kept_table(node.data, NODE).read_bytes())["generation"] == 2, "gen 2 on disk")
    await asyncio.to_thread(node.node.stop)

    kept_table(node.data, NODE).write_bytes(older)  # the local shell's move
    registrations = len(plane.registrations)
    restarted = pinned_factory()
    await poll(lambda: len(plane.registrations) > registrations, "the restarted node to register")
    assert plane.registrations[registrations]["generation"] == 1, "the restored older table was not the one served"
    await restarted.serving("1.0.0")
    await poll(lambda: plane.reported_generation() == 2, "the node to report the control plane's generation")
    await poll(lambda: json.loads(kept_table(node.data, NODE).read_bytes())["generation"] == 2, "gen 2 kept again")


# -- the holder of one node's token, against a real control plane -------------------------------------


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    started = await start_cluster(tmp_path, [])
    try:
        yield started
    finally:
        await stop_cluster(started)


async def _call(cluster: Cluster, method: str, path: str, token: str, **kwargs: Any) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, cluster.url + path, headers=headers, **kwargs) as response,
    ):
        raw = await response.read()
        return response.status, raw, response.headers.copy()


def _registration(node_id: str, generation: int) -> dict[str, Any]:
    return {
        "id": node_id,
        "region": "us-east",
        "hostname": "attacker",
        "url": "http://127.0.0.1:9",
        "generation": generation,
    }


async def _register(cluster: Cluster, token: str, node_id: str, generation: int) -> tuple[int, Any]:
    status, raw, _ = await _call(cluster, "POST", NODES_PATH, token, json=_registration(node_id, generation))
    return status, json.loads(raw)


async def _assignment(cluster: Cluster, token: str, node_id: str) -> tuple[int, bytes, Any]:
    return await _call(cluster, "GET", f"{NODES_PATH}/{node_id}/assignment", token, params={"after": "0", "wait": "5"})


def _key(cluster: Cluster) -> TrustedKey:
    return TrustedKey(cluster.plane.authority.public_key_pem, cluster.plane.authority.options.issuer, pinned=True)


async def _bound_answer(cluster: Cluster, token: str, node_id: str) -> tuple[ModuleTable, Any, str, str]:
    status, raw, headers = await _assignment(cluster, token, node_id)
    assert status == 200, raw
    parsed = json.loads(raw)
    signature, binding = headers.get(TABLE_SIGNATURE_HEADER), headers.get(TABLE_BINDING_HEADER)
    assert signature is not None and binding is not None, "the control plane answered a table unbound"
    return ModuleTable.model_validate(parsed), parsed["modules"], signature, binding


async def test_a_node_token_gets_no_binding_for_another_node(cluster: Cluster) -> None:
    mine = cluster.plane.mint(NODE, "node")
    theirs = cluster.plane.mint(OTHER_NODE, "node")
    assert (await _register(cluster, mine, NODE, 0))[0] == 201
    assert (await _register(cluster, theirs, OTHER_NODE, 0))[0] == 201
    assert (await _register(cluster, theirs, OTHER_NODE, 40))[0] == 200  # its row now numbers past 40

    assert (await _register(cluster, mine, OTHER_NODE, 100))[0] == 403, "one node's token registered another"
    assert (await _assignment(cluster, mine, OTHER_NODE))[0] == 403, "one node's token read another's binding"

    key = _key(cluster)
    table, modules, signature, binding = await _bound_answer(cluster, mine, NODE)
    verify_table(NODE, table, modules, signature, binding, key)  # genuine for its own node
    with pytest.raises(TableRefusedError, match="not given to node"):
        verify_table(OTHER_NODE, table, modules, signature, binding, key)

    # The other node's genuine answer, as someone in its path saw it, is no good to this node either:
    # not under the other's generation, nor under this node's own.
    their_table, their_modules, their_signature, their_binding = await _bound_answer(cluster, theirs, OTHER_NODE)
    assert their_table.generation > 40 and their_table.generation != table.generation
    verify_table(OTHER_NODE, their_table, their_modules, their_signature, their_binding, key)
    for generation in (their_table.generation, table.generation):
        spliced = their_table.model_copy(update={"generation": generation})
        with pytest.raises(TableRefusedError, match="not given to node"):
            verify_table(NODE, spliced, their_modules, their_signature, their_binding, key)


async def test_a_registration_past_the_wire_bound_is_refused_and_the_row_keeps_its_number(cluster: Cluster) -> None:
    token = cluster.plane.mint(NODE, "node")
    status, answer = await _register(cluster, token, NODE, 0)
    assert status == 201, answer
    before = answer["generation"]
    for generation in (MAX_GENERATION + 1, 2**63, -1):
        status, answer = await _register(cluster, token, NODE, generation)
        assert status == 400, (generation, answer)
    status, answer = await _register(cluster, token, NODE, 0)
    assert status == 200 and answer["generation"] == before, answer
    node = cluster.plane.store.get_node(NODE)
    assert node is not None and node.generation == before


async def test_a_token_holder_pushing_its_row_to_the_wire_bound_leaves_other_nodes_alone(cluster: Cluster) -> None:
    mine = cluster.plane.mint(NODE, "node")
    theirs = cluster.plane.mint(OTHER_NODE, "node")
    assert (await _register(cluster, theirs, OTHER_NODE, 0))[0] == 201
    assert (await _register(cluster, mine, NODE, 0))[0] == 201
    await _register(cluster, mine, NODE, MAX_GENERATION)  # whatever it does to its own node (see below)

    assert (await _register(cluster, theirs, OTHER_NODE, 0))[0] == 200
    table, modules, signature, binding = await _bound_answer(cluster, theirs, OTHER_NODE)
    assert table.generation <= MAX_GENERATION
    verify_table(OTHER_NODE, table, modules, signature, binding, _key(cluster))
    status, raw, _ = await _call(
        cluster, "POST", f"{NODES_PATH}/{OTHER_NODE}/heartbeat", theirs, json={"generation": table.generation}
    )
    assert status == 200, raw
    other = cluster.plane.store.get_node(OTHER_NODE)
    assert other is not None and other.generation <= MAX_GENERATION


async def test_registering_at_the_wire_bound_does_not_number_the_table_past_it(cluster: Cluster) -> None:
    token = cluster.plane.mint(NODE, "node")
    status, answer = await _register(cluster, token, NODE, 0)
    assert status == 201, answer
    problems: list[str] = []
    status, answer = await _register(cluster, token, NODE, MAX_GENERATION)
    if status >= 500:
        problems.append(f"registration with generation 2**53: {status} {answer}")
    row = cluster.plane.store.get_node(NODE)
    assert row is not None
    if row.generation > MAX_GENERATION:
        problems.append(f"the row is numbered {row.generation}, past 2**53")
    status, answer = await _register(cluster, token, NODE, 3)  # the genuine node, registering again
    assert status == 200, answer
    status, raw, _ = await _assignment(cluster, token, NODE)
    assert status == 200, raw
    try:
        ModuleTable.model_validate_json(raw)
    except ValidationError:
        problems.append(f"the node is answered a table numbered {json.loads(raw)['generation']}, which no node takes")
    assert not problems, problems
