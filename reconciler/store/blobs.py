"""The blob store: module binaries, content-addressed by SHA-256, brotli-compressed, verified on read.

The registry puts a module's bytes here before it records the module, and the API serves them to
edge nodes from here. Layout inside the object store (a directory or an S3 bucket):

    blobs/sha256/<hex>                             the bytes, brotli-compressed, once per content
    wasm-modules/<name>/<version>/metadata.json    the registration record, naming the digest

The spec's per-version `module.wasm` is replaced by the digest in `metadata.json`: a copy per version
would defeat de-duplication (a version bump with unchanged bytes costs one small JSON object), and
nodes fetch binaries by digest anyway. Every read decompresses and hashes the whole object before a
byte is handed out, so a corrupted object raises `BlobCorruptedError` and is never served; putting the
same bytes again repairs it.

In an S3 bucket, `presigned_url` signs a short-lived GET of a binary's stored object, for edge nodes
to fetch it without the control plane in the path. What that URL gives is the stored object as it is:
brotli-compressed and unverified, so the node decompresses it and checks the digest itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import brotli

from reconciler.store.errors import BlobCorruptedError, UnknownBlobError
from reconciler.store.objects import CHUNK, ObjectMissingError, ObjectStore, PresignedObjects, open_objects

BLOBS_PREFIX = "blobs/sha256/"
STORED_ENCODING = "br"  # the content coding of every stored binary, as HTTP names brotli
MODULES_PREFIX = "wasm-modules/"
MAX_MODULE_BYTES = 50 * 1024 * 1024
DEFAULT_QUALITY = 6  # 10 MB in ~0.5 s; quality 9 is 5x slower for <1 % smaller, 11 is 20x slower for ~10 %
LGWIN = 22  # a 4 MB window: larger ones were slower and no smaller on real modules
SPOOL_BYTES = 8 * 1024 * 1024
OUTPUT_LIMIT = 4 * CHUNK
_DIGEST = re.compile(r"\A(?:sha256:)?([0-9a-f]{64})\Z")  # \Z: `$` would take a trailing newline


def digest_hex(digest: str) -> str:
    """The 64 hex digits of `sha256:<hex>` (or of bare hex); ValueError for anything else."""
    match = _DIGEST.match(digest)
    if match is None:
        raise ValueError(f"{digest!r} is not a SHA-256 digest (sha256:<64 lowercase hex digits>)")
    return match.group(1)


@dataclass(frozen=True)
class StoredBlob:
    digest: str  # sha256:<hex>
    size: int
    compressed_size: int
    created: bool  # False when the same bytes were already stored (de-duplicated)


@dataclass
class VerifiedBlob:
    """A binary whose digest has been checked, ready to stream: `file` is positioned at the start.

    The caller closes it (it is a context manager) to free the temporary file.
    """

    digest: str
    size: int
    file: IO[bytes]

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        return iter(lambda: self.file.read(size), b"")

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> VerifiedBlob:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_blob_store(blob_url: str | None = None, data_dir: Path | None = None) -> BlobStore:
    """The store `--blob-url` names (s3://... or a directory), else `<data-dir>/blobs`."""
    if blob_url:
        return BlobStore(open_objects(blob_url))
    if data_dir is None:
        raise ValueError("a blob store needs --blob-url or --data-dir")
    return BlobStore(open_objects(str(data_dir / "blobs")))


class BlobStore:
    """Content-addressed binaries over an `ObjectStore`. Synchronous and thread-safe."""

    def __init__(
        self, objects: ObjectStore, *, quality: int = DEFAULT_QUALITY, max_size: int = MAX_MODULE_BYTES
    ) -> None:
        self.objects = objects
        self.quality = quality
        self.max_size = max_size

    def __repr__(self) -> str:
        return f"BlobStore({self.objects.description})"

    # -- binaries -------------------------------------------------------------------------------

    def put(self, data: bytes) -> StoredBlob:
        """Store bytes once per content; returns their digest and both sizes.

        Bytes already stored are not written again (`created` is False) unless the stored object
        fails verification, in which case it is replaced.
        """
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        key = BLOBS_PREFIX + digest_hex(digest)
        stored = self.objects.size(key)
        if stored is not None:
            try:
                self._decode(digest, lambda _chunk: None)
                return StoredBlob(digest, len(data), stored, created=False)
            except BlobCorruptedError:
                pass  # rewrite it below
        compressed = brotli.compress(data, quality=self.quality, lgwin=LGWIN)
        self.objects.put(key, compressed, "application/x-brotli")
        return StoredBlob(digest, len(data), len(compressed), created=True)

    def read(self, digest: str) -> bytes:
        """The verified bytes of a binary (UnknownBlobError, BlobCorruptedError)."""
        parts: list[bytes] = []
        self._decode(digest, parts.append)
        return b"".join(parts)

    def open(self, digest: str) -> VerifiedBlob:
        """A verified binary in a spooled temporary file (memory up to 8 MB, then disk), for streaming
        large modules without holding them whole. Use it as a context manager, or close it."""
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (owned by the result)
        try:
            size = self._decode(digest, spool.write)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return VerifiedBlob(digest="sha256:" + digest_hex(digest), size=size, file=spool)

    def presigned_url(self, digest: str) -> str | None:
        """A short-lived URL of the binary's stored (compressed) object, or None when this store
        cannot sign one (a directory) or is told not to (`presign=0`).

        The object is not looked up: a URL for a missing one answers 404 from S3, and the node then
        asks the control plane, whose answer names the problem.
        """
        objects = self.objects
        if not isinstance(objects, PresignedObjects) or objects.presign_seconds <= 0:
            return None
        return objects.presigned_get(BLOBS_PREFIX + digest_hex(digest))

    def exists(self, digest: str) -> bool:
        return self.objects.size(BLOBS_PREFIX + digest_hex(digest)) is not None

    def compressed_size(self, digest: str) -> int | None:
        return self.objects.size(BLOBS_PREFIX + digest_hex(digest))

    def delete(self, digest: str) -> None:
        """Remove a binary; the caller makes sure no module still names it."""
        self.objects.delete(BLOBS_PREFIX + digest_hex(digest))

    def digests(self) -> Iterator[str]:
        """Every stored binary's digest."""
        for key in self.objects.keys(BLOBS_PREFIX):
            name = key.removeprefix(BLOBS_PREFIX)
            if _DIGEST.match(name):
                yield "sha256:" + name

    def _decode(self, digest: str, sink: Callable[[bytes], object]) -> int:
        """Decompress a stored object into `sink`, hashing as it goes; returns the size.

        Raises BlobCorruptedError when the object does not decompress, is larger than any module may
        be, or hashes to something else. The caller must discard what `sink` got in that case.
        """
        expected = digest_hex(digest)
        canonical = "sha256:" + expected
        hasher = hashlib.sha256()
        decompressor = brotli.Decompressor()
        size = 0

        def take(plain: bytes) -> None:
            nonlocal size
            size += len(plain)
            if size > self.max_size:
                raise BlobCorruptedError(canonical, f"expands beyond {self.max_size} bytes")
            hasher.update(plain)
            sink(plain)

        try:
            with self.objects.chunks(BLOBS_PREFIX + expected) as chunks:
                # Output is bounded per call, so a damaged object cannot balloon in memory.
                for chunk in chunks:
                    take(decompressor.process(chunk, output_buffer_limit=OUTPUT_LIMIT))
                    while not (decompressor.can_accept_more_data() or decompressor.is_finished()):
                        take(decompressor.process(b"", output_buffer_limit=OUTPUT_LIMIT))
                while not decompressor.is_finished():  # what the decoder still holds after the input
                    plain = decompressor.process(b"", output_buffer_limit=OUTPUT_LIMIT)
                    if not plain:
                        break
                    take(plain)
        except ObjectMissingError:
            raise UnknownBlobError(canonical) from None
        except brotli.error as exc:
            raise BlobCorruptedError(canonical, f"not valid brotli data: {exc}") from None
        if not decompressor.is_finished():
            raise BlobCorruptedError(canonical, "the compressed stream is truncated")
        if hasher.hexdigest() != expected:
            raise BlobCorruptedError(canonical, f"its content hashes to sha256:{hasher.hexdigest()}")
        return size

    # -- per-version metadata -------------------------------------------------------------------

    @staticmethod
    def _metadata_key(name: str, version: str) -> str:
        return f"{MODULES_PREFIX}{name}/{version}/metadata.json"

    def write_metadata(self, name: str, version: str, document: Mapping[str, Any]) -> None:
        body = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
        self.objects.put(self._metadata_key(name, version), body, "application/json")

    def read_metadata(self, name: str, version: str) -> dict[str, Any] | None:
        try:
            with self.objects.chunks(self._metadata_key(name, version)) as chunks:
                document = json.loads(b"".join(chunks))
        except ObjectMissingError:
            return None
        return document if isinstance(document, dict) else None

    def delete_metadata(self, name: str, version: str) -> None:
        self.objects.delete(self._metadata_key(name, version))

    def versions(self) -> Iterator[tuple[str, str]]:
        """(name, version) of every metadata.json in the layout."""
        for key in self.objects.keys(MODULES_PREFIX):
            parts = key.removeprefix(MODULES_PREFIX).split("/")
            if len(parts) == 3 and parts[2] == "metadata.json":
                yield parts[0], parts[1]
