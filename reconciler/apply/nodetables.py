"""The module table each node holds, as the node hub keeps it: the table, which module versions it
(or the one before it) gave the node, and the bytes that answer the node's long-poll.

Where it sits: inside `reconciler.apply.nodes.NodeHub`, which builds one `NodeTables` over its
`reconciler.apply.tables.TableEncoder` and sets a node's table here when it publishes one or reads a
node's row (its own, or one another replica wrote). The hub's heartbeat counts a node's metrics only
for the versions in `assigned` (a report is a claim); its long-poll answers come from `answer`, and
their binding to the node and generation from `binding`: the first answer after tables changed binds
every node whose table changed since its last binding, in one batch under one signature
(`TableEncoder.bind`), so a fleet-wide publish costs one binding signature however many nodes it has.
"""

from __future__ import annotations

import orjson

from edge.protocol import ModuleEntry, ModuleTable
from edge.tablebinding import Tree, header
from reconciler.apply.tables import EncodedTable, TableEncoder
from reconciler.store.records import JsonObject, NodeRecord

__all__ = ["ENTRY_CACHE", "NodeTables"]

ENTRY_CACHE = 4096  # distinct stored table rows kept parsed (a few per module version in use)


class NodeTables:
    """Each node's current table (`by_node`) and the (module, version) pairs it may report on
    (`assigned`); tables are encoded by `encoder`, once per distinct content."""

    def __init__(self, encoder: TableEncoder) -> None:
        self.encoder = encoder
        self.by_node: dict[str, ModuleTable] = {}
        # (module, version) a node was given in its current table or the one before (whose last
        # requests it may still be reporting): the only metrics of its that count (a report is a claim)
        self.assigned: dict[str, frozenset[tuple[str, str]]] = {}
        self._encoded: dict[str, tuple[ModuleTable, EncodedTable]] = {}  # node -> the table and its bytes
        self._entries: dict[bytes, ModuleEntry] = {}  # a stored table row (canonical JSON) -> its entry
        self._tables: dict[int, tuple[JsonObject, tuple[ModuleEntry, ...]]] = {}  # a stored table, parsed
        # node -> the table bound, and its binding: the header value, or the signed root, the tree and the
        # node's leaf, from which its path is made when the node is first answered
        self._bindings: dict[str, tuple[ModuleTable, str | tuple[str, Tree, int]]] = {}
        self._unbound: set[str] = set()  # nodes whose table changed since it was last bound

    def stored(self, node: NodeRecord) -> None:
        """The node's table as its row holds it. Rows read together that hold the same table share one
        object for it (reconciler.store.nodes), which is parsed once."""
        assignment = node.assignment
        held = self._tables.get(id(assignment))
        if held is not None and held[0] is assignment:
            modules = held[1]
        else:
            modules = self._parsed(assignment.get("modules", []) if assignment else [])
            if len(self._tables) >= ENTRY_CACHE:
                self._tables.clear()
            self._tables[id(assignment)] = (assignment, modules)  # held: its id is not another's meanwhile
        self.set(node.id, ModuleTable(generation=node.generation, modules=modules))

    def _parsed(self, rows: list[JsonObject]) -> tuple[ModuleEntry, ...]:
        """A stored table's entries, each distinct row validated once: a replica that reads the rows
        another one wrote (thousands of nodes, a few distinct tables) shares the entry objects, so
        `TableEncoder` also encodes each distinct table once for the long-polls it answers."""
        out = []
        for row in rows:
            key = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
            entry = self._entries.get(key)
            if entry is None:
                entry = ModuleEntry.model_validate(row)
                if len(self._entries) >= ENTRY_CACHE:
                    self._entries.clear()  # a new revision's rows replace the old ones' anyway
                self._entries[key] = entry
            out.append(entry)
        return tuple(out)

    def set(self, node_id: str, table: ModuleTable, encoded: EncodedTable | None = None) -> None:
        """The node's table from now on (`encoded`: its encoding, when the hub just published it)."""
        before = self.by_node.get(node_id)
        self.assigned[node_id] = frozenset(
            (e.module, e.version) for e in (*table.modules, *(before.modules if before else ()))
        )
        self.by_node[node_id] = table
        self._unbound.add(node_id)
        if encoded is not None:
            self._encoded[node_id] = (table, encoded)

    def forget(self, node_id: str) -> None:
        self.by_node.pop(node_id, None)
        self._encoded.pop(node_id, None)
        self.assigned.pop(node_id, None)
        self._bindings.pop(node_id, None)
        self._unbound.discard(node_id)

    def answer(self, node_id: str, table: ModuleTable) -> tuple[bytes, str | None]:
        """The long-poll answer for `table` (JSON bytes) and the control plane's signature of its
        modules: the shared encoding when `table` is the one the hub published, encoded here otherwise
        (a table read from the store, or from another replica)."""
        encoded = self._encoding(node_id, table)
        return encoded.answer(table.generation, table.traceparents), encoded.signature

    def _encoding(self, node_id: str, table: ModuleTable) -> EncodedTable:
        published = self._encoded.get(node_id)
        if published is None or published[0] is not table:
            published = (table, self.encoder.encode(table.modules))
            self._encoded[node_id] = published
        return published[1]

    def binding(self, node_id: str, table: ModuleTable) -> str | None:
        """The `TABLE_BINDING_HEADER` value that binds `table` to this node and its generation; None
        when tables are not signed. Binds, in the same batch, every node whose table changed since."""
        if self.encoder.signer is None:
            return None
        bound = self._bindings.get(node_id)
        if bound is None or bound[0] is not table:
            tables = {n: self.by_node[n] for n in self._unbound if n in self.by_node}
            self._unbound.clear()
            tables[node_id] = table  # the node's current table, unless the caller held an older one
            batch = list(tables.items())
            signed = self.encoder.bind([(n, t.generation, self._encoding(n, t).sha256) for n, t in batch])
            if signed is None:
                return None
            token, tree = signed
            for i, (n, t) in enumerate(batch):
                self._bindings[n] = (t, (token, tree, i))
            bound = self._bindings[node_id]
        value = bound[1]
        if not isinstance(value, str):
            token, tree, i = value
            value = header(token, tree.path(i))
            self._bindings[node_id] = (table, value)
        return value
