"""Attacks on a node run with `--control-plane-key` from between it and the control plane.

Such a node checks every table the long-poll brings (`edge.agent.Agent._assignment_once`,
`edge.tablecache.verify`): the `X-Hotswap-Table-Signature` header must be a JWT the pinned key signed,
with the table audience and the issuer, whose `sha256` is that of `canonical_json(modules)`. A real
`hotswap edge` process is pinned to a key the test holds and talks to `RoguePlane`
(tests/security/pinned_plane.py), which answers what an attacker in the path would: forged, replayed
and malformed tables, registration answers naming other keys or none. One test puts `MitmProxy` in
front of a real control plane instead and changes only the generation, which the binding covers.

What holds (and these tests keep): a table the pinned key did not sign, in any of the ways below, is
refused and never served nor kept; the node stays up, answers /health, keeps heartbeating, keeps
serving the table it had, and takes the next genuine table. A registration answer naming another key
changes nothing, and one naming none leaves the pinned key in charge of execute calls. The same
content spelled another way (a repeated key, a unicode escape) is served as it was verified, and a
number spelled another way (100.0 for 100) is refused, never reinterpreted. An answer nested past
orjson's 1,024 levels is a malformed answer like any other (retried), a registration answer
asking for a heartbeat period outside 0.05 to 3,600 s is refused, and so is a table whose generation
is past what a heartbeat or a registration may carry back (2**53): taken, it would have cut the node
off from the real control plane for good, on disk and across restarts.

A table's signature covers its `modules` only (nodes share it); what binds it to this node and this
generation is the second signature, the binding (`edge.tablebinding`). So an older table replayed
under a higher generation, another node's table, or a binding forged, cut short or made for other
modules is refused; so is the node's own older table under its own old generation (a rollback): a
pinned node takes only generations past the one it applied.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from edge import tablebinding
from edge.auth import EDGE_AUDIENCE
from edge.protocol import TABLE_AUDIENCE, TABLE_BINDING_HEADER
from tests.e2e.cluster import EdgeProcess, poll, spawn_edge, start_cluster, stop_cluster
from tests.security.pinned_plane import (
    Keys,
    MitmProxy,
    RoguePlane,
    TableAnswer,
    binary,
    entry,
    kept_table,
    spawn_node,
    table_body,
    table_claims,
    unsigned_jwt,
)

NODE = "edge-us-east-1"
CALC_1 = binary("calc-1.0.0.wat")
CALC_2 = binary("calc-1.1.0.wat")
GOOD = [entry("calc", "1.0.0", CALC_1)]  # what the pinned key signs
OTHER = [entry("calc", "1.1.0", CALC_2)]  # what the attacker would have served
REFUSED = "refusing the table the control plane sent"
PAST_WIRE = 2**53 + 1  # one past what a Heartbeat or a Registration may carry as its generation
SETTLE = 20.0  # poll deadline for what a live node does within one capped backoff (5 s) and a load


@dataclass
class Pinned:
    """A running node pinned to `keys`, and the rogue control plane it talks to."""

    plane: RoguePlane
    keys: Keys
    node: EdgeProcess
    data: Path

    def log(self) -> str:
        return self.node.log.read_text(errors="replace")

    def up(self) -> bool:
        assert self.node.process.poll() is None, f"the node exited:\n{self.log()[-3000:]}"
        return True

    async def registered(self) -> None:
        await poll(lambda: self.up() and bool(self.plane.heartbeats), "the node to register and heartbeat")

    async def serving(self, version: str) -> None:
        await poll(lambda: self.plane.running() == {("calc", version, 100)}, f"the node to serve calc {version}")

    async def moved_on(self) -> TableAnswer:
        """Serve generation 1 (OTHER), then generation 2 (GOOD); returns generation 1's answer as it
        was served, binding included: what an attacker in the path would send again."""
        old = self.plane.offer_signed(1, OTHER)
        await self.serving("1.1.0")
        self.plane.offer_signed(2, GOOD)
        await self.serving("1.0.0")
        return old

    async def refused(self, answer: TableAnswer) -> None:
        """The node handled `answer` and did not take it: it asked again with its old generation."""
        await poll(lambda: answer.served >= 2, "the node to ask again after the forged answer", timeout=SETTLE)

    async def alive(self) -> None:
        """Still up: the process runs, /health answers, and heartbeats keep coming."""
        self.up()
        async with aiohttp.ClientSession() as session, session.get(f"{self.plane.node_url}/health") as response:
            assert response.status == 200, await response.text()
        seen = len(self.plane.heartbeats)
        await poll(lambda: len(self.plane.heartbeats) >= seen + 2, "two more heartbeats", timeout=SETTLE)

    async def execute(self, token: str | None) -> tuple[int, str | None]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        body = {"module": "calc", "function": "add", "args": [1, 2]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.plane.node_url}/api/v1/wasm/execute", json=body, headers=headers) as response,
        ):
            await response.read()
            return response.status, response.headers.get("X-Hotswap-Version")


@pytest.fixture
async def plane() -> AsyncIterator[RoguePlane]:
    rogue = RoguePlane(Keys())
    rogue.add_blob(CALC_1)
    rogue.add_blob(CALC_2)
    await rogue.start()
    try:
        yield rogue
    finally:
        await rogue.stop()


@pytest.fixture
async def pinned_factory(plane: RoguePlane, tmp_path: Path) -> AsyncIterator[Callable[..., Pinned]]:
    nodes: list[EdgeProcess] = []

    def start(*flags: str) -> Pinned:
        key_file = plane.keys.write(tmp_path / "control-plane.pem")
        node = spawn_node(plane.url, NODE, tmp_path, flags=["--control-plane-key", str(key_file), *flags])
        nodes.append(node)
        return Pinned(plane, plane.keys, node, tmp_path)

    try:
        yield start
    finally:
        await asyncio.gather(*(asyncio.to_thread(n.stop) for n in nodes))


@pytest.fixture
async def pinned(pinned_factory: Callable[..., Pinned]) -> Pinned:
    node = pinned_factory()
    await node.registered()
    return node


# -- forged tables: refused on a node that has no table yet, which then takes the genuine one ---------


@dataclass(frozen=True)
class Forgery:
    """A long-poll answer the pinned key did not sign, and what the node's log says of it."""

    body: bytes
    signature: str | None
    said: str  # in the node's log once it is refused


def _forgeries(keys: Keys) -> dict[str, Forgery]:
    good = table_body(1, GOOD)
    bad_signature = "its signature does not verify"
    return {
        "no signature": Forgery(good, None, "it came without a signature"),
        "another key": Forgery(good, Keys().table_signature(GOOD), bad_signature),
        # the pinned key signs execute tokens too: one of those, with a sha256 claim, is not a table signature
        "execute token audience": Forgery(good, keys.table_signature(GOOD, aud=EDGE_AUDIENCE), bad_signature),
        "api audience": Forgery(good, keys.table_signature(GOOD, aud="hotswap-api"), bad_signature),
        "another issuer": Forgery(good, keys.table_signature(GOOD, iss="someone-else"), bad_signature),
        "no issuer": Forgery(good, keys.table_signature(GOOD, iss=None), bad_signature),
        "no sha256 claim": Forgery(good, keys.table_signature(GOOD, sha256=None), bad_signature),
        "sha256 of other modules": Forgery(table_body(1, OTHER), keys.table_signature(GOOD), "the sha256 differs"),
        "alg none": Forgery(good, unsigned_jwt({"alg": "none", "typ": "JWT"}, table_claims(GOOD)), bad_signature),
        "HS256 keyed with the public key": Forgery(
            good, unsigned_jwt({"alg": "HS256", "typ": "JWT"}, table_claims(GOOD), keys.pem.encode()), bad_signature
        ),
        "HS256 keyed with the raw public key": Forgery(
            good,
            unsigned_jwt({"alg": "HS256", "typ": "JWT"}, table_claims(GOOD), keys.public_raw),
            bad_signature,
        ),
        "claims part alone as the signature": Forgery(good, keys.table_signature(GOOD).split(".")[1], bad_signature),
        # json.loads keeps the last of repeated keys: what is hashed is what is applied, the unsigned one
        "repeated modules key, unsigned last": Forgery(
            b'{"generation": 1, "modules": '
            + json.dumps(GOOD).encode()
            + b', "modules": '
            + json.dumps(OTHER).encode()
            + b"}",
            keys.table_signature(GOOD),
            "the sha256 differs",
        ),
        # 100.0 is 100 to the table's model, but not the bytes that were signed: refused, not reinterpreted
        "weight spelled 100.0": Forgery(
            table_body(1, [{**GOOD[0], "weight": 100.0}]), keys.table_signature(GOOD), "the sha256 differs"
        ),
        # past aiohttp's header limit (8190 bytes): the answer is a client error, retried like a lost link
        "64 KiB signature header": Forgery(good, "e" * (64 << 10), "control plane unreachable"),
    }


FORGERY_NAMES = list(_forgeries(Keys()))


@pytest.mark.parametrize("name", FORGERY_NAMES, ids=lambda name: name.replace(" ", "-"))
async def test_a_forged_table_is_refused_and_the_node_takes_the_next_genuine_one(pinned: Pinned, name: str) -> None:
    forgery = _forgeries(pinned.keys)[name]
    answer = pinned.plane.offer(forgery.body, forgery.signature, 1)
    await pinned.refused(answer)
    await poll(lambda: forgery.said in pinned.log(), f"the node to say {forgery.said!r}")

    await pinned.alive()
    assert pinned.plane.running() == set(), "the node serves something from a forged table"
    assert pinned.plane.reported_generation() == 0
    assert not kept_table(pinned.data, NODE).exists(), "the node kept a forged table on disk"
    assert pinned.plane.refused_bodies == []

    pinned.plane.offer_signed(1, GOOD)
    await pinned.serving("1.0.0")
    await poll(kept_table(pinned.data, NODE).exists, "the node to keep the genuine table")
    assert pinned.plane.reported_generation() == 1


async def test_a_refused_table_leaves_the_served_one_in_place(pinned: Pinned) -> None:
    pinned.plane.offer_signed(1, GOOD)
    await pinned.serving("1.0.0")
    kept = kept_table(pinned.data, NODE)
    await poll(kept.exists, "the node to keep its table")
    before = kept.read_bytes()

    forged = pinned.plane.offer_signed(2, OTHER, keys=Keys())
    await pinned.refused(forged)
    assert REFUSED in pinned.log()
    await pinned.alive()
    assert pinned.plane.running() == {("calc", "1.0.0", 100)}
    assert pinned.plane.reported_generation() == 1
    assert kept.read_bytes() == before, "a refused table changed the one kept on disk"

    pinned.plane.offer_signed(2, OTHER)
    await pinned.serving("1.1.0")
    assert pinned.plane.reported_generation() == 2


async def test_a_node_with_workers_refuses_a_forged_table_too(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned]
) -> None:
    """With `--workers` the supervisor runs the agent: the same check, before any worker gets the table."""
    node = pinned_factory("--workers", "2")
    await node.registered()
    forged = plane.offer_signed(1, OTHER, keys=Keys())
    await node.refused(forged)
    assert REFUSED in node.log()
    await node.alive()
    assert plane.running() == set()
    plane.offer_signed(1, GOOD)
    await node.serving("1.0.0")
    assert await node.execute(node.keys.execute_token()) == (200, "1.0.0")


async def test_equivalent_spellings_of_the_signed_modules_are_served_as_signed(pinned: Pinned) -> None:
    """Whatever the body's spelling, the node applies the very value it hashed: the signed one."""
    spelled = json.dumps(GOOD).replace('"calc"', '"\\u0063alc"').encode()
    repeated = b'{"generation": 1, "modules": ' + json.dumps(OTHER).encode() + b', "modules": ' + spelled + b"}"
    binding = {TABLE_BINDING_HEADER: pinned.keys.table_binding(NODE, 1, GOOD)}
    answer = pinned.plane.offer(repeated, pinned.keys.table_signature(GOOD), 1, binding)
    await pinned.serving("1.0.0")
    assert answer.served == 1
    saved = json.loads(kept_table(pinned.data, NODE).read_text())
    assert saved["modules"] == GOOD


async def test_a_registration_answer_with_another_key_does_not_displace_the_pinned_one(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned]
) -> None:
    impostor = Keys()
    plane.public_key = impostor.pem  # what the registration answer names
    node = pinned_factory()
    await node.registered()
    await poll(
        lambda: "answered with another public key" in node.log(), "the node to say the key is not the pinned one"
    )

    forged = plane.offer_signed(1, OTHER, keys=impostor)
    await node.refused(forged)
    await node.alive()
    assert plane.running() == set()

    plane.offer_signed(1, GOOD)
    await node.serving("1.0.0")
    assert await node.execute(impostor.execute_token()) == (401, None)
    assert await node.execute(node.keys.execute_token()) == (200, "1.0.0")


# -- holes ------------------------------------------------------------------------------------------


async def test_an_older_signed_table_replayed_with_a_higher_generation_is_not_applied(pinned: Pinned) -> None:
    old = await pinned.moved_on()

    # the same bytes, signature and binding as generation 1 had, under a new number
    replay = pinned.plane.offer(table_body(3, OTHER), old.signature, 3, old.headers)
    await pinned.refused(replay)
    await poll(lambda: "not given to node" in pinned.log(), "the node to say the binding names another generation")
    await pinned.alive()
    assert pinned.plane.running() == {("calc", "1.0.0", 100)}, "the node went back to the replayed table"
    assert pinned.plane.reported_generation() == 2


async def test_an_older_table_of_this_node_sent_again_under_its_own_generation_is_refused(pinned: Pinned) -> None:
    """Genuine in every byte, binding included, but older than what the node runs: a rollback. The node
    refuses it and registers again, which is how a control plane that lost state learns where the
    node's numbering stands."""
    old = await pinned.moved_on()
    registrations = len(pinned.plane.registrations)

    replay = pinned.plane.offer(old.body, old.signature, 1, old.headers)
    await pinned.refused(replay)
    await poll(lambda: "is not past the applied 2" in pinned.log(), "the node to say the table is older")
    await poll(lambda: len(pinned.plane.registrations) > registrations, "the node to register again")
    assert pinned.plane.registrations[-1]["generation"] == 2
    await pinned.alive()
    assert pinned.plane.running() == {("calc", "1.0.0", 100)}, "the node went back to the older table"

    pinned.plane.offer_signed(3, OTHER)  # what the control plane then sends, numbered past the node's
    await pinned.serving("1.1.0")


def _binding_forgeries(keys: Keys) -> dict[str, tuple[bytes, str, dict[str, str], str]]:
    """Answers whose modules and signature are genuine and whose binding is not this node's at
    generation 1: (body, signature, headers, what the node's log says)."""
    good, signature = table_body(1, GOOD), keys.table_signature(GOOD)
    other_node = "edge-eu-central-1"
    _, other_path = tablebinding.parse(keys.table_binding(other_node, 1, GOOD, [(NODE, 1, GOOD)]))
    token, own_path = tablebinding.parse(keys.table_binding(NODE, 1, GOOD, [(other_node, 1, GOOD)]))
    not_given = "not given to node"
    bad = "binding does not verify"
    malformed = "binding is malformed"
    cases = {
        "no binding": ({}, "without a binding"),
        "another node's binding": ({TABLE_BINDING_HEADER: keys.table_binding(other_node, 1, GOOD)}, not_given),
        "another node's path in a shared batch": (
            {TABLE_BINDING_HEADER: tablebinding.header(token, other_path)},
            not_given,
        ),
        "another generation": ({TABLE_BINDING_HEADER: keys.table_binding(NODE, 2, GOOD)}, not_given),
        "other modules": ({TABLE_BINDING_HEADER: keys.table_binding(NODE, 1, OTHER)}, not_given),
        "own path cut short": ({TABLE_BINDING_HEADER: tablebinding.header(token, b"")}, not_given),
        "another key": ({TABLE_BINDING_HEADER: Keys().table_binding(NODE, 1, GOOD)}, bad),
        "table audience": ({TABLE_BINDING_HEADER: keys.table_binding(NODE, 1, GOOD, aud=TABLE_AUDIENCE)}, bad),
        "no root claim": ({TABLE_BINDING_HEADER: keys.table_binding(NODE, 1, GOOD, root=None)}, bad),
        "the table signature as the binding": ({TABLE_BINDING_HEADER: signature + ";"}, bad),
        "side byte 2": ({TABLE_BINDING_HEADER: tablebinding.header(token, b"\x02" + own_path[1:])}, malformed),
        "path not base64url": ({TABLE_BINDING_HEADER: token + ";%%%"}, malformed),
        "no separator": ({TABLE_BINDING_HEADER: token}, malformed),
        "41 levels": ({TABLE_BINDING_HEADER: tablebinding.header(token, own_path[:33] * 41)}, malformed),
    }
    return {name: (good, signature, headers, said) for name, (headers, said) in cases.items()}


BINDING_FORGERIES = list(_binding_forgeries(Keys()))


@pytest.mark.parametrize("name", BINDING_FORGERIES, ids=lambda name: name.replace(" ", "-"))
async def test_a_table_not_bound_to_this_node_and_generation_is_refused(pinned: Pinned, name: str) -> None:
    body, signature, headers, said = _binding_forgeries(pinned.keys)[name]
    answer = pinned.plane.offer(body, signature, 1, headers)
    await pinned.refused(answer)
    await poll(lambda: said in pinned.log(), f"the node to say {said!r}")
    await pinned.alive()
    assert pinned.plane.running() == set(), "the node serves a table not bound to it"
    assert not kept_table(pinned.data, NODE).exists(), "the node kept an unbound table on disk"

    pinned.plane.offer_signed(1, GOOD)
    await pinned.serving("1.0.0")


async def test_a_registration_answer_without_a_key_does_not_open_execute_calls(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned]
) -> None:
    plane.public_key = None
    node = pinned_factory()
    await node.registered()
    plane.offer_signed(1, GOOD)  # genuine: any table this key ever signed will do
    await node.serving("1.0.0")
    assert await node.execute(node.keys.execute_token()) == (200, "1.0.0")
    assert await node.execute(None) == (401, None), "an execute call without a token was served"


DEPTH = 100_000
NESTED = b"[" * DEPTH + b"]" * DEPTH


@pytest.mark.parametrize("where", ["assignment", "registration-answer", "heartbeat-answer"])
async def test_a_deeply_nested_answer_does_not_end_the_agent(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned], where: str
) -> None:
    if where == "assignment":
        node = pinned_factory()
        await node.registered()
        answer = plane.offer(b'{"generation": 1, "modules": ' + NESTED + b"}", plane.keys.table_signature([]), 1)
        await poll(lambda: answer.served >= 1, "the node to get the nested answer")
    else:
        if where == "registration-answer":
            plane.raw_registration = NESTED
        else:
            plane.raw_heartbeat = NESTED
        node = pinned_factory()
        await poll(lambda: plane.raw_sent >= 1, "the node to get the nested answer")
        plane.raw_registration = plane.raw_heartbeat = None
    plane.offer_signed(1, GOOD)
    await poll(
        lambda: plane.running() == {("calc", "1.0.0", 100)},
        "the node to take the genuine table after the nested answer",
        timeout=SETTLE,
    )


async def test_a_generation_past_the_wire_bound_does_not_cut_the_node_off(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, [])
    proxy = MitmProxy(cluster.url)
    await proxy.start()
    try:
        key_file = tmp_path / "control-plane.pem"
        key_file.write_text(cluster.plane.authority.public_key_pem)
        node_id = NODE
        token = cluster.plane.mint(node_id, "node")
        node = spawn_edge(
            proxy.url, token, node_id, "us-east", cluster.data, flags=["--control-plane-key", str(key_file)]
        )
        cluster.nodes.append(node)

        def healthy() -> bool:
            views = [v for v in cluster.plane.hub.view() if v.id == node_id]
            return (
                bool(views) and views[0].status == "Healthy" and views[0].applied_generation == views[0].generation > 0
            )

        await poll(healthy, "the node to run the control plane's table")
        # Only the generation changes: `modules` and their signature pass as the control plane sent them.
        proxy.rewrite_tables(lambda table: {**table, "generation": PAST_WIRE})
        await poll(
            lambda: proxy.registered_with(PAST_WIRE) or proxy.polled_after_rewrite(below=PAST_WIRE),
            "the node to take the rewritten table (and register again with its generation) or refuse it",
        )
        proxy.rewrite_tables(None)  # the attacker leaves: everything passes as it is from now on
        left = len(proxy.events)
        assert node.process.poll() is None

        def reaches_it_again() -> bool:
            table = cluster.plane.hub.table(node_id)
            return table is not None and table.generation in proxy.heartbeats_since(left) and healthy()

        await poll(reaches_it_again, "a heartbeat of the node's, at the control plane's generation, taken", SETTLE)
    finally:
        await proxy.stop()
        await stop_cluster(cluster)


@pytest.mark.parametrize("seconds", [0, 1e9])
async def test_a_registration_answer_asking_for_a_heartbeat_period_out_of_range_is_refused(
    plane: RoguePlane, pinned_factory: Callable[..., Pinned], seconds: float
) -> None:
    plane.raw_registration = json.dumps(
        {"id": NODE, "heartbeatSeconds": seconds, "generation": 0, "publicKey": plane.keys.pem}
    ).encode()
    node = pinned_factory()
    await poll(lambda: "heartbeatSeconds" in node.log() and node.up(), "the node to refuse the answer")
    assert plane.raw_sent >= 1 and not plane.registrations
    plane.raw_registration = None  # the next answer is in range: the node registers and takes a table
    await node.registered()
    plane.offer_signed(1, GOOD)
    await node.serving("1.0.0")
