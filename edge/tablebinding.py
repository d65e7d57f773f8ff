"""Which node a signed table is for, and under which generation: the control plane's binding.

A table's signature (`TABLE_SIGNATURE_HEADER`, `reconciler.apply.tables`) says "the control plane
published these modules". It is made once per distinct content and shared by every node that runs
that content, so it names no node and no generation. On its own it would let someone between a node
and the control plane hand the node any table the key ever signed (another region's, or the node's own
from last month) under any generation: a rollback. The binding closes that.

The control plane hashes a batch of (node id, generation, SHA-256 of the modules' canonical JSON)
triples into a Merkle tree and signs its root once: a JWT with audience `TABLE_BINDING_AUDIENCE` and
claim `root` (hex). Each node's long-poll answer carries that JWT and the path from the node's leaf to
the root in `TABLE_BINDING_HEADER`, as `<jwt>;<path>`; the path is base64url, `STEP` bytes a level (a
side byte, then the sibling's hash). A node folds its own triple up the path and compares the root
with the signed one (`edge.tablecache.verify_binding`). One signature per batch, whatever its size;
a node checks one signature and a dozen hashes.

Leaves and inner nodes are hashed with different prefixes (0x00, 0x01), so no inner node can pass for
a leaf; a level with an odd count carries its last hash up unchanged. Nothing here does I/O: the
control plane imports it to build trees, the node to fold paths.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence

from edge.protocol import canonical_json

__all__ = ["MAX_DEPTH", "STEP", "fold", "header", "leaf", "parse", "tree"]

STEP = 33  # one level of a path: a side byte (0: the sibling is on the left, 1: on the right) and its hash
MAX_DEPTH = 40  # 2**40 leaves: a path longer than this is not one the control plane made
_LEAF, _INNER = b"\x00", b"\x01"
_LEFT, _RIGHT = 0, 1


def leaf(node_id: str, generation: int, sha256: str) -> bytes:
    """The leaf of one node's table: its id, the generation it is given under, and its modules' hash."""
    return hashlib.sha256(_LEAF + canonical_json([node_id, generation, sha256])).digest()


def _parent(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_INNER + left + right).digest()


def tree(leaves: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
    """The root over `leaves` (at least one) and each leaf's path to it, in the order given."""
    if not leaves:
        raise ValueError("a binding needs at least one leaf")
    paths = [bytearray() for _ in leaves]
    level = list(leaves)
    under = [[i] for i in range(len(leaves))]  # the leaves below each hash of the level
    while len(level) > 1:
        upper: list[bytes] = []
        upper_under: list[list[int]] = []
        for i in range(0, len(level) - 1, 2):
            left, right = level[i], level[i + 1]
            for j in under[i]:
                paths[j] += bytes((_RIGHT,)) + right
            for j in under[i + 1]:
                paths[j] += bytes((_LEFT,)) + left
            upper.append(_parent(left, right))
            upper_under.append(under[i] + under[i + 1])
        if len(level) % 2:
            upper.append(level[-1])
            upper_under.append(under[-1])
        level, under = upper, upper_under
    return level[0], [bytes(p) for p in paths]


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
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"its path is not base64url ({exc})") from None
    return token, path
