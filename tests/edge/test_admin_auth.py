"""A standalone node started with `--key` checks tokens on its admin table endpoint too: no token
is a 401, a valid token without role admin a 403, an admin token replaces the table. Without a key
the endpoint stays open to loopback callers only. Real node processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.api.auth import AuthOptions, TokenAuthority, load_or_create_signing_key
from tests.edge.standalone import StandaloneNode, start_standalone
from tests.edge.test_grants import ARITH_ENTRY, make_tree, reader

EDGE = "hotswap-edge"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> TokenAuthority:
    key = load_or_create_signing_key(tmp_path_factory.mktemp("auth") / "signing-key.pem")
    return TokenAuthority(AuthOptions(), key)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, authority: TokenAuthority) -> Iterator[tuple[StandaloneNode, Path]]:
    """A node with `--key allowed/keys/public.pem` and `--allow-dir allowed`."""
    tree = make_tree(tmp_path_factory.mktemp("keyed"))
    keys = tree.allowed / "keys"
    keys.mkdir()
    (keys / "public.pem").write_text(authority.public_key_pem)
    flags = ("--key", str(keys / "public.pem"), "--allow-dir", str(tree.allowed))
    node = start_standalone(tree.base / "modules", tree.base / "cache", *flags)
    yield node, tree.allowed
    node.stop()


def test_without_a_token_the_table_is_refused(keyed: tuple[StandaloneNode, Path]) -> None:
    node, _ = keyed
    status, body = node.apply([], generation=7)
    assert status == 401 and body["error"] == "unauthorized", body
    assert node.execute("arith", "add", [1, 2])[0] == 401  # execute needs a token as well
    assert node.request("GET", "/health", None)[1]["generation"] != 7  # nothing was applied


def test_a_token_from_another_key_is_refused(keyed: tuple[StandaloneNode, Path], tmp_path: Path) -> None:
    node, _ = keyed
    other = TokenAuthority(AuthOptions(), load_or_create_signing_key(tmp_path / "other.pem"))
    status, body = node.apply([], generation=7, token=other.mint("mallory", ["admin"], audience=EDGE))
    assert status == 401, body


def test_a_developer_token_is_forbidden(keyed: tuple[StandaloneNode, Path], authority: TokenAuthority) -> None:
    node, _ = keyed
    developer = authority.mint("bob", ["developer"], audience=EDGE)
    status, body = node.apply([], generation=7, token=developer)
    assert status == 403 and body["error"] == "forbidden", body
    status, answer = node.execute("arith", "add", [1, 2], token=developer)
    assert status == 200 and answer["result"] == 3  # the same token still executes
    assert node.request("GET", "/health", None)[1]["generation"] != 7


def test_an_admin_token_applies_the_table(keyed: tuple[StandaloneNode, Path], authority: TokenAuthority) -> None:
    node, allowed = keyed
    admin = authority.mint("alice", ["admin"], audience=EDGE)
    status, report = node.apply([ARITH_ENTRY, reader("inside", allowed / "data")], generation=8, token=admin)
    assert status == 200 and report["failed"] == {} and report["generation"] == 8, report
    status, answer = node.execute("inside", "read_inside", token=admin)
    assert status == 200 and answer["result"] == ord("A"), answer


def test_a_grant_holding_the_key_file_is_refused_even_under_an_allowed_root(
    keyed: tuple[StandaloneNode, Path], authority: TokenAuthority
) -> None:
    node, allowed = keyed
    admin = authority.mint("alice", ["admin"], audience=EDGE)
    status, report = node.apply([ARITH_ENTRY, reader("keys", allowed / "keys")], generation=9, token=admin)
    assert status == 200, report
    assert "key file (--key)" in report["failed"]["keys@1.0.0"], report
    assert node.execute("arith", "add", [1, 2], token=admin)[1]["result"] == 3


def test_without_a_key_the_table_needs_no_token_on_loopback(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    node = start_standalone(tree.base / "modules", tree.base / "cache")
    try:
        status, report = node.apply([ARITH_ENTRY], generation=3)
        assert status == 200 and report["generation"] == 3, report
    finally:
        node.stop()
