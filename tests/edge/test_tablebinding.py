"""The binding's Merkle tree: every leaf's path leads to the root, no path leads there from another
leaf, and a path that is not one the control plane could have made is refused as malformed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.tablebinding import MAX_DEPTH, STEP, Tree, fold, header, leaf, parse

SHA = "ab" * 32


def leaves(count: int) -> list[bytes]:
    return [leaf(f"edge-{i}", i + 1, SHA) for i in range(count)]


@given(st.integers(min_value=1, max_value=70))
def test_every_leaf_folds_up_its_path_to_the_root(count: int) -> None:
    nodes = leaves(count)
    tree = Tree(nodes)
    paths = [tree.path(i) for i in range(count)]
    assert [fold(node, path) for node, path in zip(nodes, paths, strict=True)] == [tree.root] * count
    assert all(len(path) <= STEP * max(1, (count - 1).bit_length()) for path in paths)


@given(st.integers(min_value=2, max_value=40), st.data())
def test_no_leaf_folds_to_the_root_along_another_leafs_path(count: int, data: st.DataObject) -> None:
    nodes = leaves(count)
    tree = Tree(nodes)
    i = data.draw(st.integers(0, count - 1))
    j = data.draw(st.integers(0, count - 1).filter(lambda j: j != i))
    assert fold(nodes[i], tree.path(j)) != tree.root


def test_a_leaf_names_the_node_the_generation_and_the_content() -> None:
    base = leaf("edge-1", 2, SHA)
    assert len({base, leaf("edge-2", 2, SHA), leaf("edge-1", 3, SHA), leaf("edge-1", 2, "cd" * 32)}) == 4
    # a batch of one: its root is its leaf, and the path is empty
    one = Tree([base])
    assert (one.root, one.path(0)) == (base, b"")
    for generation, sha in [(-1, SHA), (2**64, SHA), (1, "ab" * 31), (1, "not hex")]:
        with pytest.raises(ValueError):
            leaf("edge-1", generation, sha)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (b"\x00" * (STEP - 1), "steps of 33 bytes"),
        (b"\x00" * STEP * (MAX_DEPTH + 1), "up to 40 steps"),
        (b"\x02" + b"\x00" * (STEP - 1), "side byte 2"),
    ],
    ids=["short-step", "too-deep", "side-byte"],
)
def test_a_path_the_control_plane_could_not_have_made_is_refused(path: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fold(leaf("edge-1", 1, SHA), path)


def test_the_header_carries_the_token_and_the_path() -> None:
    path = Tree(leaves(5)).path(3)
    assert parse(header("a.b.c", path)) == ("a.b.c", path)
    for value, message in [("a.b.c", "not '<jwt>;<path>'"), (";AAAA", "not '<jwt>;<path>'"), ("t;%%", "not base64url")]:
        with pytest.raises(ValueError, match=message):
            parse(value)
    with pytest.raises(ValueError, match="longer than 40 steps"):
        parse(header("t", b"\x00" * STEP * (MAX_DEPTH + 2)))
    with pytest.raises(ValueError, match="at least one leaf"):
        Tree([])
