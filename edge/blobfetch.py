"""Module binaries for a managed node: by digest from the control plane, or from the S3 URL it
redirects to.

Where it sits: `edge.managed` builds one `ControlPlaneLink` (the control plane's address and the node's
two HTTP sessions) and hands it to both `ControlPlaneBlobs` (here: the router's blob source, behind the
disk cache `edge.tablecache.DiskBlobs`) and `edge.agent.Agent`, so the router exists before the agent.

When the control plane's blob store is S3, the node asks for the store's URL (`X-Hotswap-Blob-Direct:
br`), the control plane answers 307 to a presigned URL, and the node GETs the brotli object there
without its token, decompresses it, and checks the digest as it would the control plane's answer. A
node that cannot use that URL (S3 out of its reach, an expired signature, a clock too far off) asks
the control plane for the bytes instead, and keeps doing so for `DIRECT_PAUSE_SECONDS` before it
tries S3 again. A binary that does not hash right, or is larger than any module may be, is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from typing import Protocol

import aiohttp
import brotli

from edge.errors import LoadError
from edge.nodeapi import BLOB_DIRECT_HEADER, BLOB_ENCODING_HEADER

log = logging.getLogger("hotswap.edge.agent")

MAX_BINARY_BYTES = 50 * 1024 * 1024
MAX_COMPRESSED_BYTES = MAX_BINARY_BYTES + (1 << 20)
DIRECT_PAUSE_SECONDS = 300.0  # after the blob store could not be used, binaries come through the control plane
STORE_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
_DECODE_STEP = 4 << 20  # brotli output per call, so a hostile object cannot balloon in memory
_S3_ERROR = re.compile(rb"<(Code|Message)>([^<\r\n]{1,300})</\1>")  # no newline: no forged log lines


class BlobStoreUnusableError(Exception):
    """The presigned URL did not give the object (unreachable, refused, cut short): ask the control plane."""


class ControlPlaneLink:
    """The control plane's address and the node's two HTTP sessions to it: one with the node token
    (its API), one without (presigned blob store URLs). Built first and handed to both the agent and
    `ControlPlaneBlobs`, so the router (which needs its blobs) exists before the agent (which needs
    the router)."""

    def __init__(self, control: str, token: str | None = None) -> None:
        self.control = control.rstrip("/")
        self.token = token
        self._session: aiohttp.ClientSession | None = None
        self._store_session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
            )
        return self._session

    def store_session(self) -> aiohttp.ClientSession:
        """For presigned blob store URLs: no default headers (so no node token), and bodies kept as
        they are stored (brotli, decoded and checked by `ControlPlaneBlobs`)."""
        if self._store_session is None or self._store_session.closed:
            self._store_session = aiohttp.ClientSession(timeout=STORE_TIMEOUT, auto_decompress=False)
        return self._store_session

    async def close(self) -> None:
        for session in (self._session, self._store_session):
            if session is not None:
                await session.close()


class BlobClient(Protocol):
    """What `ControlPlaneBlobs` needs to reach the control plane: a `ControlPlaneLink` (or an `Agent`)."""

    @property
    def control(self) -> str: ...
    def session(self) -> aiohttp.ClientSession: ...
    def store_session(self) -> aiohttp.ClientSession: ...


class ControlPlaneBlobs:
    """Module binaries by digest, from the control plane or the S3 URL it redirects to; a binary that
    does not hash right, or is larger than any module may be, is refused and never returned."""

    def __init__(self, link: BlobClient) -> None:
        self.link = link
        self.direct_paused_until = 0.0  # monotonic time; before it, no X-Hotswap-Blob-Direct
        self.direct_fetches = 0  # binaries that came from the blob store's URL (for tests and logs)

    async def fetch(self, digest: str) -> bytes:
        if time.monotonic() >= self.direct_paused_until:
            try:
                return await self._from_control_plane(digest, direct=True)
            except BlobStoreUnusableError as exc:
                self.direct_paused_until = time.monotonic() + DIRECT_PAUSE_SECONDS
                log.warning(
                    "blob %s: %s; fetching binaries through the control plane for the next %.0f s",
                    digest,
                    exc,
                    DIRECT_PAUSE_SECONDS,
                )
        return await self._from_control_plane(digest, direct=False)

    async def _from_control_plane(self, digest: str, *, direct: bool) -> bytes:
        url = f"{self.link.control}/api/v1/wasm/blobs/{digest}"
        headers = {BLOB_DIRECT_HEADER: "br"} if direct else {}
        # Redirects are followed by hand below, never by aiohttp: its own following would send the
        # session's node token on to S3 whenever S3 shares the control plane's origin (one ingress).
        async with self.link.session().get(url, headers=headers, allow_redirects=False) as response:
            if direct and response.status == 307:
                location = response.headers.get("Location")
                encoding = response.headers.get(BLOB_ENCODING_HEADER)
                if not location or encoding != "br":
                    raise LoadError(
                        f"the control plane redirected blob {digest} to {location!r} with encoding {encoding!r}"
                    )
            elif response.status != 200:
                raise LoadError(f"the control plane answered {response.status} for blob {digest}")
            else:
                return _verified(digest, await _read_capped(response, MAX_BINARY_BYTES, digest))
        data = await self._from_store(location, digest)
        self.direct_fetches += 1
        return data

    async def _from_store(self, url: str, digest: str) -> bytes:
        """The stored object at a presigned URL, decompressed and checked against `digest`."""
        try:
            # The store session never held the node token, and the URL carries its own signature:
            # nothing of the node's credentials reaches S3 (nor could: S3 refuses a request that is
            # signed twice, in the URL and in an Authorization header).
            async with self.link.store_session().get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise BlobStoreUnusableError(
                        f"the blob store answered {response.status}{_s3_error(await response.content.read(4096))}"
                    )
                compressed = await _read_capped(response, MAX_COMPRESSED_BYTES, digest)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:  # ClientPayloadError: a body cut short
            raise BlobStoreUnusableError(f"the blob store could not be read: {exc!r}") from exc
        return await asyncio.to_thread(_decoded, compressed, digest)


async def _read_capped(response: aiohttp.ClientResponse, limit: int, digest: str) -> bytes:
    """The whole body, refused once it is longer than `limit` (by its length header or as it comes)."""
    if response.content_length is not None and response.content_length > limit:
        raise LoadError(f"blob {digest} is {response.content_length} bytes, over the limit of {limit}; refused")
    parts: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > limit:
            raise LoadError(f"blob {digest} is over the limit of {limit} bytes; refused")
        parts.append(chunk)
    return b"".join(parts)


def _decoded(compressed: bytes, digest: str) -> bytes:
    """Brotli-decode a stored object and check it against `digest` (in a thread: a 50 MB module
    takes a while). The same checks as the control plane's `BlobStore._decode`, which edge cannot import."""
    decompressor = brotli.Decompressor()
    parts: list[bytes] = []
    size = 0
    try:
        plain = decompressor.process(compressed, output_buffer_limit=_DECODE_STEP)
        while True:
            size += len(plain)
            if size > MAX_BINARY_BYTES:
                raise LoadError(f"blob {digest} expands beyond {MAX_BINARY_BYTES} bytes; refused")
            parts.append(plain)
            if decompressor.is_finished() or not plain:
                break
            plain = decompressor.process(b"", output_buffer_limit=_DECODE_STEP)
    except brotli.error as exc:
        raise LoadError(f"blob {digest} from the blob store is not valid brotli data ({exc}); refused") from None
    if not decompressor.is_finished():
        raise LoadError(f"blob {digest} from the blob store is truncated; refused")
    return _verified(digest, b"".join(parts))


def _verified(digest: str, data: bytes) -> bytes:
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise LoadError(f"blob {digest} arrived with digest {actual}; refused")
    return data


def _s3_error(body: bytes) -> str:
    """`: AccessDenied: Request has expired` from an S3 error document, or nothing."""
    found = dict((key.decode(), value.decode(errors="replace")) for key, value in _S3_ERROR.findall(body))
    return "".join(f": {found[key]}" for key in ("Code", "Message") if key in found)
