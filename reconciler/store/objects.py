"""Where the blob store's objects physically live: a local directory or an S3 bucket (MinIO, AWS, moto).

`ObjectStore` is the seam: put whole objects, read them back in chunks, ask their size, delete, list
by prefix. Keys are `/`-separated and built by `BlobStore` only. Writes are atomic (a local object
appears by rename; an S3 PUT is atomic), so a crash never leaves half an object under its key.

    open_objects("/var/lib/hotswap/blobs")
    open_objects("s3://bucket/prefix?endpoint=127.0.0.1:9000&secure=false&sse=true")
Credentials for S3 come from the URL (`access_key`, `secret_key`) or from the environment
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`).

An S3 store can also sign short-lived GET URLs for single objects (`presign=SECONDS` in the URL,
default 300, 0 for never), so edge nodes fetch binaries from the bucket instead of through the
control plane (`reconciler.api.modules.get_blob`). A local directory cannot: `PresignedObjects` is a
separate protocol, and callers ask whether a store has it.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from reconciler.store.errors import BackendError, StoreConfigError, StoreError

CHUNK = 1 << 20
# Long enough for a node to start its GET after the redirect and to absorb a few minutes of clock
# skew between the control plane and S3 (the signature carries the control plane's time); short
# enough that a leaked URL is soon worthless. It never needs to outlast one download: S3 checks the
# expiry when the request starts.
DEFAULT_PRESIGN_SECONDS = 300
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's own limit
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"})


class ObjectMissingError(StoreError):
    """No object under that key (BlobStore turns this into UnknownBlobError)."""


class ObjectStore(Protocol):
    description: str

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store `data` under `key`, replacing any object there, atomically."""
        ...

    def chunks(self, key: str) -> AbstractContextManager[Iterator[bytes]]:
        """The object's bytes in chunks; raises ObjectMissingError when there is none."""
        ...

    def size(self, key: str) -> int | None:
        """The stored size, or None when there is no such object."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing one is not an error."""
        ...

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key that starts with `prefix`."""
        ...


@runtime_checkable
class PresignedObjects(Protocol):
    """A store that can hand out a URL anyone may GET one object from, for a while (S3 only)."""

    presign_seconds: int  # 0: it may, but was told not to

    def presigned_get(self, key: str) -> str:
        """A URL that reads `key` without other credentials until `presign_seconds` have passed."""
        ...


def open_objects(url: str) -> ObjectStore:
    """An object store for `--blob-url`: `s3://...`, `file:///path`, or a plain directory path."""
    if url.startswith("s3://"):
        return S3Objects.from_url(url)
    if url.startswith("file://"):
        url = url.removeprefix("file://")
    if "://" in url:
        raise StoreConfigError(f"--blob-url: {url!r} is neither s3:// nor a directory")
    return LocalObjects(Path(url))


def _utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _failures(where: str, doing: str) -> Iterator[None]:
    """Driver and I/O failures as BackendError, naming the store and the operation."""
    from minio.error import MinioException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (MinioException, HTTPError, OSError) as exc:
        raise BackendError(f"{where}: {doing}: {exc}") from exc


class LocalObjects:
    """Objects as files under a root directory (`key` = relative path)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"bad object key {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        with _failures(self.description, f"writing {key}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(partial, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)

    @contextmanager
    def chunks(self, key: str) -> Iterator[Iterator[bytes]]:
        with _failures(self.description, f"reading {key}"):
            try:
                handle = open(self._path(key), "rb")  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                raise ObjectMissingError(f"no object {key!r} in {self.description}") from None
            with handle:
                yield iter(lambda: handle.read(CHUNK), b"")

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        path = self._path(key)
        with _failures(self.description, f"deleting {key}"):
            path.unlink(missing_ok=True)
        # Tidy empty folders up to the root, so a deleted version leaves no trace.
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def keys(self, prefix: str) -> Iterator[str]:
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and not path.name.endswith(".partial"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key


class S3Objects:
    """Objects in an S3 bucket under an optional key prefix, through the `minio` SDK.

    The bucket is created when missing. With `sse=true` objects are written with server-side
    encryption (SSE-S3); servers without a key service refuse that, so it is off by default.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        sse: bool = False,
        description: str = "",
        *,
        presign_seconds: int = DEFAULT_PRESIGN_SECONDS,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.description = description or f"s3://{bucket}/{prefix}"
        self.presign_seconds = presign_seconds
        self.clock = clock or _utc_now  # the signing time (tests set it back to get URLs that have expired)
        self._sse: Any = None
        if sse:
            from minio.sse import SseS3

            self._sse = SseS3()
        self._ensure_bucket()

    @classmethod
    def from_url(cls, url: str, *, clock: Callable[[], datetime] | None = None) -> S3Objects:
        from minio import Minio

        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "secure", "region", "access_key", "secret_key", "sse", "presign"}
        if unknown:
            raise StoreConfigError(f"--blob-url: unknown option(s) {', '.join(sorted(unknown))}")
        bucket = parts.netloc
        if not bucket:
            raise StoreConfigError(f"--blob-url: {url!r} names no bucket (s3://BUCKET?endpoint=host:port)")
        flags = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        for flag in ("secure", "sse"):
            if flag in query and query[flag].lower() not in flags:
                raise StoreConfigError(f"--blob-url: {flag}={query[flag]!r} is not true or false")
        presign = query.get("presign", str(DEFAULT_PRESIGN_SECONDS))
        if not presign.isdigit() or int(presign) > MAX_PRESIGN_SECONDS:
            raise StoreConfigError(
                f"--blob-url: presign={presign!r} is not a number of seconds from 0 (off) to {MAX_PRESIGN_SECONDS}"
            )
        endpoint = query.get("endpoint", "s3.amazonaws.com")
        secure = flags[query.get("secure", "true").lower()]
        client = Minio(
            endpoint,
            access_key=query.get("access_key", os.environ.get("AWS_ACCESS_KEY_ID")),
            secret_key=query.get("secret_key", os.environ.get("AWS_SECRET_ACCESS_KEY")),
            session_token=os.environ.get("AWS_SESSION_TOKEN"),
            secure=secure,
            region=query.get("region"),
        )
        prefix = parts.path.strip("/")
        return cls(
            client,
            bucket,
            f"{prefix}/" if prefix else "",
            sse=flags[query.get("sse", "false").lower()],
            description=f"s3://{bucket}/{prefix} at {endpoint}",
            presign_seconds=int(presign),
            clock=clock,
        )

    def _ensure_bucket(self) -> None:
        from minio.error import S3Error

        with _failures(self.description, "checking the bucket"):
            if self.client.bucket_exists(self.bucket):
                return
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with _failures(self.description, f"writing {key}"):
            self.client.put_object(
                self.bucket, self.prefix + key, io.BytesIO(data), len(data), content_type=content_type, sse=self._sse
            )

    @contextmanager
    def chunks(self, key: str) -> Iterator[Iterator[bytes]]:
        from minio.error import S3Error

        with _failures(self.description, f"reading {key}"):
            try:
                response = self.client.get_object(self.bucket, self.prefix + key)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    raise ObjectMissingError(f"no object {key!r} in {self.description}") from None
                raise
            try:
                yield response.stream(CHUNK)
            finally:
                response.close()
                response.release_conn()

    def presigned_get(self, key: str) -> str:
        # Signing is local (HMAC over the request), except that minio asks the bucket's region once
        # when the URL does not name it; `_ensure_bucket` already made that call, and minio keeps it.
        with _failures(self.description, f"signing a URL for {key}"):
            return str(
                self.client.presigned_get_object(
                    self.bucket,
                    self.prefix + key,
                    expires=timedelta(seconds=max(self.presign_seconds, 1)),
                    request_date=self.clock(),
                )
            )

    def size(self, key: str) -> int | None:
        from minio.error import S3Error

        with _failures(self.description, f"looking up {key}"):
            try:
                return int(self.client.stat_object(self.bucket, self.prefix + key).size)
            except S3Error as exc:
                if exc.code in _MISSING_CODES:
                    return None
                raise

    def delete(self, key: str) -> None:
        with _failures(self.description, f"deleting {key}"):
            self.client.remove_object(self.bucket, self.prefix + key)

    def keys(self, prefix: str) -> Iterator[str]:
        with _failures(self.description, f"listing {prefix}"):
            for item in self.client.list_objects(self.bucket, prefix=self.prefix + prefix, recursive=True):
                yield str(item.object_name).removeprefix(self.prefix)
