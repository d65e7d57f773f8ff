"""Attacks on the generation a node registration carries (commit ce5a0a5, `SqlNodes.upsert_node`).

A node token holder may register its node with any generation a node takes (`edge.nodeapi.Registration`:
0 to `edge.protocol.MAX_GENERATION`, 2**53). A new row starts at min(generation,
`MAX_ROW_GENERATION`), an existing row below the registration is renumbered to min(generation + 1,
`MAX_ROW_GENERATION`), 2**32 under the bound, and never back. Played here, against a real control plane
over HTTP, on SQLite and on PostgreSQL:

* an existing row and a brand-new node id registered at 0, 1, MAX_ROW_GENERATION - 1,
  MAX_ROW_GENERATION, MAX_ROW_GENERATION + 1, MAX_GENERATION - 1 and MAX_GENERATION, then several
  tables published by the hub after each: every registration is answered (no 500), the row lands
  where the rule says, and every table answered on the long-poll validates as a `ModuleTable`, is
  numbered past the one before, and carries a binding that verifies for that node;
* registrations climbing to the bound again and again between publishes, and a burst of concurrent
  registrations at mixed generations: the row never goes back and stays within the bound;
* the genuine node registering again at its real, small generation after the attack: it is answered
  a valid table past the one it applied, and its heartbeats at that generation are taken (the token
  holder's heartbeats at 2**53 do not move the row);
* values a registration must not carry (MAX_GENERATION + 1, 2**63, negative, 1e16, 1.5, strings that
  are not integers, null, lists, NaN, Infinity, a 5,000-digit integer): a 400 naming `generation`
  (or `body` for what is not JSON), the row unchanged; spellings pydantic takes for an integer in lax
  mode (7.0, "7", true, 2.0**53) count as that integer and stay within the bound.

What holds: all of the above, and a pinned node that applied a table numbered past MAX_ROW_GENERATION
(which it takes once a token holder has pushed its row there) and whose row is then deleted (an operator
deletes the node, as after any incident): it registers again with that generation, and its new row
starts at the deleted row's generation (`SqlNodes.delete_node` keeps it), so the next table is past the
one it applied (`test_a_deleted_node_that_applied_past_the_row_cap_rejoins_under_its_own_table`, and with
a real `hotswap edge --control-plane-key` process,
`test_a_real_pinned_node_deleted_after_the_attack_runs_the_tables_of_its_new_row`). What does not: a
store restored from a backup taken before the attack renumbers the row to MAX_ROW_GENERATION at most, and
the node serves its old table until the control plane has published past the one it applied.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.nodeapi import NODES_PATH
from edge.protocol import MAX_GENERATION, TABLE_BINDING_HEADER, TABLE_SIGNATURE_HEADER, ModuleEntry, ModuleTable
from edge.tablecache import verify_table
from reconciler.store.nodes import MAX_ROW_GENERATION
from tests.e2e.cluster import Cluster, EdgeProcess, poll, start_cluster, stop_cluster
from tests.security.test_table_binding_attacks import _call, _key, _registration

BOUNDARIES = [
    0,
    1,
    MAX_ROW_GENERATION - 1,
    MAX_ROW_GENERATION,
    MAX_ROW_GENERATION + 1,
    MAX_GENERATION - 1,
    MAX_GENERATION,
]
SLACK = 16  # publishes the controller's own passes may add to a row while a test runs
NODE = "edge-us-east-1"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The control plane's state store: its own SQLite file (None), or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("database_url"))


@pytest.fixture
async def cluster(tmp_path: Path, backend: str | None) -> AsyncIterator[Cluster]:
    started = await start_cluster(tmp_path, [], database_url=backend)
    try:
        yield started
    finally:
        await stop_cluster(started)


async def _register(cluster: Cluster, node_id: str, generation: Any) -> tuple[int, Any]:
    token = cluster.plane.mint(node_id, "node")
    status, raw, _ = await _call(cluster, "POST", NODES_PATH, token, json=_registration(node_id, generation))
    return status, json.loads(raw)


async def _register_raw(cluster: Cluster, node_id: str, generation_json: str) -> tuple[int, Any]:
    """A registration whose generation is spelled as `generation_json`, byte for byte."""
    body = json.dumps(_registration(node_id, 0)).replace('"generation": 0', f'"generation": {generation_json}')
    assert generation_json in body
    headers = {"Authorization": f"Bearer {cluster.plane.mint(node_id, 'node')}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(cluster.url + NODES_PATH, data=body.encode(), headers=headers) as response,
    ):
        return response.status, json.loads(await response.read())


async def _table(cluster: Cluster, node_id: str, after: int) -> ModuleTable:
    """The long-poll answer past `after`, as a node would check it: a `ModuleTable` (which refuses a
    generation past MAX_GENERATION) whose signature and binding verify for this node."""
    token = cluster.plane.mint(node_id, "node")
    params = {"after": str(after), "wait": "5"}
    status, raw, headers = await _call(cluster, "GET", f"{NODES_PATH}/{node_id}/assignment", token, params=params)
    assert status == 200, (node_id, after, status, raw[:300])
    parsed = json.loads(raw)
    table = ModuleTable.model_validate(parsed)  # raises for a generation no node takes
    signature, binding = headers.get(TABLE_SIGNATURE_HEADER), headers.get(TABLE_BINDING_HEADER)
    assert signature is not None and binding is not None, "the control plane answered a table unbound"
    verify_table(node_id, table, parsed["modules"], signature, binding, _key(cluster))
    return table


def _entries(i: int) -> tuple[ModuleEntry, ...]:
    """A table no other publish had: the hub publishes only what differs from the node's table."""
    return (ModuleEntry(module="probe", version=f"1.0.{i}", digest="sha256:" + f"{i:064x}"),)


async def _publish_and_take(cluster: Cluster, node_id: str, times: int, start: int = 0) -> list[int]:
    """Publish `times` new tables to the node through the hub and take each one from the long-poll as
    the node would; their generations."""
    seen: list[int] = []
    for i in range(times):
        generation = await cluster.plane.hub.publish(node_id, _entries(start + i))
        assert generation is not None, f"{node_id} unknown to the hub"
        assert generation <= MAX_GENERATION, f"published {node_id}'s table numbered {generation}, past 2**53"
        table = await _table(cluster, node_id, generation - 1)
        assert table.generation >= generation
        assert not seen or table.generation > seen[-1], (seen, table.generation)
        seen.append(table.generation)
    return seen


def _row(cluster: Cluster, node_id: str) -> int:
    node = cluster.plane.store.get_node(node_id)
    assert node is not None, f"{node_id} has no row"
    return node.generation


def _node_id(i: int) -> str:
    return f"edge-us-east-{i + 1}"


# -- every boundary, on an existing row and on a new one ------------------------------------------------


async def test_an_existing_row_registered_at_each_boundary_stays_within_the_bound_and_publishes_validate(
    cluster: Cluster,
) -> None:
    for i, generation in enumerate(BOUNDARIES):
        node_id = _node_id(i)
        status, answer = await _register(cluster, node_id, 0)
        assert status == 201, answer
        before = _row(cluster, node_id)
        assert before < SLACK, (node_id, before)

        status, answer = await _register(cluster, node_id, generation)
        assert status == 200, (generation, answer)
        expected = min(generation + 1, MAX_ROW_GENERATION) if generation > before else before
        assert expected <= answer["generation"] <= expected + SLACK, (generation, answer)
        assert expected <= _row(cluster, node_id) <= expected + SLACK
        if before < generation < MAX_ROW_GENERATION:  # renumbered past what the node says it applied
            assert answer["generation"] > generation, (generation, answer)

        taken = await _publish_and_take(cluster, node_id, 3, start=10 * i)
        assert taken[0] > answer["generation"] - 1 and taken[-1] <= MAX_ROW_GENERATION + SLACK, taken


async def test_a_new_node_id_registered_at_each_boundary_starts_within_the_bound_and_publishes_validate(
    cluster: Cluster,
) -> None:
    for i, generation in enumerate(BOUNDARIES):
        node_id = _node_id(i)
        status, answer = await _register(cluster, node_id, generation)
        assert status == 201, (generation, answer)
        expected = min(generation, MAX_ROW_GENERATION)
        assert expected <= answer["generation"] <= expected + SLACK, (generation, answer)
        assert expected <= _row(cluster, node_id) <= expected + SLACK

        taken = await _publish_and_take(cluster, node_id, 3, start=10 * i)
        assert taken[0] > expected and taken[-1] <= MAX_ROW_GENERATION + SLACK, taken
        if generation <= MAX_ROW_GENERATION:  # the first table it is given is past what it applied
            assert taken[0] > generation, (generation, taken)


# -- climbing, racing, and the genuine node after the attack ---------------------------------------------


async def test_registrations_climbing_to_the_bound_between_publishes_never_take_the_row_back(
    cluster: Cluster,
) -> None:
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    last = answer["generation"]
    for round_ in range(4):
        for generation in (MAX_ROW_GENERATION - 1, MAX_GENERATION, MAX_ROW_GENERATION + 1, MAX_GENERATION - 1, 5):
            status, answer = await _register(cluster, NODE, generation)
            assert status == 200, (round_, generation, answer)
            assert answer["generation"] >= last, f"registering at {generation} took the table back: {answer}"
            last = answer["generation"]
        taken = await _publish_and_take(cluster, NODE, 2, start=10 * round_)
        assert taken[0] > last, (last, taken)
        last = taken[-1]
    # four rounds: one renumbering to the cap, then only the eight publishes (and the controller's own)
    assert MAX_ROW_GENERATION + 8 <= last <= MAX_ROW_GENERATION + 8 + SLACK, last
    table = cluster.plane.hub.table(NODE)
    assert table is not None and last <= table.generation <= last + SLACK  # and the controller's own
    assert last <= _row(cluster, NODE) <= last + SLACK


async def test_concurrent_registrations_at_mixed_generations_leave_the_row_at_or_past_every_answer(
    cluster: Cluster,
) -> None:
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    generations = [MAX_GENERATION, 3, MAX_ROW_GENERATION + 1, 0, MAX_GENERATION - 1, MAX_ROW_GENERATION - 1] * 4
    answers = await asyncio.gather(*(_register(cluster, NODE, g) for g in generations))
    assert [status for status, _ in answers] == [200] * len(generations), [a for s, a in answers if s != 200][:3]
    highest = max(a["generation"] for _, a in answers)
    assert MAX_ROW_GENERATION <= highest <= MAX_ROW_GENERATION + SLACK, highest
    table = cluster.plane.hub.table(NODE)
    assert table is not None and table.generation >= highest
    assert _row(cluster, NODE) >= highest
    taken = await _publish_and_take(cluster, NODE, 2)
    assert taken[0] > highest, (highest, taken)


async def test_the_genuine_node_registering_again_after_the_attack_gets_a_table_past_its_own(
    cluster: Cluster,
) -> None:
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    applied = (await _publish_and_take(cluster, NODE, 3))[-1]  # what the genuine node runs
    assert applied < SLACK

    status, answer = await _register(cluster, NODE, MAX_GENERATION)  # the token holder
    assert status == 200, answer
    row = _row(cluster, NODE)
    token = cluster.plane.mint(NODE, "node")
    for generation in (MAX_GENERATION, MAX_GENERATION - 1, 0):  # its heartbeats never renumber the row
        path = f"{NODES_PATH}/{NODE}/heartbeat"
        status, raw, _ = await _call(cluster, "POST", path, token, json={"generation": generation})
        assert status == 200, raw
        assert row <= json.loads(raw)["generation"] <= row + SLACK, raw  # the controller's publishes alone
        assert row <= _row(cluster, NODE) <= row + SLACK

    status, answer = await _register(cluster, NODE, applied)  # the genuine node, registering again
    assert status == 200, answer
    assert MAX_ROW_GENERATION <= answer["generation"] <= MAX_ROW_GENERATION + SLACK, answer
    table = await _table(cluster, NODE, applied)  # its long-poll, after what it applied
    assert table.generation > applied
    beat = {"generation": table.generation}
    status, raw, _ = await _call(cluster, "POST", f"{NODES_PATH}/{NODE}/heartbeat", token, json=beat)
    assert status == 200, raw
    assert json.loads(raw)["generation"] >= table.generation
    taken = await _publish_and_take(cluster, NODE, 2)
    assert taken[0] > table.generation, (table.generation, taken)

    # The genuine node registers again at what it now runs: nothing moves (no renumbering below a row).
    status, answer = await _register(cluster, NODE, taken[-1])
    assert status == 200 and taken[-1] <= answer["generation"] <= taken[-1] + SLACK, (taken, answer)
    assert taken[-1] <= _row(cluster, NODE) <= taken[-1] + SLACK  # the controller's own publishes alone


async def test_a_deleted_node_that_applied_past_the_row_cap_rejoins_under_its_own_table(cluster: Cluster) -> None:
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    status, answer = await _register(cluster, NODE, MAX_GENERATION)  # the token holder
    assert status == 200, answer
    applied = (await _publish_and_take(cluster, NODE, 3))[-1]  # the genuine node takes these: valid, its own
    assert applied > MAX_ROW_GENERATION

    deleted, raw, _ = await _call(cluster, "DELETE", f"{NODES_PATH}/{NODE}", cluster.token("admin"))
    assert deleted == 204, raw
    await poll(lambda: cluster.plane.store.get_node(NODE) is None, "the node's row to be gone")

    status, answer = await _register(cluster, NODE, applied)  # the genuine node joins again
    assert status == 201, answer
    table = await _table(cluster, NODE, applied)
    assert table.generation > applied, (
        f"the rejoined node, which applied {applied}, is answered {table.generation}: "
        f"a pinned node refuses it ({applied - table.generation + 1} publishes short)"
    )


def start_pinned(cluster: Cluster, tmp_path: Path, node_id: str) -> EdgeProcess:
    """A real `hotswap edge` node of the cluster, pinned to its control plane's key."""
    key_file = tmp_path / "control-plane.pem"
    key_file.write_text(cluster.plane.authority.public_key_pem)
    return cluster.start_node(node_id, "us-east", flags=["--control-plane-key", str(key_file)])


def runs_from(cluster: Cluster, node: EdgeProcess, node_id: str, generation: int) -> bool:
    """Whether the (live) node runs the table the hub holds for it, with modules, numbered `generation`
    or past it."""
    assert node.process.poll() is None, node.log.read_text(errors="replace")[-3000:]
    hub = cluster.plane.hub
    view = next((v for v in hub.view() if v.id == node_id), None)
    table = hub.table(node_id)
    return (
        view is not None
        and table is not None
        and bool(table.modules)
        and view.applied_generation == table.generation >= generation
    )


async def test_a_real_pinned_node_deleted_after_the_attack_runs_the_tables_of_its_new_row(
    cluster: Cluster, tmp_path: Path
) -> None:
    node = start_pinned(cluster, tmp_path, NODE)
    hub = cluster.plane.hub

    def runs_past(generation: int) -> bool:
        return runs_from(cluster, node, NODE, generation + 1)

    await poll(lambda: runs_past(0), "the pinned node to run its first table")
    status, answer = await _register(cluster, NODE, MAX_GENERATION)  # the token holder
    assert status == 200, answer
    await poll(lambda: runs_past(MAX_ROW_GENERATION - 1), "the node to take the renumbered table")
    # One more change of its table (emptied, then the controller's own table again): it runs past the cap.
    assert await hub.publish(NODE, ()) == MAX_ROW_GENERATION + 1
    await poll(lambda: runs_past(MAX_ROW_GENERATION + 1), "the node to run the controller's table again")
    applied = next(v for v in hub.view() if v.id == NODE).applied_generation

    deleted, raw, _ = await _call(cluster, "DELETE", f"{NODES_PATH}/{NODE}", cluster.token("admin"))
    assert deleted == 204, raw
    # The node, told it is forgotten, registers again: its new row takes the deleted one's number and
    # table (the one it runs). The next change of its table must be one it takes.
    await poll(lambda: hub.known(NODE) and runs_past(applied - 1), "the node to register again")
    assert await hub.publish(NODE, ()) == applied + 1
    refused = "is not past the applied"
    await poll(
        lambda: refused in node.log.read_text(errors="replace") or runs_past(applied),
        "the rejoined node to run a table past the one it applied, or to refuse one",
    )
    row = cluster.plane.store.get_node(NODE)
    assert refused not in node.log.read_text(errors="replace"), (
        f"the node, which applied {applied}, refused the table of its new row (numbered "
        f"{row.generation if row else None}): {MAX_ROW_GENERATION=}"
    )


# -- what a registration must not carry --------------------------------------------------------------------

REFUSED = {
    "2**53 + 1": str(MAX_GENERATION + 1),
    "2**63": str(2**63),
    "2**64 + 1": str(2**64 + 1),
    "-1": "-1",
    "-(2**53)": str(-(2**53)),
    "1e16": "1e16",
    "1.5": "1.5",
    "1e400": "1e400",
    "string": '"abc"',
    "numeric string past the bound": f'"{MAX_GENERATION + 1}"',
    "null": "null",
    "list": f"[{MAX_GENERATION}]",
    "object": '{"value": 1}',
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "5000 digits": "9" * 5000,
}


@pytest.mark.parametrize("name", list(REFUSED), ids=lambda n: n.replace(" ", "-"))
async def test_a_generation_a_registration_must_not_carry_is_a_400_naming_it(cluster: Cluster, name: str) -> None:
    status, answer = await _register(cluster, NODE, 3)
    assert status == 201, answer
    before = _row(cluster, NODE)

    status, answer = await _register_raw(cluster, NODE, REFUSED[name])
    assert status == 400, (name, status, answer)
    named = json.dumps(answer)
    assert "generation" in named or "body" in named, answer
    if name != "5000 digits":  # not JSON the parser takes: the body is named
        assert "generation" in named, answer
    assert before <= _row(cluster, NODE) <= before + SLACK  # the controller's own publishes alone
    status, answer = await _register(cluster, NODE, 3)
    assert status == 200 and before <= answer["generation"] <= before + SLACK, answer


TAKEN = {
    "7.0": ("7.0", 7),
    "numeric string": ('"7"', 7),
    "true": ("true", 1),
    "2.0**53": (f"{float(MAX_GENERATION)!r}", MAX_GENERATION),
    "numeric string at the bound": (f'"{MAX_GENERATION}"', MAX_GENERATION),
    # a float past the bound as spelled, 2**53 as read (binary64 rounds it): what the bound sees
    "2**53 + 1 as a float": ("9007199254740993.0", MAX_GENERATION),
}


@pytest.mark.parametrize("name", list(TAKEN), ids=lambda n: n.replace(" ", "-").replace("*", ""))
async def test_a_lax_spelling_of_an_integer_counts_as_that_integer_within_the_bound(
    cluster: Cluster, name: str
) -> None:
    spelled, value = TAKEN[name]
    status, answer = await _register(cluster, NODE, 0)
    assert status == 201, answer
    before = _row(cluster, NODE)
    status, answer = await _register_raw(cluster, NODE, spelled)
    assert status == 200, (name, answer)
    expected = max(before, min(value + 1, MAX_ROW_GENERATION)) if value > before else before
    assert expected <= answer["generation"] <= expected + SLACK, (name, answer)
    taken = await _publish_and_take(cluster, NODE, 1)
    assert answer["generation"] < taken[0] <= MAX_ROW_GENERATION + SLACK, taken
