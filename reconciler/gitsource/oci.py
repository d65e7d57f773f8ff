"""Wasm modules in OCI registries: references, pull, push and tags (the control plane's only OCI code).

Where it sits: the controller pulls the `source.oci` artifacts a revision names
(`reconciler.apply.binaries.Binaries`), the update automation lists tags (`reconciler.apply.updates`), and
`hotswap push` / `hotswap validate --resolve` publish and check. Nodes never talk to a registry: they
fetch binaries from the control plane by digest, as for any other source. Every call blocks (the
control plane makes them in a thread) and makes each request once, with a timeout.

Layouts read: the CNCF Wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one layer
`application/wasm`), which `hotswap push`, `spin registry push` and `wash push` write, and a plain
artifact with a single `application/wasm` layer and any config (`oras push x.wasm:application/wasm`,
whose config is `application/vnd.oci.empty.v1+json` or an image config). Anything else (another layer
media type, more or fewer layers, an image index) is refused naming the media types it has. The
manifest's bytes must hash to the digest asked for (or, by tag, to the `Docker-Content-Digest` the
registry gives), the layer's bytes to its descriptor's digest, which is then the module's digest; the
layer's size is checked against `max_bytes` from the descriptor before anything is downloaded, and
again while downloading.

Credentials, per registry host: a Docker-style config file (`$REGISTRY_AUTH_FILE`, else
`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: `auths.HOST.auth` = base64 user:password,
or `username`/`password`; credential helpers are not run), else `HOTSWAP_OCI_USERNAME` /
`HOTSWAP_OCI_PASSWORD` for the registries `HOTSWAP_OCI_REGISTRY` names (comma-separated `host:port`;
never for any host, since a fleet author names the hosts), else anonymous. Credentials go to their
registry only: a tag page or an upload location on another host is refused, and requests drops the
Authorization header on a redirect to another host. An error message never quotes a body the
registry sent (a fleet could point the control plane at an internal service). A registry that answers `Basic` gets them
directly; one that answers `Bearer` gets a token for them, or an anonymous one (oras-py's token
negotiation). Plain HTTP for registries on 127.0.0.1, localhost and [::1], those passed as
`insecure` and those listed in the environment's `HOTSWAP_OCI_INSECURE` (comma-separated
`host:port`, read by every `OciClient`); HTTPS, with the system's CA bundle, otherwise.

oras-py is used for the authentication handshake (`oras.auth`: the Basic header, the Bearer token
request with the challenge's realm, service and scope). Its `Registry` is not used for the requests
themselves: `Registry.do_request` retries every failure five times, sleeping 3, 5, 11, 29 and 83
seconds, with no timeout, so a registry that is down or a wrong password takes over two minutes to
report, holding a controller pass; `get_manifest` returns parsed JSON, so the manifest's bytes cannot
be checked against a digest; `download_blob` writes to a file with no size limit; its auth reads
`~/.docker/config.json` unless given paths, and its token backend cannot answer a `Basic` challenge.
The distribution API calls (manifest GET/PUT, blob GET, HEAD and the POST-then-PUT upload, tag
listing with `Link` pagination) are made here with `requests`, which oras-py itself uses.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
import urllib.parse
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from reconciler.errors import ReconcilerError
from reconciler.spec.ocireference import DIGEST_RE, Reference

if TYPE_CHECKING:
    import requests

WASM_LAYER = "application/wasm"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
ACCEPT = ", ".join((MANIFEST, DOCKER_MANIFEST, *INDEXES))
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what the distribution registry itself accepts (a tag page too)
MAX_TAG_PAGES = 100
MAX_TAGS = 100_000
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class OciError(ReconcilerError):
    """A registry operation that failed; the message names the reference and what happened."""


@dataclass(frozen=True)
class Pulled:
    reference: Reference  # with the manifest's digest
    wasm: bytes = field(repr=False)
    wasm_digest: str
    layout: Literal["cncf", "plain"]
    annotations: dict[str, str]


class Credentials:
    """Username and password per registry host, from a Docker-style config and the environment."""

    def __init__(self, auths: Mapping[str, tuple[str, str]]) -> None:
        self.auths = dict(auths)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """The first Docker-style config that reads (`$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`,
        `$HOME/.docker/config.json`) and `HOTSWAP_OCI_USERNAME`/`HOTSWAP_OCI_PASSWORD`."""
        env = os.environ if env is None else env
        auths: dict[str, tuple[str, str]] = {}
        for path in _config_files(env):
            try:
                config = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            entries = config.get("auths") if isinstance(config, dict) else None
            for host, entry in (entries if isinstance(entries, dict) else {}).items():
                pair = _pair(entry)
                if pair is not None:
                    auths.setdefault(_host(host), pair)
            break
        user, password = env.get("HOTSWAP_OCI_USERNAME"), env.get("HOTSWAP_OCI_PASSWORD")
        if user and password is not None:  # only for the registries named: a fleet author names any host
            for host in env.get("HOTSWAP_OCI_REGISTRY", "").split(","):
                if host.strip():
                    auths.setdefault(_host(host.strip()), (user, password))
        return cls(auths)

    def for_registry(self, registry: str) -> tuple[str, str] | None:
        """The registry's own pair, or None (anonymous)."""
        return self.auths.get(_host(registry))


def _config_files(env: Mapping[str, str]) -> list[Path]:
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("DOCKER_CONFIG"):
        files.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    if env.get("HOME"):
        files.append(Path(env["HOME"]) / ".docker" / "config.json")
    return [f for f in files if f.is_file()]


def _pair(entry: Any) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError:
            return None
        return (user, password) if user else None
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str) and entry["username"]:
        return entry["username"], entry["password"]
    return None


def _host(registry: str) -> str:
    """`https://host:port/v1/` and `host:port` name the same registry."""
    return registry.removeprefix("https://").removeprefix("http://").split("/", 1)[0]


class OciClient:
    """Talks to OCI registries for the control plane and the command line (blocking; call it off the loop)."""

    def __init__(
        self, credentials: Credentials | None = None, *, insecure: Collection[str] = (), timeout: float = 30.0
    ) -> None:
        self.credentials = credentials if credentials is not None else Credentials.from_environment()
        extra = os.environ.get("HOTSWAP_OCI_INSECURE", "")
        self.insecure = {*insecure, *(h.strip() for h in extra.split(",") if h.strip())}
        self.timeout = timeout
        self._auth: dict[str, Any] = {}  # registry -> oras auth backend (tokens are kept per registry)
        self._http: requests.Session | None = None

    # -- requests ------------------------------------------------------------------------------------

    def _scheme(self, registry: str) -> str:
        host = registry.split("]", 1)[0] + "]" if registry.startswith("[") else registry.rsplit(":", 1)[0]
        return "http" if host in LOCAL_HOSTS or registry in self.insecure else "https"

    def _url(self, ref: Reference, path: str) -> str:
        return f"{self._scheme(ref.registry)}://{ref.registry}/v2/{ref.repository}/{path}"

    def _session(self) -> requests.Session:
        """One session (connections kept) whose every request, oras-py's token requests too, has the timeout."""
        if self._http is None:
            import requests

            timeout = self.timeout

            class Session(requests.Session):
                def request(self, *args: Any, **kwargs: Any) -> requests.Response:
                    kwargs.setdefault("timeout", timeout)
                    return super().request(*args, **kwargs)

            self._http = Session()
        return self._http

    def _request(self, ref: Reference, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request, and once more with credentials (or a token for them) when the registry asks."""
        import oras.auth
        import requests

        session = self._session()
        headers = dict(kwargs.pop("headers", {}) or {})
        try:
            known = self._auth.get(ref.registry)
            response = session.request(method, url, headers={**headers, **_header(known)}, **kwargs)
            if response.status_code not in (401, 403):
                return response
            challenge = response.headers.get("Www-Authenticate", "")
            pair = self.credentials.for_registry(ref.registry)
            backend = "basic" if challenge.lower().startswith("basic") else "token"
            if pair is None and backend == "basic":
                return response
            auth = oras.auth.get_auth_backend(backend, session, self._scheme(ref.registry) == "http")
            if pair is not None:
                auth.set_basic_auth(*pair)
            try:
                retry, changed = auth.authenticate_request(response, dict(headers))
            except (AttributeError, KeyError, TypeError, ValueError):  # a challenge oras-py cannot read
                return response
            if not changed:
                return response
            self._auth[ref.registry] = auth
            response.close()
            return session.request(method, url, headers=retry, **kwargs)
        except requests.RequestException as exc:
            raise self._unreachable(ref, exc) from None

    def _unreachable(self, ref: Reference, exc: Exception) -> OciError:
        import requests

        if isinstance(exc, requests.exceptions.SSLError):
            reason = "the TLS handshake failed (a plain-HTTP registry? then name it in HOTSWAP_OCI_INSECURE)"
        elif isinstance(exc, requests.Timeout):
            reason = f"no answer within {self.timeout:g}s"
        else:
            errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
            reason = errno.group(0) if errno else f"{type(exc).__name__}: {exc}"
        return OciError(f"{ref}: the registry {ref.registry} is unreachable: {reason}")

    def _check(self, ref: Reference, response: requests.Response, what: str) -> None:
        if response.status_code in (200, 201, 202):
            return
        try:
            raise self._failure(ref, response, what)
        finally:
            response.close()  # a streamed response's connection too

    def _failure(self, ref: Reference, response: requests.Response, what: str) -> OciError:
        if response.status_code in (401, 403):
            has = self.credentials.for_registry(ref.registry) is not None
            hint = (
                "the credentials found for it were refused"
                if has
                else "no credentials were found for it (a Docker config's auths, or "
                "HOTSWAP_OCI_USERNAME/PASSWORD with HOTSWAP_OCI_REGISTRY)"
            )
            return OciError(f"{ref}: unauthorized ({response.status_code}) at {ref.registry}: {hint}")
        if response.status_code == 404:
            return OciError(f"{ref}: not found: {ref.registry} has no {what}")
        # Not the body: whatever a fleet author points the control plane at must not come back in status.
        return OciError(f"{ref}: {what}: {ref.registry} answered {response.status_code}")

    def _read(self, ref: Reference, response: requests.Response, limit: int) -> bytes | None:
        """The body, or None once it grows past `limit` bytes (the rest is not read). The whole read
        has a deadline too (the timeout, plus a second per MiB of the limit beyond the first): a
        registry that trickles bytes cannot hold a controller pass."""
        import requests
        import urllib3

        deadline = time.monotonic() + self.timeout + max(limit - (1 << 20), 0) / (1 << 20)
        data = bytearray()
        try:
            with response:
                # read1: what has arrived (up to 64 KiB), so the deadline is checked as bytes come in
                while chunk := response.raw.read1(1 << 16, decode_content=True):
                    data += chunk
                    if len(data) > limit:
                        return None
                    if time.monotonic() > deadline:
                        raise OciError(f"{ref}: {ref.registry} sends too slowly: {len(data)} bytes by the deadline")
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:  # read1 raises urllib3's own
            raise self._unreachable(ref, exc) from None
        return bytes(data)

    # -- reading -------------------------------------------------------------------------------------

    def _manifest(self, ref: Reference) -> tuple[dict[str, Any], str]:
        url = self._url(ref, f"manifests/{ref.target}")
        response = self._request(ref, "GET", url, headers={"Accept": ACCEPT}, stream=True)
        what = f"manifest with digest {ref.digest}" if ref.digest else f"tag {ref.tag or 'latest'}"
        self._check(ref, response, f"{what} in {ref.repository}")
        said = response.headers.get("Docker-Content-Digest")
        body = self._read(ref, response, MAX_MANIFEST_BYTES)
        if body is None:
            raise OciError(f"{ref}: the manifest is too large: over {MAX_MANIFEST_BYTES} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = ref.digest or (said if said and said.startswith("sha256:") else None)
        if expected is not None and digest != expected:
            raise OciError(f"{ref}: digest mismatch: expected the manifest {expected}, got bytes that hash to {digest}")
        try:
            manifest = json.loads(body)
        except ValueError:
            raise OciError(f"{ref}: the manifest is not JSON") from None
        if not isinstance(manifest, dict):
            raise OciError(f"{ref}: the manifest is not a JSON object")
        return manifest, digest

    def resolve(self, ref: Reference) -> str:
        """The manifest digest `ref` names now (by tag), or `ref.digest` once the registry has it."""
        return self._manifest(ref)[1]

    def pull(self, ref: Reference, *, max_bytes: int = 50 * 1024 * 1024) -> Pulled:
        """The module `ref` names (by digest when it has one), in either layout, verified."""
        manifest, digest = self._manifest(ref)
        kind = manifest.get("mediaType")
        if kind in INDEXES or "manifests" in manifest:
            raise OciError(
                f"{ref}: not a WebAssembly artifact: an image index ({kind or 'no mediaType'}); "
                "name one manifest of it by its digest"
            )
        layers = manifest.get("layers")
        layers = layers if isinstance(layers, list) else []
        config = manifest.get("config")
        config_type = config.get("mediaType", "") if isinstance(config, dict) else ""
        kinds = [layer.get("mediaType") if isinstance(layer, dict) else None for layer in layers]
        if kinds != [WASM_LAYER]:
            raise OciError(
                f"{ref}: not a WebAssembly artifact: layers {kinds or 'none'} with config {config_type or 'none'} "
                f"(one {WASM_LAYER} layer expected)"
            )
        layer = layers[0]
        size, blob = layer.get("size"), layer.get("digest", "")
        if not isinstance(size, int) or size < 0:
            raise OciError(f"{ref}: the layer's descriptor has no size")
        if size > max_bytes:
            raise OciError(f"{ref}: too large: the module is {size} bytes, over the limit of {max_bytes}")
        if not isinstance(blob, str) or not DIGEST_RE.fullmatch(blob):
            raise OciError(f"{ref}: the layer's digest {blob!r} is not a sha256 digest")
        response = self._request(ref, "GET", self._url(ref, f"blobs/{blob}"), stream=True)
        self._check(ref, response, f"blob {blob} in {ref.repository}")
        data = self._read(ref, response, max_bytes)
        if data is None:
            raise OciError(
                f"{ref}: too large: the layer {blob} sent more than the limit of {max_bytes} bytes "
                f"(its descriptor said {size})"
            )
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != blob:
            raise OciError(f"{ref}: digest mismatch: expected the layer {blob}, got bytes that hash to {actual}")
        given = manifest.get("annotations")
        annotations = {str(k): str(v) for k, v in given.items()} if isinstance(given, dict) else {}
        layout: Literal["cncf", "plain"] = "cncf" if config_type == WASM_CONFIG else "plain"
        return Pulled(ref.with_digest(digest), data, actual, layout, annotations)

    def tags(self, ref: Reference) -> list[str]:
        """The repository's tags, in the registry's order, following `Link: <...>; rel="next"` pages."""
        tags: list[str] = []
        url: str | None = self._url(ref, "tags/list")
        for _ in range(MAX_TAG_PAGES):
            assert url is not None
            response = self._request(ref, "GET", url, stream=True)
            self._check(ref, response, f"repository {ref.repository}")
            link = response.links.get("next", {}).get("url")
            body = self._read(ref, response, MAX_MANIFEST_BYTES)
            try:
                page = json.loads(body or b"").get("tags") or []
            except (AttributeError, ValueError):
                raise OciError(f"{ref}: the tag list of {ref.repository} is not a JSON object") from None
            if not isinstance(page, list) or not all(isinstance(tag, str) for tag in page):
                raise OciError(f"{ref}: the tag list of {ref.repository} is not a list of strings")
            tags += page
            if len(tags) > MAX_TAGS:
                raise OciError(f"{ref}: {ref.repository} lists more than {MAX_TAGS} tags")
            if not link:
                return tags
            url = self._same_registry(ref, urllib.parse.urljoin(url, link), "a tag page")
        raise OciError(f"{ref}: {ref.repository}'s tag list goes on past {MAX_TAG_PAGES} pages")

    def _same_registry(self, ref: Reference, url: str, what: str) -> str:
        """`url` when it is on `ref`'s registry (same scheme and host): credentials go nowhere else."""
        parts = urllib.parse.urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != f"{self._scheme(ref.registry)}://{ref.registry}":
            raise OciError(f"{ref}: {ref.registry} sent {what} on another host ({parts.netloc}); not followed")
        return url

    # -- writing -------------------------------------------------------------------------------------

    def _upload(self, ref: Reference, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        head = self._request(ref, "HEAD", self._url(ref, f"blobs/{digest}"))
        if head.status_code != 200:
            start = self._request(ref, "POST", self._url(ref, "blobs/uploads/"))
            self._check(ref, start, "upload for blobs")
            location = start.headers.get("Location")
            if not location:
                raise OciError(f"{ref}: {ref.registry} started a blob upload without a Location")
            location = self._same_registry(
                ref, urllib.parse.urljoin(self._url(ref, "blobs/uploads/"), location), "a blob upload"
            )
            put = self._request(
                ref,
                "PUT",
                location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest}),
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            self._check(ref, put, f"upload for the blob {digest}")
        return {"digest": digest, "size": len(data)}

    def push(self, wasm: bytes, ref: Reference, *, annotations: Mapping[str, str] | None = None) -> str:
        """Publish `wasm` as a CNCF Wasm artifact under `ref.tag`; the manifest's digest."""
        if ref.tag is None:
            raise OciError(f"{ref}: push needs a tag (REGISTRY/REPO:TAG)")
        layer = {"mediaType": WASM_LAYER, **self._upload(ref, wasm)}
        created = _now()
        config = {"created": created, "architecture": "wasm", "os": "wasip1", "layerDigests": [layer["digest"]]}
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": WASM_CONFIG, **self._upload(ref, config_bytes)},
            "layers": [layer],
            "annotations": {"org.opencontainers.image.created": created, **(annotations or {})},
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        response = self._request(
            ref, "PUT", self._url(ref, f"manifests/{ref.tag}"), data=body, headers={"Content-Type": MANIFEST}
        )
        self._check(ref, response, f"upload for the manifest of tag {ref.tag}")
        said = response.headers.get("Docker-Content-Digest")
        if said and said != digest:
            raise OciError(f"{ref}: digest mismatch: pushed the manifest {digest}, the registry stored {said}")
        return digest


def _header(auth: Any) -> dict[str, str]:
    """The Authorization header an auth backend holds now: a Basic pair, or a Bearer token once it has one."""
    if auth is None:
        return {}
    if hasattr(auth, "token"):
        return {"Authorization": f"Bearer {auth.token}"} if auth.token else {}
    header: dict[str, str] = auth.get_auth_header()
    return header


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
