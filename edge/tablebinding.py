"""Which node a signed table is for, and under which generation: the control plane's binding.

A table's signature (`TABLE_SIGNATURE_HEADER`, `reconciler.apply.tables`) says "the control plane
published these modules". It is made once per distinct content and shared by every node that runs
that content, so it names no node and no generation. On its own it would let someone between a node
and the control plane hand the node any table the key ever signed (another region's, or the node's own
from last month) under any generation: a rollback. The binding closes that.

The control plane hashes a batch of (node id, generation, SHA-256 of the modules' canonical JSON)
triples into a Merkle tree (`Tree`) and signs its root once: a JWT with audience
`TABLE_BINDING_AUDIENCE` and claim `root` (hex). Each node's long-poll answer carries that JWT and the
path from the node's leaf to the root in `TABLE_BINDING_HEADER`, as `<jwt>;<path>`; the path is
base64url, `STEP` bytes a level (a side byte, then the sibling's hash). A leaf is the generation (8
bytes), the hash (32 bytes) and the node id, in that order: the fixed-width fields first, so no two
triples share a leaf's bytes. A node folds its own triple up the path and compares the root
with the signed one (`edge.tablecache.verify_binding`). One signature per batch, whatever its size;
a node checks one signature and a dozen hashes.

Leaves and inner nodes are hashed with different prefixes (0x00, 0x01), so no inner node can pass for
a leaf; a level with an odd count carries its last hash up unchanged. Nothing here does I/O: the
control plane imports it to build trees, the node to fold paths.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

__all__ = ["MAX_DEPTH", "STEP", "Tree", "fold", "header", "leaf", "parse"]

STEP = 33  # one level of a path: a side byte (0: the sibling is on the left, 1: on the right) and its hash
MAX_DEPTH = 40  # 2**40 leaves: a path longer than this is not one the control plane made
_LEAF, _INNER = b"\x00", b"\x01"
_LEFT, _RIGHT = 0, 1


def leaf(node_id: str, generation: int, sha256: str) -> bytes:
    """The leaf of one node's table: the generation it is given under (8 bytes), its modules' hash
    (32 bytes), then its node id; ValueError for a generation or a hash that is not one."""
    try:
        fixed = generation.to_bytes(8, "big") + bytes.fromhex(sha256)
    except OverflowError:
        raise ValueError(f"generation {generation} is not a number of 0 to 2**64 - 1") from None
    if len(fixed) != 40:
        raise ValueError("the modules' hash is not 32 bytes of hex")
    return hashlib.sha256(_LEAF + fixed + node_id.encode("utf-8", "surrogatepass")).digest()


def _parent(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_INNER + left + right).digest()


class Tree:
    """The tree over a batch's leaves (at least one): its `root`, and each leaf's `path` to it."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        if not leaves:
            raise ValueError("a binding needs at least one leaf")
        self.levels = [list(leaves)]
        level = self.levels[0]
        while len(level) > 1:
            upper = [_parent(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                upper.append(level[-1])  # carried up unchanged
            self.levels.append(upper)
            level = upper
        self.root = level[0]

    def path(self, index: int) -> bytes:
        """The path from leaf `index` (in the order given) to the root."""
        steps = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                steps.append(bytes((_RIGHT if sibling > index else _LEFT,)) + level[sibling])
            index //= 2
        return b"".join(steps)


def fold(start: bytes, path: bytes) -> bytes:
    """The root that `path` leads to from the leaf `start`; ValueError for a path that is not one."""
    if len(path) % STEP or len(path) > STEP * MAX_DEPTH:
        raise ValueError(f"a path is up to {MAX_DEPTH} steps of {STEP} bytes, not {len(path)} bytes")
    node = start
    for at in range(0, len(path), STEP):
        side, sibling = path[at], path[at + 1 : at + STEP]
        if side == _LEFT:
            node = _parent(sibling, node)
        elif side == _RIGHT:
            node = _parent(node, sibling)
        else:
            raise ValueError(f"step {at // STEP}: side byte {side} is neither 0 nor 1")
    return node


def header(token: str, path: bytes) -> str:
    """The `TABLE_BINDING_HEADER` value: the signed root and one node's path."""
    return f"{token};{base64.urlsafe_b64encode(path).rstrip(b'=').decode()}"


def parse(value: str) -> tuple[str, bytes]:
    """The JWT and the path of a `TABLE_BINDING_HEADER` value; ValueError for anything else."""
    token, sep, encoded = value.partition(";")
    if not sep or not token:
        raise ValueError("it is not '<jwt>;<path>'")
    if len(encoded) > (STEP * MAX_DEPTH * 4) // 3 + 4:
        raise ValueError(f"its path is longer than {MAX_DEPTH} steps")
    try:
        path = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
    except ValueError as exc:  # binascii.Error is one
        raise ValueError(f"its path is not base64url ({exc})") from None
    return token, path
