"""Wasm modules in OCI registries: references, pull, push and tags (the control plane's only OCI code).

Where it sits: the controller pulls the `source.oci` artifacts a revision names
(`Controller._pull_artifacts`), the update automation lists tags (`reconciler.updates`), and
`hotswap push` / `hotswap validate --resolve` publish and check. Nodes never talk to a registry: they
fetch binaries from the control plane by digest, as for any other source.

Layouts read: the CNCF Wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one layer
`application/wasm`), which `hotswap push`, `spin registry push` and `wash push` write, and a plain
artifact with a single `application/wasm` layer and any config (`oras push x.wasm:application/wasm`).
A pull by digest checks that the manifest bytes hash to it, and the layer that the binary hashes to
its descriptor's digest, which is then the module's digest; sizes are checked against `max_bytes`
from the descriptor before anything is downloaded.

Credentials, per registry host: a Docker-style config file (`$REGISTRY_AUTH_FILE`, else
`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: `auths.HOST.auth` = base64 user:password,
or `username`/`password`), else `HOTSWAP_OCI_USERNAME`/`HOTSWAP_OCI_PASSWORD` for every registry,
else anonymous. A registry that answers `Basic` gets them directly; one that answers `Bearer` gets a
token for them (oras-py's token negotiation). Plain HTTP for registries on 127.0.0.1, localhost and
::1 and those listed in `HOTSWAP_OCI_INSECURE` (comma-separated `host:port`), HTTPS otherwise.

oras-py (oras.container for URLs, oras.auth for the token dance) is used for what it does well; its
`Registry.do_request` is not: it retries every failure five times, sleeping 3 + 3**n seconds, so a
registry that is down or a wrong password took over two minutes to report, holding a controller pass.
Requests here are made once, with a timeout, and fail with an `OciError` that says what happened.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import requests

WASM_LAYER = "application/wasm"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = ", ".join((MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"))
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
_REF = re.compile(
    r"^(?P<registry>[A-Za-z0-9.-]+(?::\d+)?|\[[0-9a-fA-F:]+\](?::\d+)?)/"
    r"(?P<repository>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


class OciError(Exception):
    """A registry operation that failed; the message names the reference and what happened."""


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None  # of the manifest

    @classmethod
    def parse(cls, text: str) -> Reference:
        match = _REF.match(text.strip())
        if match is None:
            if "/" not in text or ("." not in text.split("/", 1)[0] and ":" not in text.split("/", 1)[0]):
                raise ValueError(f"{text!r}: expected REGISTRY/REPO:TAG@sha256:DIGEST, with the registry's host")
            raise ValueError(
                f"{text!r}: not an OCI reference (REGISTRY/REPO[:TAG][@sha256:<64 hex>], lowercase repository)"
            )
        ref = cls(match["registry"], match["repository"], match["tag"], match["digest"])
        if ref.tag is None and ref.digest is None:
            raise ValueError(f"{text!r}: name a tag or a digest (REPO:TAG or REPO@sha256:...)")
        return ref

    def __str__(self) -> str:
        return (
            f"{self.registry}/{self.repository}"
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    @property
    def target(self) -> str:
        """What the registry's manifest URL takes: the digest when known, else the tag."""
        return self.digest or self.tag or "latest"


@dataclass(frozen=True)
class Pulled:
    reference: Reference  # with the manifest's digest
    wasm: bytes = field(repr=False)
    wasm_digest: str
    layout: Literal["cncf", "plain"]
    annotations: dict[str, str]


class Credentials:
    """Username and password per registry host, from a Docker-style config and the environment."""

    def __init__(self, auths: Mapping[str, tuple[str, str]], everywhere: tuple[str, str] | None = None) -> None:
        self.auths = dict(auths)
        self.everywhere = everywhere

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if env is None else env
        auths: dict[str, tuple[str, str]] = {}
        for path in _config_files(env):
            try:
                config = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for host, entry in (config.get("auths") or {}).items():
                pair = _pair(entry)
                if pair is not None:
                    auths.setdefault(_host(host), pair)
            break
        user, password = env.get("HOTSWAP_OCI_USERNAME"), env.get("HOTSWAP_OCI_PASSWORD")
        return cls(auths, (user, password) if user and password is not None else None)

    def for_registry(self, registry: str) -> tuple[str, str] | None:
        return self.auths.get(_host(registry)) or self.everywhere


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
    if isinstance(entry.get("auth"), str):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except ValueError:
            return None
        return (user, password) if user else None
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
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
        self._session: requests.Session | None = None

    # -- requests ------------------------------------------------------------------------------------

    def _scheme(self, registry: str) -> str:
        host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry.split("]", 1)[0] + "]"
        return "http" if host in LOCAL_HOSTS or registry in self.insecure else "https"

    def _url(self, ref: Reference, path: str) -> str:
        return f"{self._scheme(ref.registry)}://{ref.registry}/v2/{ref.repository}/{path}"

    def _request(self, ref: Reference, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One request, and once more with credentials (or a token for them) when the registry asks."""
        import oras.auth
        import requests

        if self._session is None:
            self._session = requests.Session()
        headers = dict(kwargs.pop("headers", {}) or {})
        try:
            known = self._auth.get(ref.registry)
            response = self._session.request(
                method, url, headers={**headers, **_header(known)}, timeout=self.timeout, **kwargs
            )
            if response.status_code not in (401, 403):
                return response
            challenge = response.headers.get("Www-Authenticate", "")
            pair = self.credentials.for_registry(ref.registry)
            backend = "basic" if challenge.lower().startswith("basic") else "token"
            if pair is None and backend == "basic":
                return response
            auth = oras.auth.get_auth_backend(backend, self._session, self._scheme(ref.registry) == "http")
            if pair is not None:
                auth.set_basic_auth(*pair)
            retry, changed = auth.authenticate_request(response, dict(headers))
            if not changed:
                return response
            self._auth[ref.registry] = auth
            return self._session.request(method, url, headers=retry, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
            reason = errno.group(0) if errno else type(exc).__name__
            raise OciError(f"{ref}: the registry {ref.registry} is unreachable: {reason}") from None

    def _check(self, ref: Reference, response: requests.Response, what: str) -> None:
        if response.status_code in (200, 201, 202):
            return
        if response.status_code in (401, 403):
            has = self.credentials.for_registry(ref.registry) is not None
            hint = "the credentials found for it were refused" if has else "no credentials were found for it"
            raise OciError(f"{ref}: unauthorized ({response.status_code}) at {ref.registry}: {hint}")
        if response.status_code == 404:
            raise OciError(f"{ref}: not found: {ref.registry} has no {what}")
        raise OciError(f"{ref}: {what}: {ref.registry} answered {response.status_code} {response.text[:200]}")

    # -- reading -------------------------------------------------------------------------------------

    def _manifest(self, ref: Reference) -> tuple[dict[str, Any], str]:
        response = self._request(ref, "GET", self._url(ref, f"manifests/{ref.target}"), headers={"Accept": ACCEPT})
        self._check(ref, response, f"manifest {ref.target} in {ref.repository}")
        body = response.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ref.digest is not None and digest != ref.digest:
            raise OciError(f"{ref}: digest mismatch: the manifest served hashes to {digest}")
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
        manifest, digest = self._manifest(ref)
        layers = manifest.get("layers") or []
        config = (manifest.get("config") or {}).get("mediaType", "")
        kinds = [layer.get("mediaType") for layer in layers if isinstance(layer, dict)]
        if len(layers) != 1 or kinds != [WASM_LAYER]:
            raise OciError(
                f"{ref}: not a WebAssembly artifact: layers {kinds or 'none'} with config {config or 'none'} "
                f"(one {WASM_LAYER} layer expected)"
            )
        layer = layers[0]
        size, blob = layer.get("size"), layer.get("digest", "")
        if not isinstance(size, int) or size > max_bytes:
            raise OciError(f"{ref}: the module is {size} bytes, over the limit of {max_bytes}")
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", str(blob)):
            raise OciError(f"{ref}: the layer's digest {blob!r} is not a sha256 digest")
        response = self._request(ref, "GET", self._url(ref, f"blobs/{blob}"), stream=True)
        self._check(ref, response, f"blob {blob} in {ref.repository}")
        data = bytearray()
        for chunk in response.iter_content(1 << 20):
            data += chunk
            if len(data) > max_bytes:
                raise OciError(f"{ref}: the layer is longer than the {max_bytes} bytes allowed")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != blob:
            raise OciError(f"{ref}: digest mismatch: the layer {blob} hashes to {actual}")
        annotations = {str(k): str(v) for k, v in (manifest.get("annotations") or {}).items()}
        layout: Literal["cncf", "plain"] = "cncf" if config == WASM_CONFIG else "plain"
        return Pulled(ref.with_digest(digest), bytes(data), actual, layout, annotations)

    def tags(self, ref: Reference) -> list[str]:
        tags: list[str] = []
        url: str | None = self._url(ref, "tags/list")
        while url is not None:
            response = self._request(ref, "GET", url)
            self._check(ref, response, f"repository {ref.repository}")
            tags += response.json().get("tags") or []
            link = response.links.get("next", {}).get("url")
            url = f"{self._scheme(ref.registry)}://{ref.registry}{link}" if link else None
        return tags

    # -- writing -------------------------------------------------------------------------------------

    def _upload(self, ref: Reference, data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        head = self._request(ref, "HEAD", self._url(ref, f"blobs/{digest}"))
        if head.status_code != 200:
            start = self._request(ref, "POST", self._url(ref, "blobs/uploads/"))
            self._check(ref, start, "a blob upload")
            location = start.headers["Location"]
            if location.startswith("/"):
                location = f"{self._scheme(ref.registry)}://{ref.registry}{location}"
            put = self._request(
                ref,
                "PUT",
                location + ("&" if "?" in location else "?") + f"digest={digest}",
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            self._check(ref, put, "the blob upload")
        return {"digest": digest, "size": len(data)}

    def push(self, wasm: bytes, ref: Reference, *, annotations: Mapping[str, str] | None = None) -> str:
        """Publish `wasm` as a CNCF Wasm artifact under `ref.tag`; the manifest's digest."""
        if ref.tag is None:
            raise OciError(f"{ref}: push needs a tag")
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
        response = self._request(
            ref, "PUT", self._url(ref, f"manifests/{ref.tag}"), data=body, headers={"Content-Type": MANIFEST}
        )
        self._check(ref, response, "the manifest upload")
        return "sha256:" + hashlib.sha256(body).hexdigest()


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
