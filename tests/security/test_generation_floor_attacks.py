"""Attack review of the signed generation floor (commit 296669b): a pinned node's registration carries a
random nonce, the control plane answers with a JWT floor (node id, nonce, generation), and the node takes
no table numbered under it, even with no table yet.

Played from the outside: against the real control plane over HTTP (as a node-token holder, and as
someone in the path who records its answers), and with a real pinned `hotswap edge` process against
`RoguePlane` (tests/security/pinned_plane.py), which stands for whatever answers the node.

What was tried, and what holds:

* replaying a recorded floor to a later registration, a floor signed for another node, another key, no
  floor at all: refused (the node's nonce is fresh per registration, `secrets.token_urlsafe(24)`, 32
  characters, never reused: tests/security/test_generation_floor.py checks the rest of those).
* malformed floors, by hand and at `verify_floor`: empty, not a JWT, `alg: none`, HS256 keyed with the
  public key PEM, an `alg` list, a header that is a list or a number, a bad `crit`, `b64: false`, an
  embedded `jwk`, non-ASCII, deeply nested JSON; generations that are a dict or a list: every one is a
  TableRefusedError, nothing else escapes (the agent catches only that). A real node serving a table
  keeps serving it through garbage, `alg: none`, HS256-with-the-PEM floors and an oversized (> 4096)
  floor, stays up, and takes the next genuine table once a floor verifies again. A floor signed with
  the right key whose `iss` is a list or a number, or whose `aud` is an object, is a refusal too
  (signed by hand: PyJWT will not encode such an `iss`).
* a node-token holder registering the node id at 2**53 with a nonce of its choosing: the control plane
  signs that floor (the holder's own nonce) at the row it numbers, capped at MAX_ROW_GENERATION; the
  genuine node's next floor is the same row, and every table published after it is at or past it and
  valid, so nothing is locked out. A token for another node id gets a 403 and no floor.
* nonces outside the pattern (too short, too long, padding, whitespace, non-ASCII, lists, objects,
  booleans, a 100 000-character one): 400 naming `nonce`, never a 500, never a floor.

Found, and fixed since (both tests failed before the fix):

* `test_a_wiped_node_rejoining_after_a_delete_is_given_under_its_floor_only_the_deleted_rows_table`: a
  node an operator deleted got a new row that started AT the deleted row's generation K
  (`SqlNodes.upsert_node`), with an empty table, and the control plane answered its registration with
  floor K. The deleted row's last table was also numbered K, genuinely signed and bound to (node, K): a
  wiped node rejoining took it from someone in the path who recorded it. The row made again now takes
  the deleted row's table with its number (`SqlNodes.delete_node` keeps both), so under K there is only
  ever that one table.
* `test_a_floor_above_what_the_node_applied_is_not_told_to_a_control_plane_that_lost_state`: the node
  kept the highest floor it verified, but registered with its applied generation only; a control plane
  that lost state numbered its tables under the floor, and the node refused every one of them. It now
  registers with max(applied, floor), and the control plane numbers on past it.

Not tried here (time): two replicas on PostgreSQL (a replica behind the one that signed the floor answers
a table under it: refused, the node registers again, which should only delay it), `--workers 2`, and a
control plane restart on a kept store (its tables are read back under the same numbers).

Not a finding of this change, but worth saying: a control plane that truly lost a node's numbering
(a memory store restarted, a backup older than the node's last tables) signs a floor as low as what it
knows, and every table of the node numbered at or past that floor from before the loss is taken again.
The floor can only be as good as the control plane's memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from edge.auth import ISSUER
from edge.nodeapi import NODES_PATH
from edge.protocol import GENERATION_FLOOR_AUDIENCE, MAX_GENERATION, ModuleTable
from edge.tablecache import TableRefusedError, TrustedKey, verify_floor, verify_table
from reconciler.store.nodes import MAX_ROW_GENERATION
from tests.e2e.cluster import Cluster, poll
from tests.security.pinned_plane import Keys, RoguePlane, _b64, unsigned_jwt
from tests.security.test_generation_bound_attacks import _publish_and_take
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

OTHER_NODE = "edge-eu-central-1"


async def _register(
    cluster: Cluster, node_id: str, generation: int, nonce: object, token_for: str | None = None
) -> tuple[int, dict[str, Any]]:
    token = cluster.plane.mint(token_for or node_id, "node")
    body = {**_registration(node_id, generation), "nonce": nonce}
    status, raw, _ = await _call(cluster, "POST", NODES_PATH, token, json=body)
    return status, json.loads(raw)


async def _answer(cluster: Cluster, node_id: str, after: int) -> tuple[ModuleTable, Any, str, str]:
    """The long-poll answer past `after`, as someone in the path would record it: table, modules,
    signature and binding."""
    token = cluster.plane.mint(node_id, "node")
    params = {"after": str(after), "wait": "5"}
    status, raw, headers = await _call(cluster, "GET", f"{NODES_PATH}/{node_id}/assignment", token, params=params)
    assert status == 200, (status, raw[:300])
    parsed = json.loads(raw)
    signature, binding = headers.get("X-Hotswap-Table-Signature"), headers.get("X-Hotswap-Table-Binding")
    assert signature is not None and binding is not None
    return ModuleTable.model_validate(parsed), parsed["modules"], signature, binding


# -- the deleted row's last table ------------------------------------------------------------------------


async def test_a_wiped_node_rejoining_after_a_delete_is_given_under_its_floor_only_the_deleted_rows_table(
    cluster: Cluster,
) -> None:
    """Found by this review, fixed since: the row made again after a delete started at the deleted
    row's generation K with an empty table, so the deleted row's last table, also numbered K and
    recorded in the path, passed a wiped node's floor K. The row made again now takes the deleted row's
    table with its number: under K there is only ever that one table, so handing it back gives the node
    nothing the control plane would not."""
    status, answer = await _register(cluster, NODE, 0, "a" * 32)
    assert status == 201, answer
    seen = await _publish_and_take(cluster, NODE, 2)
    old, old_modules, old_signature, old_binding = await _answer(cluster, NODE, seen[-1] - 1)  # recorded in the path
    assert old.generation == seen[-1] and old.modules, old

    status, raw, _ = await _call(cluster, "DELETE", f"{NODES_PATH}/{NODE}", cluster.token("admin"))
    assert status == 204, raw
    db = cluster.plane.store.nodes.db
    kept = db.read(
        lambda tx: tx.one(
            "SELECT d.generation, t.body FROM deleted_node_generations d JOIN node_tables t ON t.sha = d.table_sha "
            "WHERE d.id = ?",
            NODE,
        )
    )
    assert kept is not None and kept[0] == old.generation
    assert json.loads(kept[1])["modules"] == old_modules, "the row made again would hold another table under K"

    nonce = "b" * 32  # the wiped node's registration (it applied nothing), with its own fresh nonce
    status, answer = await _register(cluster, NODE, 0, nonce)
    assert status == 201, answer
    floor = verify_floor(NODE, nonce, answer["floor"], _key(cluster))
    assert floor >= old.generation  # at K (the deleted row's table again), or past it if the controller published

    verify_table(NODE, old, old_modules, old_signature, old_binding, _key(cluster))  # still genuine, bound to K
    fresh, fresh_modules, *_ = await _answer(cluster, NODE, 0)  # the control plane's own answer now
    assert fresh.generation >= floor
    if fresh.generation == old.generation:
        assert fresh_modules == old_modules, (fresh, old)


# -- the floor the node keeps, and what it tells a control plane that lost state --------------------------


async def test_a_floor_above_what_the_node_applied_is_not_told_to_a_control_plane_that_lost_state(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned]
) -> None:
    plane.floor = 5  # the control plane had published this node's table 5 when it answered
    pinned = pinned_factory()
    await pinned.registered()
    assert plane.registrations[-1]["generation"] == 0  # a new node: it applied nothing yet

    # The control plane goes down before the node takes table 5, and comes back from an older backup: it
    # numbers the node's row from what the registration says, and signs that as the floor.
    plane.floor = 0
    table = plane.offer_signed(1, GOOD)  # the restored control plane's own table for the node
    await pinned.refused(table)
    await poll(lambda: "is under 5, from which the control plane" in pinned.log(), "the node to say why")
    registrations = len(plane.registrations)
    await poll(lambda: len(plane.registrations) > registrations, "the node to register again")
    told = plane.registrations[-1]["generation"]
    assert told >= 5, (
        f"the node registered again with generation {told}, under the floor 5 it keeps: the control plane "
        "numbers on from there and the node refuses all its tables"
    )


# -- a node-token holder and the control plane's side -------------------------------------------------------


async def test_a_token_holders_floor_at_2_53_does_not_lock_out_the_genuine_node(cluster: Cluster) -> None:
    status, answer = await _register(cluster, NODE, 0, "g" * 32)  # the genuine node
    assert status == 201, answer
    await _publish_and_take(cluster, NODE, 1)

    chosen = "h" * 32
    status, answer = await _register(cluster, NODE, MAX_GENERATION, chosen)  # the holder, its own nonce
    assert status == 200, answer
    held = verify_floor(NODE, chosen, answer["floor"], _key(cluster))
    assert held <= MAX_ROW_GENERATION, held
    with pytest.raises(TableRefusedError, match="another registration"):
        verify_floor(NODE, "i" * 32, answer["floor"], _key(cluster))  # useless for any other registration

    nonce = "j" * 32  # the genuine node, cache wiped, registering again
    status, answer = await _register(cluster, NODE, 0, nonce)
    assert status == 200, answer
    floor = verify_floor(NODE, nonce, answer["floor"], _key(cluster))
    assert floor == held
    taken = await _publish_and_take(cluster, NODE, 2, start=10)
    assert all(floor <= g <= MAX_GENERATION for g in taken), (floor, taken)


async def test_no_floor_for_a_node_the_token_does_not_own(cluster: Cluster) -> None:
    status, answer = await _register(cluster, OTHER_NODE, 0, "k" * 32, token_for=NODE)
    assert status == 403, answer
    assert "floor" not in answer or answer["floor"] is None, answer
    assert cluster.plane.store.get_node(OTHER_NODE) is None


BAD_NONCES: list[object] = [
    "",
    "a" * 31 + " ",
    " " + "a" * 31,
    "a" * 31 + "\r\n",
    "a" * 30 + "\u00e9\u00e9",
    "a" * 31 + "\uff41",  # a full-width letter
    "a" * 31 + "/",
    "a" * 31 + "+",
    "a" * 100_000,
    ["a" * 32],
    {"nonce": "a" * 32},
    True,
    1.5,
]


async def test_nonces_outside_the_pattern_are_a_400_naming_it(cluster: Cluster) -> None:
    for nonce in BAD_NONCES:
        status, answer = await _register(cluster, NODE, 0, nonce)
        assert status == 400, (repr(nonce)[:60], status, answer)
        assert "nonce" in json.dumps(answer), answer
        assert answer.get("floor") is None
    for nonce in ("a" * 16, "Z" * 64, "-_" * 16):  # the edges of the pattern
        status, answer = await _register(cluster, NODE, 0, nonce)
        assert status in (200, 201), answer
        assert verify_floor(NODE, nonce, answer["floor"], _key(cluster)) >= 0


# -- malformed floors ----------------------------------------------------------------------------------------


def _claims(**extra: Any) -> dict[str, Any]:
    base = {"aud": GENERATION_FLOOR_AUDIENCE, "iss": ISSUER, "sub": NODE, "nonce": "n" * 32, "generation": 3}
    return {**base, **extra}


def _malformed(keys: Keys) -> dict[str, str]:
    good = _claims()
    body = _b64(json.dumps(good).encode())
    return {
        "empty": "",
        "dots": "...",
        "not a jwt": "not a jwt",
        "three junk segments": "a.b.c",
        "alg none": unsigned_jwt({"alg": "none", "typ": "JWT"}, good),
        "hs256 keyed with the public key": unsigned_jwt({"alg": "HS256", "typ": "JWT"}, good, keys.pem.encode()),
        "alg list": unsigned_jwt({"alg": ["EdDSA"]}, good, b"x"),
        "header a list": _b64(b"[1]") + "." + body + ".AA",
        "header a huge number": _b64(b"1e999") + "." + body + ".AA",
        "crit an object": unsigned_jwt({"alg": "EdDSA", "crit": {"a": 1}}, good, b"x"),
        "b64 false": unsigned_jwt({"alg": "EdDSA", "b64": False}, good, b"x"),
        "embedded jwk": unsigned_jwt({"alg": "EdDSA", "jwk": {"kty": "OKP"}}, good, b"x"),
        "non-ascii": "\u00e9.\u00e9.\u00e9",
        "nested json": _b64(("[" * 5000 + "]" * 5000).encode()) + ".e30.AA",
        "generation a dict": keys.sign(_claims(generation={"a": 1})),
        "generation a list": keys.sign(_claims(generation=[3])),
        "generation 2**53 + 1": keys.sign(_claims(generation=MAX_GENERATION + 1)),
        "generation a numeric string": keys.sign(_claims(generation="3")),
        "sub a list": keys.sign(_claims(sub=[NODE])),
        "nonce a list": keys.sign(_claims(nonce=["n" * 32])),
        "iat a list": keys.sign(_claims(iat=[1])),
        "iss a list": keys.sign_by_hand(_claims(iss=[ISSUER])),
        "iss a number": keys.sign_by_hand(_claims(iss=1)),
        "aud a dict": keys.sign(_claims(aud={"a": GENERATION_FLOOR_AUDIENCE})),
        "another key": Keys().sign(good),
    }


def test_every_malformed_floor_is_a_table_refusal_and_nothing_else() -> None:
    keys = Keys()
    key = TrustedKey(keys.pem, ISSUER, pinned=True)
    for name, token in _malformed(keys).items():
        with pytest.raises(TableRefusedError):
            verify_floor(NODE, "n" * 32, token, key)
            pytest.fail(f"{name}: taken")
    assert verify_floor(NODE, "n" * 32, keys.sign(_claims(generation=MAX_GENERATION)), key) == MAX_GENERATION


async def _serving_through(pinned: Pinned, plane: RoguePlane, version: str) -> None:
    """Still up, heartbeating, and serving calc `version`."""
    await pinned.alive()
    assert plane.running() == {("calc", version, 100)}, plane.running()


async def test_a_node_keeps_serving_through_malformed_floors_and_takes_the_next_genuine_table(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned]
) -> None:
    pinned = pinned_factory()
    await pinned.registered()
    recorded = await pinned.moved_on()  # serving GOOD (1.0.0) under 2
    malformed = _malformed(plane.keys)

    # Its older table sent again: refused, and the node registers again, answered a garbage floor.
    plane.floor_token = malformed["not a jwt"]
    registrations = len(plane.registrations)
    plane.offer(recorded.body, recorded.signature, recorded.generation, recorded.headers)
    await poll(lambda: len(plane.registrations) > registrations, "the node to register again")

    offered = plane.offer_signed(3, OTHER)  # genuine, past what it applied: refused while the floor is bad
    for name in ("not a jwt", "alg none", "hs256 keyed with the public key"):
        registrations = len(plane.registrations)
        served = offered.served
        plane.floor_token = malformed[name]
        await poll(lambda n=registrations: len(plane.registrations) > n, f"{name}: a registration")
        await poll(lambda n=served: offered.served > n + 1, f"{name}: the table refused again")
        assert "does not verify" in pinned.log() or "carries no signed" in pinned.log()
        await _serving_through(pinned, plane, "1.0.0")

    # An answer the node's model refuses: the floor past its max_length.
    sent = plane.raw_sent
    plane.raw_registration = json.dumps(
        {"id": NODE, "heartbeatSeconds": 0.2, "generation": 0, "floor": "x" * 5000}
    ).encode()
    await poll(lambda: plane.raw_sent > sent + 1, "the node to try registering again")
    pinned.up()
    assert REFUSED in pinned.log()

    plane.raw_registration, plane.floor_token, plane.floor = None, None, 3
    await pinned.serving("1.1.0")  # a floor verifies again: the genuine table 3 is taken
    assert plane.reported_generation() == 3
