"""The table a node keeps on disk is served only when the control plane's key verifies it: a flipped
byte, an edited weight or generation, a missing signature or binding, another key or another node's
file are each refused with the reason; binaries kept by digest are checked on every read."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.errors import LoadError
from edge.protocol import TABLE_AUDIENCE, ModuleTable, canonical_json
from edge.tablecache import DiskBlobs, SavedTables, TableRefusedError, TrustedKey
from tests.security.pinned_plane import table_binding

DIGEST = "sha256:" + "ab" * 32
MODULES: list[dict[str, Any]] = [
    {"module": "greeter", "version": "1.0.0", "digest": DIGEST, "weight": 100, "limits": {"memoryMB": 16}}
]


def flip(text: str, at: int) -> str:
    """`text` with one bit of the character at `at` flipped."""
    return text[:at] + chr(ord(text[at]) ^ 1) + text[at + 1 :]


class Plane:
    """A signing key as the control plane holds one, and its public half as a node is given it."""

    def __init__(self) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()
        pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.trusted = TrustedKey(pem.decode(), "hotswap")

    def sign(self, modules: Any, **claims: Any) -> str:
        body = {"iss": "hotswap", "aud": TABLE_AUDIENCE, "sha256": hashlib.sha256(canonical_json(modules)).hexdigest()}
        return jwt.encode(body | claims, self.key, algorithm="EdDSA")

    def bind(self, generation: int, modules: Any = MODULES, node: str = "edge-1", **claims: Any) -> str:
        return table_binding(lambda c: jwt.encode(c, self.key, algorithm="EdDSA"), node, generation, modules, **claims)

    def keep(self, tables: SavedTables, generation: int, signed: bool = True, bound: bool = True) -> bool:
        """`tables.save` of MODULES under `generation`, as the agent saves what it applied."""
        table = ModuleTable.model_validate({"generation": generation, "modules": MODULES})
        signature = self.sign(MODULES) if signed else None
        return tables.save(table, MODULES, signature, self.bind(generation, node=tables.node_id) if bound else None)


@pytest.fixture
def plane() -> Plane:
    return Plane()


def saved_by(tmp_path: Path, plane: Plane, node: str = "edge-1") -> SavedTables:
    tables = SavedTables.under(tmp_path, node)
    tables.remember_key(plane.trusted.pem, plane.trusted.issuer)
    return tables


def test_a_signed_table_is_kept_and_served_after_a_restart(tmp_path: Path, plane: Plane) -> None:
    assert plane.keep(saved_by(tmp_path, plane), 7)
    found = SavedTables.under(tmp_path, "edge-1").load()  # a new process: the key comes from disk
    assert found is not None
    table, key = found
    assert table.generation == 7 and [e.module for e in table.modules] == ["greeter"]
    assert key == plane.trusted


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda text: text.replace('"weight":100', '"weight":0'), "not what the control plane signed"),
        (lambda text: text.replace('"greeter"', '"greetes"'), "not what the control plane signed"),
        (lambda text: flip(text, text.index("memoryMB") + 9), "not JSON|not what the control plane signed"),
        (lambda text: text[: len(text) // 2], "not JSON"),
        (lambda text: text.replace('"nodeId":"edge-1"', '"nodeId":"edge-2"'), "kept by node 'edge-2'"),
        (
            lambda text: text.replace('"generation":3', '"generation":9'),
            "not given to node 'edge-1' under generation 9",
        ),
        (lambda text: text.replace('"format":2', '"format":1'), "not a table file of format 2"),
        (lambda text: text.replace(',"binding":', ',"bindings":'), "no binding"),
        (lambda text: text.replace(";", ";AAAA", 1), "binding is malformed"),
    ],
    ids=["weight", "module", "flipped-bit", "truncated", "other-node", "generation", "format-1", "no-binding", "path"],
)
def test_a_table_changed_on_disk_is_refused(tmp_path: Path, plane: Plane, change: Any, reason: str) -> None:
    tables = saved_by(tmp_path, plane)
    plane.keep(tables, 3)
    tables.path.write_text(change(tables.path.read_text()))
    with pytest.raises(TableRefusedError, match=reason):
        tables.load()
    assert tables.set_aside() == "moved to table.refused.json"
    assert tables.refused_path.exists() and not tables.path.exists()
    assert tables.load() is None


def test_a_table_signed_by_another_key_or_for_another_use_is_refused(tmp_path: Path, plane: Plane) -> None:
    tables = saved_by(tmp_path, plane)
    stranger = Plane()
    for signature in (stranger.sign(MODULES), plane.sign(MODULES, aud="hotswap-edge")):
        body = {"format": 2, "nodeId": "edge-1", "generation": 1, "modules": MODULES, "signature": signature}
        tables.path.write_text(json.dumps(body | {"binding": plane.bind(1)}))
        with pytest.raises(TableRefusedError, match="signature does not verify"):
            tables.load()
    for binding in (stranger.bind(1), plane.bind(1, aud=TABLE_AUDIENCE), plane.bind(1, root=None)):
        body = {"format": 2, "nodeId": "edge-1", "generation": 1, "modules": MODULES, "signature": plane.sign(MODULES)}
        tables.path.write_text(json.dumps(body | {"binding": binding}))
        with pytest.raises(TableRefusedError, match="binding does not verify"):
            tables.load()


def test_a_table_bound_to_another_node_is_refused_even_under_this_nodes_name(tmp_path: Path, plane: Plane) -> None:
    """The file is this node's in every field but the binding, which the control plane made for edge-2."""
    tables = saved_by(tmp_path, plane)
    plane.keep(tables, 4)
    body = json.loads(tables.path.read_text())
    tables.path.write_text(json.dumps(body | {"binding": plane.bind(4, node="edge-2")}))
    with pytest.raises(TableRefusedError, match="not given to node 'edge-1' under generation 4"):
        tables.load()


def test_an_unsigned_table_is_not_kept_and_the_one_before_goes(tmp_path: Path, plane: Plane) -> None:
    tables = saved_by(tmp_path, plane)
    assert plane.keep(tables, 1)
    assert not plane.keep(tables, 2, signed=False)
    assert tables.load() is None  # a restart does not go back to generation 1
    assert plane.keep(tables, 3)
    assert not plane.keep(tables, 4, bound=False)
    assert tables.load() is None


def test_without_a_key_nothing_is_served(tmp_path: Path, plane: Plane) -> None:
    tables = saved_by(tmp_path, plane)
    plane.keep(tables, 1)
    tables.key_path.unlink()
    with pytest.raises(TableRefusedError, match="no control-plane key"):
        tables.load()


def test_a_pinned_key_wins_over_the_registration_answer(tmp_path: Path, plane: Plane) -> None:
    pinned = TrustedKey(plane.trusted.pem, "hotswap", pinned=True)
    tables = SavedTables.under(tmp_path, "edge-1", pinned)
    stranger = Plane()
    assert tables.remember_key(stranger.trusted.pem, "hotswap") == pinned
    stranger.keep(tables, 1)
    assert tables.load() is None  # not kept: the pinned key does not verify it
    plane.keep(tables, 2)
    found = tables.load()
    assert found is not None and found[0].generation == 2


class Upstream:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.fetched = 0

    async def fetch(self, digest: str) -> bytes:
        self.fetched += 1
        if "sha256:" + hashlib.sha256(self.data).hexdigest() != digest:
            raise LoadError("unknown blob")
        return self.data


async def test_binaries_are_kept_by_digest_and_checked_on_every_read(tmp_path: Path) -> None:
    data = b"\0asm\1\0\0\0"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    upstream = Upstream(data)
    blobs = DiskBlobs(tmp_path / "blobs", upstream)
    assert await blobs.fetch(digest) == data
    assert await DiskBlobs(tmp_path / "blobs", Upstream(b"")).fetch(digest) == data  # from disk
    blobs.path(digest).write_bytes(data + b"x")  # damaged on disk: fetched again
    assert await blobs.fetch(digest) == data and upstream.fetched == 2
    with pytest.raises(LoadError, match="not a sha256 digest"):
        blobs.path("sha256:../../etc/passwd")


def test_a_named_pipe_in_place_of_the_table_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, plane: Plane
) -> None:
    """Opening a FIFO for reading waits for a writer: a node starting would hang there, before it
    reaches the control plane."""
    tables = saved_by(tmp_path, plane)
    os.mkfifo(tables.path)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            tables.load()
        except BaseException as exc:  # the test looks at what it was
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # let the blocked open go before failing, so the test run can end
        os.close(os.open(tables.path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join()
        pytest.fail("loading the table waited on the named pipe")
    assert len(outcome) == 1 and isinstance(outcome[0], TableRefusedError)
    assert "not a regular file" in str(outcome[0])
    assert tables.set_aside() == "moved to table.refused.json" and not tables.path.exists()


def test_a_directory_in_place_of_the_table_or_of_the_refused_one_does_not_stop_the_node(
    tmp_path: Path, plane: Plane
) -> None:
    tables = saved_by(tmp_path, plane)
    tables.path.mkdir()
    with pytest.raises(TableRefusedError, match="not a regular file"):
        tables.load()
    tables.path.rmdir()
    plane.keep(tables, 1)
    tables.path.write_text("{}")  # refused (not format 2), and its place beside is a directory
    tables.refused_path.mkdir()
    with pytest.raises(TableRefusedError, match="not a table file"):
        tables.load()
    assert tables.set_aside().startswith("removed (table.refused.json")
    assert not tables.path.exists() and tables.load() is None
