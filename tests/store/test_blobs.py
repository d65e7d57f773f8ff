"""The blob store behaves the same on a local directory and on a real S3 server (moto_server)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import brotli
import pytest

from reconciler.store.blobs import BLOBS_PREFIX, BlobStore, digest_hex, open_blob_store
from reconciler.store.errors import BackendError, BlobCorruptedError, StoreConfigError, UnknownBlobError
from reconciler.store.objects import LocalObjects, S3Objects, open_objects
from tests.services import S3Server

WASM_LIKE = b"\0asm\x01\0\0\0" + b"".join(b"(func $f%d (result i32) i32.const %d)" % (i, i) for i in range(3000))


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def overwrite_object(blobs: BlobStore, key: str, data: bytes) -> None:
    """Change a stored object behind the store's back, as a disk fault or an operator would."""
    objects = blobs.objects
    if isinstance(objects, LocalObjects):
        (objects.root / key).write_bytes(data)
    else:
        assert isinstance(objects, S3Objects)
        objects.client.put_object(objects.bucket, objects.prefix + key, io.BytesIO(data), len(data))


def stored_object(blobs: BlobStore, key: str) -> bytes:
    with blobs.objects.chunks(key) as chunks:
        return b"".join(chunks)


def test_bytes_come_back_verified_with_both_sizes_recorded(blobs: BlobStore) -> None:
    stored = blobs.put(WASM_LIKE)
    assert stored.digest == digest_of(WASM_LIKE)
    assert stored.created and stored.size == len(WASM_LIKE)
    assert 0 < stored.compressed_size < stored.size / 5  # repetitive text compresses well
    assert stored.compressed_size == blobs.compressed_size(stored.digest)
    assert blobs.read(stored.digest) == WASM_LIKE
    assert brotli.decompress(stored_object(blobs, BLOBS_PREFIX + digest_hex(stored.digest))) == WASM_LIKE


def test_the_same_bytes_twice_are_stored_once(blobs: BlobStore) -> None:
    first = blobs.put(WASM_LIKE)
    second = blobs.put(WASM_LIKE)
    assert not second.created
    assert (second.digest, second.size, second.compressed_size) == (first.digest, first.size, first.compressed_size)
    blobs.put(b"\0asm\x01\0\0\0other")
    assert sorted(blobs.digests()) == sorted([first.digest, digest_of(b"\0asm\x01\0\0\0other")])
    assert len(list(blobs.objects.keys(BLOBS_PREFIX))) == 2


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda good: good[:-7] + bytes(b ^ 0xFF for b in good[-7:]), "brotli|hashes to|truncated"),
        (lambda good: brotli.compress(b"\0asm\x01\0\0\0evil"), "hashes to sha256:"),
        (lambda good: good[: len(good) // 2], "truncated|brotli"),
        (lambda good: b"plain text, not brotli at all", "brotli|truncated|hashes"),
    ],
    ids=["flipped-bytes", "other-content", "truncated", "not-brotli"],
)
def test_a_corrupted_object_is_an_error_and_never_served(blobs: BlobStore, damage: object, reason: str) -> None:
    stored = blobs.put(WASM_LIKE)
    key = BLOBS_PREFIX + digest_hex(stored.digest)
    assert callable(damage)
    overwrite_object(blobs, key, damage(stored_object(blobs, key)))
    with pytest.raises(BlobCorruptedError, match=reason) as caught:
        blobs.read(stored.digest)
    assert stored.digest in str(caught.value)
    with pytest.raises(BlobCorruptedError), blobs.open(stored.digest):
        pytest.fail("a corrupted blob was opened for serving")
    # Uploading the same bytes again notices the damage and repairs the object.
    assert blobs.put(WASM_LIKE).created
    assert blobs.read(stored.digest) == WASM_LIKE


def test_an_object_that_expands_past_the_module_limit_is_corrupt(blobs: BlobStore) -> None:
    stored = blobs.put(bytes(200_000))
    small = BlobStore(blobs.objects, max_size=100_000)
    with pytest.raises(BlobCorruptedError, match="expands beyond 100000 bytes"):
        small.read(stored.digest)


def test_unknown_and_malformed_digests(blobs: BlobStore) -> None:
    missing = "sha256:" + "0" * 64
    with pytest.raises(UnknownBlobError, match=missing):
        blobs.read(missing)
    assert not blobs.exists(missing)
    assert blobs.compressed_size(missing) is None
    with pytest.raises(ValueError, match="not a SHA-256 digest"):
        blobs.read("sha256:xyz")
    assert digest_hex("b" * 64) == "b" * 64


def test_a_large_module_streams_from_a_spooled_file(blobs: BlobStore) -> None:
    data = os.urandom(3 << 20) * 4  # 12 MB, more than the 8 MB kept in memory
    stored = blobs.put(data)
    with blobs.open(stored.digest) as blob:
        assert blob.size == len(data) and blob.digest == stored.digest
        assert b"".join(blob.chunks(1 << 20)) == data


def test_delete_removes_a_binary(blobs: BlobStore) -> None:
    stored = blobs.put(WASM_LIKE)
    assert blobs.exists(stored.digest)
    blobs.delete(stored.digest)
    assert not blobs.exists(stored.digest)
    blobs.delete(stored.digest)  # deleting again is fine
    assert list(blobs.digests()) == []


def test_metadata_sits_in_the_per_version_layout(blobs: BlobStore) -> None:
    blobs.write_metadata("greeter", "1.0.0", {"id": "greeter-v1.0.0", "digest": "sha256:aa"})
    blobs.write_metadata("greeter", "1.1.0", {"id": "greeter-v1.1.0"})
    assert "wasm-modules/greeter/1.0.0/metadata.json" in set(blobs.objects.keys("wasm-modules/"))
    assert blobs.read_metadata("greeter", "1.0.0") == {"id": "greeter-v1.0.0", "digest": "sha256:aa"}
    assert sorted(blobs.versions()) == [("greeter", "1.0.0"), ("greeter", "1.1.0")]
    blobs.delete_metadata("greeter", "1.0.0")
    assert blobs.read_metadata("greeter", "1.0.0") is None
    assert list(blobs.versions()) == [("greeter", "1.1.0")]


def test_local_objects_are_written_atomically_and_tidied(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path / "blobs")
    objects.put("a/b/c", b"x")
    assert objects.size("a/b/c") == 1
    assert [p.name for p in (tmp_path / "blobs" / "a" / "b").iterdir()] == ["c"]  # no partial files left
    objects.delete("a/b/c")
    assert list((tmp_path / "blobs").iterdir()) == []
    with pytest.raises(Exception, match="bad object key"):
        objects.put("../escape", b"x")


def test_io_failures_are_backend_errors(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path / "objects")
    objects.put("a", b"x")
    with pytest.raises(BackendError, match="writing a/b"):
        objects.put("a/b", b"y")  # "a" is a file, not a folder
    (tmp_path / "objects" / "dir").mkdir()
    with pytest.raises(BackendError, match="reading dir"), objects.chunks("dir") as chunks:
        list(chunks)


def test_blob_urls_are_checked(tmp_path: Path, s3_server: S3Server) -> None:
    assert isinstance(open_blob_store(data_dir=tmp_path).objects, LocalObjects)
    assert isinstance(open_objects(f"file://{tmp_path}/x"), LocalObjects)
    for url, message in [
        ("gs://bucket", "neither s3:// nor a directory"),
        ("s3://?endpoint=x", "names no bucket"),
        ("s3://b?endpoint=x&colour=blue", "unknown option"),
        ("s3://b?endpoint=x&secure=maybe", "secure='maybe'"),
    ]:
        with pytest.raises(StoreConfigError, match=message):
            open_blob_store(url)
    with pytest.raises(ValueError, match="--blob-url or --data-dir"):
        open_blob_store()


def test_s3_keys_live_under_the_url_prefix_and_can_be_encrypted(s3_server: S3Server) -> None:
    url = s3_server.url("prefixed").replace("?", "/hotswap/prod?") + "&sse=true"
    blobs = open_blob_store(url)
    stored = blobs.put(WASM_LIKE)
    objects = blobs.objects
    assert isinstance(objects, S3Objects)
    names = [o.object_name for o in objects.client.list_objects("prefixed", recursive=True)]
    assert names == [f"hotswap/prod/{BLOBS_PREFIX}{digest_hex(stored.digest)}"]
    stat = objects.client.stat_object("prefixed", names[0])
    assert stat.metadata.get("x-amz-server-side-encryption") == "AES256"
    assert blobs.read(stored.digest) == WASM_LIKE
    assert open_blob_store(url).read(stored.digest) == WASM_LIKE  # an existing bucket is reused
