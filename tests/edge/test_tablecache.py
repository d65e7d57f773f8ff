"""The table a node keeps on disk is served only when the control plane's key verifies it: a flipped
byte, an edited weight, a missing signature, another key or another node's file are each refused
with the reason; binaries kept by digest are checked on every read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.errors import LoadError
from edge.protocol import TABLE_AUDIENCE, canonical_json
from edge.tablecache import DiskBlobs, SavedTables, TableRefusedError, TrustedKey

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


@pytest.fixture
def plane() -> Plane:
    return Plane()


def saved_by(tmp_path: Path, plane: Plane, node: str = "edge-1") -> SavedTables:
    tables = SavedTables.under(tmp_path, node)
    tables.remember_key(plane.trusted.pem, plane.trusted.issuer)
    return tables


def test_a_signed_table_is_kept_and_served_after_a_restart(tmp_path: Path, plane: Plane) -> None:
    assert saved_by(tmp_path, plane).save(7, MODULES, plane.sign(MODULES))
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
    ],
    ids=["weight", "module", "flipped-bit", "truncated", "other-node"],
)
def test_a_table_changed_on_disk_is_refused(tmp_path: Path, plane: Plane, change: Any, reason: str) -> None:
    tables = saved_by(tmp_path, plane)
    tables.save(3, MODULES, plane.sign(MODULES))
    tables.path.write_text(change(tables.path.read_text()))
    with pytest.raises(TableRefusedError, match=reason):
        tables.load()
    assert tables.set_aside().exists() and not tables.path.exists()
    assert tables.load() is None


def test_a_table_signed_by_another_key_or_for_another_use_is_refused(tmp_path: Path, plane: Plane) -> None:
    tables = saved_by(tmp_path, plane)
    stranger = Plane()
    for signature in (stranger.sign(MODULES), plane.sign(MODULES, aud="hotswap-edge")):
        body = {"format": 1, "nodeId": "edge-1", "generation": 1, "modules": MODULES, "signature": signature}
        tables.path.write_text(json.dumps(body))
        with pytest.raises(TableRefusedError, match="signature does not verify"):
            tables.load()


def test_an_unsigned_table_is_not_kept_and_the_one_before_goes(tmp_path: Path, plane: Plane) -> None:
    tables = saved_by(tmp_path, plane)
    assert tables.save(1, MODULES, plane.sign(MODULES))
    assert not tables.save(2, MODULES, None)
    assert tables.load() is None  # a restart does not go back to generation 1


def test_without_a_key_nothing_is_served(tmp_path: Path, plane: Plane) -> None:
    tables = saved_by(tmp_path, plane)
    tables.save(1, MODULES, plane.sign(MODULES))
    tables.key_path.unlink()
    with pytest.raises(TableRefusedError, match="no control-plane key"):
        tables.load()


def test_a_pinned_key_wins_over_the_registration_answer(tmp_path: Path, plane: Plane) -> None:
    pinned = TrustedKey(plane.trusted.pem, "hotswap", pinned=True)
    tables = SavedTables.under(tmp_path, "edge-1", pinned)
    stranger = Plane()
    assert tables.remember_key(stranger.trusted.pem, "hotswap") == pinned
    tables.save(1, MODULES, stranger.sign(MODULES))
    assert tables.load() is None  # not kept: the pinned key does not verify it
    tables.save(2, MODULES, plane.sign(MODULES))
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
