"""Module tables as the control plane publishes them: converted and encoded once per distinct content.

Where it sits: the executor (`reconciler.apply.controller.Controller.apply`) turns the planner's
`AssignmentEntry` rows into wire `ModuleEntry` rows through `WireEntries`, which converts each
distinct row once and hands the same object out again (a row's limits, capabilities, health check and
smoke calls are `edge.protocol`'s types, read from Git: the entry holds those very objects);
`NodeHub.publish` asks `TableEncoder` for the table's `EncodedTable`: the JSON of its `modules`
(`edge.protocol.canonical_json`), the value the state store keeps, and the control plane's signature
over those bytes. The nodes of a region that run the same table share one encoding; a node's
long-poll answer is that encoding with the node's generation and trace context around it
(`EncodedTable.answer`), so no table is dumped per node.

Both caches are keyed by object identity (the planner builds every node's rows from the same spec
objects of one revision, and `WireEntries` hands out the same rows), and every cached value holds the
objects its key names, so an id cannot be reused while its key is cached. A miss only costs a
conversion. Both are bounded; the least recently used entry goes first.

Signatures: a JWT signed with the control plane's token key (`TokenAuthority.sign`), audience
`edge.protocol.TABLE_AUDIENCE`, claim `sha256` = the hex SHA-256 of the modules' bytes, no expiry.
It says "the control plane published this content", not to which node or when: nodes that share a
table share its signature, and one signature per distinct table is all a fleet-wide switch costs.
What binds a table to its node and generation is a second signature, one per batch of tables
(`TableEncoder.bind`, `edge.tablebinding`): the root of a Merkle tree over the batch's (node id,
generation, SHA-256) triples, audience `edge.protocol.TABLE_BINDING_AUDIENCE`; each node's answer
carries it with the node's path to the root. A registration that carries a nonce is answered a third
(`TableEncoder.floor`, audience `edge.protocol.GENERATION_FLOOR_AUDIENCE`): the node id, the nonce and
the generation its tables are numbered from, so that a pinned node, even one with no table yet, takes
no table of its own older than that.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from edge import tablebinding
from edge.protocol import (
    GENERATION_FLOOR_AUDIENCE,
    TABLE_AUDIENCE,
    TABLE_BINDING_AUDIENCE,
    ModuleEntry,
    canonical_json,
)
from reconciler.planner import AssignmentEntry
from reconciler.store.records import JsonObject

Signer = Callable[[dict[str, Any]], str]  # claims -> a compact JWS (`TokenAuthority.sign`)
ENTRY_CACHE = 65536
TABLE_CACHE = 4096

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


# -- the planner's rows and the wire's -------------------------------------------------------------


def to_wire(entry: AssignmentEntry) -> ModuleEntry:
    """The planner's row as a table entry: its fields are the entry's, its limits, capabilities,
    health check and smoke calls the same objects (instances of the wire's types pass unvalidated)."""
    return ModuleEntry.model_validate(entry, from_attributes=True)


def from_wire(entry: ModuleEntry) -> AssignmentEntry:
    """A table entry (a stored table's, read back) as the planner's row, holding the entry's objects."""
    return AssignmentEntry(**entry.__dict__)


_EntryKey = tuple[str, str, str, int, str | None, tuple[str, ...], int, int, int, tuple[int, ...]]


class WireEntries:
    """`to_wire`, once per distinct row: the same planner row (same spec objects) gives the same object."""

    def __init__(self, size: int = ENTRY_CACHE) -> None:
        self.size = size
        self._cache: _Lru[_EntryKey, tuple[AssignmentEntry, ModuleEntry]] = _Lru(size)
        # id(row) -> (row, its entry): the planner hands the nodes of a region the same row objects,
        # so a 5,000-node pass's 50,000 rows are a few hundred objects; looked up by identity first,
        # they cost a dict lookup each, not a key of ten fields: 8 ms a 5,000-node pass, not 32 ms
        self._by_row: dict[int, tuple[AssignmentEntry, ModuleEntry]] = {}

    def entry(self, row: AssignmentEntry) -> ModuleEntry:
        known = self._by_row.get(id(row))
        if known is not None and known[0] is row:
            return known[1]
        wire = self._by_content(row)
        if len(self._by_row) >= self.size:
            self._by_row.clear()
        self._by_row[id(row)] = (row, wire)  # the row, kept, keeps its id its own
        return wire

    def _by_content(self, row: AssignmentEntry) -> ModuleEntry:
        key = (
            row.module,
            row.version,
            row.digest,
            row.weight,
            row.sticky,
            row.argv,
            id(row.limits),
            id(row.capabilities),
            id(row.health_check),
            tuple(map(id, row.smoke)),
        )
        hit = self._cache.get(key)
        if hit is not None:
            return hit[1]
        wire = to_wire(row)
        self._cache.put(key, (row, wire))  # the row keeps the objects whose ids make the key alive
        return wire

    def table(self, rows: Sequence[AssignmentEntry]) -> tuple[ModuleEntry, ...]:
        return tuple(self.entry(row) for row in rows)


# -- encodings -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EncodedTable:
    """One distinct table content, encoded once; every node that runs it shares this object."""

    entries: tuple[ModuleEntry, ...]
    modules_json: bytes  # canonical_json of the entries as the wire has them: what is signed
    assignment: JsonObject  # what the state store keeps for each node that has it
    sha256: str
    signature: str | None

    def answer(self, generation: int, traceparents: Mapping[str, str]) -> bytes:
        """A node's long-poll answer: a `ModuleTable` in JSON, without dumping a model."""
        traces = json.dumps(dict(traceparents), sort_keys=True, separators=(",", ":")).encode()
        return b'{"generation":%d,"modules":%s,"traceparents":%s}' % (generation, self.modules_json, traces)


class TableEncoder:
    """`EncodedTable`s by content, each made (and signed) once."""

    def __init__(
        self,
        signer: Signer | None = None,
        issuer: str | None = None,
        *,
        size: int = TABLE_CACHE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.issuer = issuer
        self.clock = clock
        self.encoded = 0  # tables encoded (misses), for tests and benches
        self._cache: _Lru[tuple[int, ...], EncodedTable] = _Lru(size)
        # Signatures by the SHA-256 of the bytes: tables parsed from store rows (a follower replica's, a
        # restart's) are new objects each, but the nodes of a region share their content, so each
        # distinct table is signed once however many nodes and replicas read it.
        self._signatures: _Lru[str, str] = _Lru(size)
        self.signed = 0  # signatures made (misses), for tests and benches
        self.bound = 0  # binding signatures made (one a batch), for tests and benches

    def encode(self, entries: tuple[ModuleEntry, ...]) -> EncodedTable:
        key = tuple(map(id, entries))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        rows = [e.model_dump(mode="json", by_alias=True) for e in entries]
        data = canonical_json(rows)
        sha = hashlib.sha256(data).hexdigest()
        signature = None
        if self.signer is not None:
            signature = self._signatures.get(sha)
            if signature is None:
                claims: dict[str, Any] = {"aud": TABLE_AUDIENCE, "sha256": sha, "iat": int(self.clock())}
                if self.issuer:
                    claims["iss"] = self.issuer
                signature = self.signer(claims)
                self._signatures.put(sha, signature)
                self.signed += 1
        table = EncodedTable(entries, data, {"modules": rows}, sha, signature)
        self._cache.put(key, table)  # the table holds its entries: their ids stay theirs
        self.encoded += 1
        return table

    def bind(self, tables: Sequence[tuple[str, int, str]]) -> tuple[str, tablebinding.Tree] | None:
        """The signed root over (node id, generation, SHA-256 of its modules) for each table, and the
        tree, whose `path(i)` is the i-th table's (`tablebinding.header` makes the header value);
        None when tables are not signed."""
        if self.signer is None or not tables:
            return None
        tree = tablebinding.Tree([tablebinding.leaf(*t) for t in tables])
        claims: dict[str, Any] = {"aud": TABLE_BINDING_AUDIENCE, "root": tree.root.hex(), "iat": int(self.clock())}
        if self.issuer:
            claims["iss"] = self.issuer
        self.bound += 1
        return self.signer(claims), tree

    def floor(self, node_id: str, nonce: str, generation: int) -> str | None:
        """The signed answer to a registration's `nonce`: node `node_id`'s tables are numbered from
        `generation` now (`edge.nodeapi.RegistrationAnswer.floor`); None when tables are not signed."""
        if self.signer is None:
            return None
        claims: dict[str, Any] = {
            "aud": GENERATION_FLOOR_AUDIENCE,
            "sub": node_id,
            "nonce": nonce,
            "generation": generation,
            "iat": int(self.clock()),
        }
        if self.issuer:
            claims["iss"] = self.issuer
        return self.signer(claims)
