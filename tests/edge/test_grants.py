"""Filesystem grants bounded by the node's operator (`hotswap edge --allow-dir`), on real node
processes: tables pushed to a standalone node's admin endpoint grant directories the operator did
or did not allow; a refused grant fails that module's load, and the node serves the rest."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge import wasm
from edge.errors import LoadError
from edge.grants import GrantRoots
from hotswap.cli import main
from tests.edge.conftest import MODULES
from tests.edge.standalone import StandaloneNode, start_standalone

FILES = wasm.sha256_digest(wasm.compile_wat((MODULES / "files.wat").read_text()))
ARITH = wasm.sha256_digest(wasm.compile_wat((MODULES / "arith.wat").read_text()))
ARITH_ENTRY = {"module": "arith", "version": "0.0.0", "digest": ARITH}


def reader(name: str, host: str | Path, mode: str = "ro") -> dict[str, Any]:
    """`files.wat` (reads /data/inside.txt) as module `name`, granted `host` at /data."""
    grant = {"host": str(host), "guest": "/data", "mode": mode}
    return {"module": name, "version": "1.0.0", "digest": FILES, "capabilities": {"filesystem": [grant]}}


@dataclass
class Tree:
    """allowed/ (the node's --allow-dir) holds data/, the node's cache and a symlink to outside/."""

    base: Path
    allowed: Path
    outside: Path

    @property
    def data(self) -> Path:
        return self.allowed / "data"

    @property
    def link(self) -> Path:
        return self.allowed / "link"

    @property
    def cache(self) -> Path:
        return self.allowed / "cache"


def make_tree(base: Path) -> Tree:
    tree = Tree(base, base / "allowed", base / "outside")
    tree.data.mkdir(parents=True)
    tree.outside.mkdir()
    (tree.data / "inside.txt").write_text("A: granted")
    (tree.outside / "inside.txt").write_text("S: not granted")  # the same name: a leak would read it
    tree.link.symlink_to(tree.outside, target_is_directory=True)
    folder = base / "modules"
    folder.mkdir()
    for name in ("files", "arith"):
        (folder / f"{name}.wat").write_text((MODULES / f"{name}.wat").read_text())
    return tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    return make_tree(tmp_path_factory.mktemp("grants"))


@pytest.fixture(scope="module")
def node(tree: Tree) -> Iterator[StandaloneNode]:
    started = start_standalone(tree.base / "modules", tree.cache, "--allow-dir", str(tree.allowed))
    yield started
    started.stop()


def refused(node: StandaloneNode, entry: dict[str, Any]) -> str:
    """Apply [arith, entry]: entry's load fails, arith still answers; the failure's message."""
    status, report = node.apply([ARITH_ENTRY, entry], generation=1)
    assert status == 200, report
    name = f"{entry['module']}@1.0.0"
    assert name in report["failed"], report
    status, answer = node.execute("arith", "add", [2, 3])
    assert status == 200 and answer["result"] == 5, answer
    status, answer = node.execute(entry["module"], "read_inside")
    assert status == 404, answer  # nothing of it is served
    message: str = report["failed"][name]
    return message


def test_a_grant_of_the_host_root_is_refused_at_load(node: StandaloneNode) -> None:
    message = refused(node, reader("root", "/", mode="rw"))
    assert message == "capabilities.filesystem: host / is the root of the host filesystem, which is never granted"


def test_a_grant_outside_the_allowed_roots_is_refused_naming_the_path_and_the_roots(
    node: StandaloneNode, tree: Tree
) -> None:
    message = refused(node, reader("outside", tree.outside))
    outside, allowed = os.path.realpath(tree.outside), os.path.realpath(tree.allowed)
    assert f"host {outside}" in message
    assert f"is not under a directory this node allows (--allow-dir: {allowed})" in message


def test_a_symlink_inside_an_allowed_root_that_leads_outside_is_refused(node: StandaloneNode, tree: Tree) -> None:
    message = refused(node, reader("link", tree.link))
    assert f"(resolves to {os.path.realpath(tree.outside)})" in message
    assert "is not under a directory this node allows" in message


def test_a_directory_holding_the_node_cache_is_refused_even_under_an_allowed_root(
    node: StandaloneNode, tree: Tree
) -> None:
    message = refused(node, reader("cache", tree.allowed, mode="rw"))
    assert f"this node's cache dir {os.path.realpath(tree.cache)}, which is never granted" in message


def test_a_relative_host_is_refused(node: StandaloneNode) -> None:
    assert "is not an absolute path" in refused(node, reader("relative", "allowed/data"))


def test_a_grant_inside_an_allowed_root_is_served(node: StandaloneNode, tree: Tree) -> None:
    status, report = node.apply([ARITH_ENTRY, reader("inside", tree.data)], generation=2)
    assert status == 200 and report["failed"] == {}, report
    status, answer = node.execute("inside", "read_inside")
    assert status == 200 and answer["result"] == ord("A"), answer
    assert node.execute("arith", "add", [2, 3])[1]["result"] == 5


# -- a standalone node's own --dir -----------------------------------------------------------------


@pytest.fixture(scope="module")
def operator_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StandaloneNode, Tree]]:
    """No --allow-dir; the operator's `--dir allowed/data:/data` (read-only) for the folder's modules."""
    tree = make_tree(tmp_path_factory.mktemp("operator"))
    started = start_standalone(tree.base / "modules", tree.base / "cache", "--dir", f"{tree.data}:/data")
    yield started, tree
    started.stop()


def test_the_operators_own_dir_is_served_to_the_folder_modules(operator_node: tuple[StandaloneNode, Tree]) -> None:
    node, _ = operator_node
    status, answer = node.execute("files", "read_inside")
    assert status == 200 and answer["result"] == ord("A"), answer


def test_a_pushed_table_gets_nothing_under_the_operators_dir_nor_more_than_read_only(
    operator_node: tuple[StandaloneNode, Tree],
) -> None:
    node, tree = operator_node
    (tree.data / "sub").mkdir(exist_ok=True)
    under = refused(node, reader("under", tree.data / "sub"))
    assert "(--allow-dir: none: this node was started without --allow-dir)" in under
    writable = refused(node, reader("writable", tree.data, mode="rw"))
    assert "is not under a directory this node allows" in writable


# -- several worker processes --------------------------------------------------------------------


def test_workers_apply_the_nodes_roots(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    node = start_standalone(
        tree.base / "modules", tree.base / "cache", "--allow-dir", str(tree.allowed), "--workers", "2"
    )
    try:
        assert "is not under a directory this node allows" in refused(node, reader("outside", tree.outside))
        status, report = node.apply([ARITH_ENTRY, reader("inside", tree.data)], generation=2)
        assert status == 200 and report["failed"] == {}, report
        for _ in range(4):  # connections spread over both workers
            assert node.execute("inside", "read_inside")[1]["result"] == ord("A")
    finally:
        node.stop()


# -- the command line and the rule itself -------------------------------------------------------------


def test_the_operator_cannot_grant_the_host_root_nor_allow_a_missing_root(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["edge", "--standalone", str(tmp_path), "--dir", "/:/data"]) == 2
    assert "--dir /:/data: capabilities.filesystem: host / is the root" in capsys.readouterr().err
    assert main(["edge", "--standalone", str(tmp_path), "--allow-dir", str(tmp_path / "nope")]) == 2
    assert f"--allow-dir {tmp_path / 'nope'}: not a directory" in capsys.readouterr().err


def test_the_root_is_refused_even_when_allowed(tmp_path: Path) -> None:
    grants = GrantRoots.of(["/"], [])
    assert grants.check(tmp_path) == Path(os.path.realpath(tmp_path))
    with pytest.raises(LoadError, match="root of the host filesystem"):
        grants.check("/")


def test_a_directory_holding_the_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    key = tmp_path / "keys" / "public.pem"
    key.write_text("pem")
    grants = GrantRoots.of([tmp_path], [(key, "key file (--key)")])
    for holding in (tmp_path / "keys", tmp_path):
        with pytest.raises(LoadError, match=r"key file \(--key\)"):
            grants.check(holding)
    (tmp_path / "other").mkdir()
    assert grants.check(tmp_path / "other") == Path(os.path.realpath(tmp_path / "other"))


def test_a_sibling_with_a_longer_name_is_not_under_the_root(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv-other").mkdir()
    with pytest.raises(LoadError, match="not under a directory this node allows"):
        GrantRoots.of([tmp_path / "srv"], []).check(tmp_path / "srv-other")
