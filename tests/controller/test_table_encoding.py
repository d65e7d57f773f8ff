"""Tables cost little to publish: nodes given the same table share one encoding (and one signature),
the encoding is what the nodes read, and a node can check the signature against the bytes it parsed;
the bindings of a publish to each node and generation cost one more signature for the whole batch."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from edge.nodeapi import Registration
from edge.protocol import ModuleEntry, ModuleTable
from edge.tablecache import TableRefusedError, TrustedKey, verify, verify_binding
from reconciler.api.auth import AuthOptions, TokenAuthority
from reconciler.apply.nodes import NodeHub
from reconciler.apply.tables import WireEntries, from_wire, to_wire
from reconciler.planner import AssignmentEntry
from reconciler.spec.models import Capabilities, HealthCheck, Limits, SmokeCall
from reconciler.store.state import StateStore

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def authority(tmp_path: Path) -> TokenAuthority:
    return TokenAuthority.load(AuthOptions(), tmp_path / "control")


LIMITS, CAPABILITIES = Limits(), Capabilities(env={"GREETING": "hi"})  # one revision's spec objects


def rows(
    weight: int, limits: Limits = LIMITS, capabilities: Capabilities = CAPABILITIES
) -> tuple[AssignmentEntry, ...]:
    return (
        AssignmentEntry("greeter", "1.0.0", DIGEST, 100 - weight, limits, capabilities),
        AssignmentEntry("greeter", "1.1.0", DIGEST.replace("ab", "cd"), weight, limits, capabilities),
    )


async def registered(store: StateStore, authority: TokenAuthority, *nodes: str) -> NodeHub:
    hub = NodeHub(store, public_key=authority.public_key_pem, issuer="hotswap", signer=authority.sign)
    for node in nodes:
        await hub.register(Registration(id=node, region="eu", hostname=node, url=f"http://127.0.0.1:9/{node}"))
    return hub


async def test_nodes_given_the_same_table_share_one_encoding(store: StateStore, authority: TokenAuthority) -> None:
    hub = await registered(store, authority, "edge-1", "edge-2", "edge-3")
    wire = WireEntries()
    for node in ("edge-1", "edge-2", "edge-3"):
        await hub.publish(node, wire.table(rows(20)))  # each node its own rows, from the same spec objects
    assert hub.encoder.encoded == 1
    answers = {}
    for node in ("edge-1", "edge-2", "edge-3"):
        held = hub.table(node)
        assert held is not None
        answers[node] = hub.answer(node, held)
    bodies = {json.dumps(json.loads(body)["modules"]) for body, _ in answers.values()}
    signatures = {signature for _, signature in answers.values()}
    assert len(bodies) == 1 and len(signatures) == 1 and None not in signatures
    await hub.publish("edge-2", wire.table(rows(50)))  # another content: one more encoding
    assert hub.encoder.encoded == 2


async def test_the_shared_encoding_is_the_table_a_node_reads_and_its_signature_checks(
    store: StateStore, authority: TokenAuthority
) -> None:
    hub = await registered(store, authority, "edge-1")
    entries = WireEntries().table(rows(20))
    generation = await hub.publish("edge-1", entries)
    held = hub.table("edge-1")
    assert held is not None
    body, signature = hub.answer("edge-1", held)
    parsed = json.loads(body)
    table = ModuleTable.model_validate(parsed)
    assert table.generation == generation and table.modules == entries
    assert json.loads(body) == json.loads(json.dumps(held.model_dump(mode="json", by_alias=True)))  # as before
    assert signature is not None
    key = TrustedKey(authority.public_key_pem, "hotswap")
    verify(parsed["modules"], signature, key)
    parsed["modules"][1]["weight"] = 100
    with pytest.raises(TableRefusedError, match="not what the control plane signed"):
        verify(parsed["modules"], signature, key)


async def test_a_table_read_back_from_the_store_is_encoded_the_same(
    store: StateStore, authority: TokenAuthority
) -> None:
    hub = await registered(store, authority, "edge-1")
    await hub.publish("edge-1", WireEntries().table(rows(20)))
    held = hub.table("edge-1")
    assert held is not None
    published = hub.answer("edge-1", held)
    again = await registered(store, authority)  # a restarted control plane: tables come from the store
    table = again.table("edge-1")
    assert table is not None
    assert again.answer("edge-1", table) == published


def test_the_same_rows_give_the_same_wire_objects() -> None:
    wire = WireEntries()
    first, second = wire.table(rows(20)), wire.table(rows(20))
    assert all(a is b for a, b in zip(first, second, strict=True))  # converted once
    other = wire.table(rows(20, Limits(), Capabilities(env={"GREETING": "hi"})))  # another revision's objects
    assert other == first and other[0] is not first[0]
    assert isinstance(first[0], ModuleEntry)


def test_a_wire_entry_holds_the_rows_objects_and_a_stored_one_reads_back_as_the_row() -> None:
    """The planner plans in the wire's types: a table entry holds the row's limits, capabilities,
    health check and smoke calls as they are, and a stored entry read back is the planner's row again
    (so a restarted control plane does not publish every table anew)."""
    check, smoke = HealthCheck(function="health"), (SmokeCall(function="add", args=[1, 2], expect=3),)
    row = replace(rows(20)[1], health_check=check, smoke=smoke, sticky="X-User", argv=("greeter", "-v"))
    entry = to_wire(row)
    assert (entry.limits, entry.capabilities, entry.health_check) == (row.limits, row.capabilities, row.health_check)
    assert entry.limits is LIMITS and entry.capabilities is CAPABILITIES and entry.smoke[0] is smoke[0]
    stored = ModuleEntry.model_validate_json(entry.model_dump_json(by_alias=True))
    assert from_wire(stored) == row and from_wire(entry) == row


async def test_tables_read_back_from_rows_share_one_signature(store: StateStore, authority: TokenAuthority) -> None:
    # A follower replica (or a restart) parses each node's table from its row: new objects each time,
    # the same content; the content is signed once, however many nodes hold it.
    hub = await registered(store, authority, "edge-1")
    published = hub.encoder.encode(WireEntries().table(rows(20)))
    parsed = [tuple(ModuleEntry.model_validate(row) for row in published.assignment["modules"]) for _ in range(3)]
    again = [hub.encoder.encode(entries) for entries in parsed]
    assert hub.encoder.encoded == 4 and hub.encoder.signed == 1
    assert {table.signature for table in again} == {published.signature}
    assert all(
        table.modules_json == published.modules_json and table.entries is entries
        for table, entries in zip(again, parsed, strict=True)
    )
    other = hub.encoder.encode(WireEntries().table(rows(50)))
    assert hub.encoder.signed == 2 and other.signature != published.signature


async def test_a_table_carries_the_step_traces_of_the_modules_it_changes(
    store: StateStore, authority: TokenAuthority
) -> None:
    """The executor hands the pass's step traces to the publish (no context variable in between);
    a table carries those of the modules it changes, not of the others."""
    hub = await registered(store, authority, "edge-1")
    wire = WireEntries()
    first = wire.table(rows(2))
    traces = {
        "greeter": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
        "elsewhere": "00-" + "3" * 32 + "-" + "4" * 16 + "-01",
    }
    await hub.publish("edge-1", first, traces)
    table = hub.table("edge-1")
    assert table is not None and table.traceparents == {"greeter": traces["greeter"]}
    await hub.publish("edge-1", wire.table(rows(3)))  # another table, published with no steps
    table = hub.table("edge-1")
    assert table is not None and table.traceparents == {}


async def test_one_signature_binds_every_table_of_a_publish_to_its_node_and_generation(
    store: StateStore, authority: TokenAuthority
) -> None:
    nodes = [f"edge-{i}" for i in range(40)]
    hub = await registered(store, authority, *nodes)
    wire = WireEntries()
    published = await asyncio.gather(
        *(hub.publish(n, wire.table(rows(20 if i % 3 else 50))) for i, n in enumerate(nodes))
    )
    key = TrustedKey(authority.public_key_pem, "hotswap")
    bindings, hashes = {}, {}
    for node, generation in zip(nodes, published, strict=True):
        held = hub.table(node)
        assert held is not None and held.generation == generation
        body, signature = hub.answer(node, held)
        assert signature is not None
        hashes[node] = verify(json.loads(body)["modules"], signature, key)
        bindings[node] = hub.binding(node, held)
        verify_binding(node, held.generation, hashes[node], bindings[node], key)
    assert hub.encoder.bound == 1, "a publish's tables are bound under one signature"
    first, second = nodes[:2]
    generation = hub.table(first).generation  # type: ignore[union-attr]
    with pytest.raises(TableRefusedError, match="not given to node 'edge-1'"):
        verify_binding(second, generation, hashes[first], bindings[first], key)
    with pytest.raises(TableRefusedError, match="not given to node 'edge-0' under generation"):
        verify_binding(first, generation + 1, hashes[first], bindings[first], key)

    await hub.publish(second, wire.table(rows(70)))  # one node's table changes: one more batch, of one
    held = hub.table(second)
    assert held is not None and hub.binding(second, held) != bindings[second]
    assert hub.binding(first, hub.table(first)) == bindings[first]  # type: ignore[arg-type]
    assert hub.encoder.bound == 2


async def test_tables_read_back_from_rows_are_bound_too(store: StateStore, authority: TokenAuthority) -> None:
    """A follower replica, or a restart, answers tables it read from the rows: bound the same way."""
    hub = await registered(store, authority, "edge-1", "edge-2")
    wire = WireEntries()
    await hub.publish("edge-1", wire.table(rows(20)))
    await hub.publish("edge-2", wire.table(rows(20)))
    again = await registered(store, authority)
    key = TrustedKey(authority.public_key_pem, "hotswap")
    for node in ("edge-1", "edge-2"):
        table = again.table(node)
        assert table is not None
        body, signature = again.answer(node, table)
        assert signature is not None
        verify_binding(
            node, table.generation, verify(json.loads(body)["modules"], signature, key), again.binding(node, table), key
        )
    assert again.encoder.bound == 1


async def test_without_a_signer_there_is_no_binding(store: StateStore) -> None:
    hub = NodeHub(store)
    await hub.register(Registration(id="edge-1", region="eu", hostname="edge-1", url="http://127.0.0.1:9/edge-1"))
    await hub.publish("edge-1", WireEntries().table(rows(20)))
    table = hub.table("edge-1")
    assert table is not None and hub.binding("edge-1", table) is None and hub.answer("edge-1", table)[1] is None


def test_a_row_handed_again_is_found_by_identity_and_an_equal_new_row_by_its_content() -> None:
    wire = WireEntries(size=8)
    first = rows(20)
    made = wire.table(first)
    assert wire.table(rows(20)) == made and all(a is b for a, b in zip(wire.table(rows(20)), made, strict=True))
    wire._cache = type(wire._cache)(8)  # the content cache forgets: the rows handed before are still known
    assert all(a is b for a, b in zip(wire.table(first), made, strict=True))
    for weight in range(10):  # more distinct rows than the identity map holds: it starts again, still right
        assert [e.weight for e in wire.table(rows(weight))] == [100 - weight, weight]
    assert len(wire._by_row) <= 8
