"""reconciler.gitsource.oci against a real registry: Debian's docker-registry on 127.0.0.1 (tests/services.py),
anonymous and with basic auth.

Pushes and pulls both layouts (the CNCF Wasm artifact that `hotswap push` writes and a plain
single-layer one pushed by hand through the distribution API), checks what is refused and how it
is worded (other media types, a missing tag or digest, a corrupted manifest or layer, a size over
the limit, a registry that is down, missing or wrong credentials), and where credentials come from."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge.wat import compile_wat
from reconciler.gitsource.oci import Credentials, OciClient, OciError, Pulled
from reconciler.spec.ocireference import Reference
from tests.services import OciRegistry, free_port

ADD = '(module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add){extra})'
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DIGEST = "sha256:" + "ab" * 32


def wasm(tag: str = "") -> bytes:
    """The add module; `tag` adds an export so that its bytes (and blob) are this test's own."""
    return compile_wat(ADD.format(extra=f' (func (export "t{tag}"))' if tag else ""))


def unique() -> str:
    return uuid.uuid4().hex[:12]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ref(registry: OciRegistry, repository: str, tag: str | None = "1.0.0", digest: str | None = None) -> Reference:
    return Reference(registry.host, repository, tag, digest)


def anonymous() -> OciClient:
    return OciClient(Credentials.from_environment({}))


# -- the distribution API by hand (what another tool would have pushed) ----------------------------


def api(
    registry: OciRegistry, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"{registry.url}{path}", data=data, method=method, headers=headers or {})
    if registry.username is not None:
        pair = f"{registry.username}:{registry.password}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def put_blob(registry: OciRegistry, repository: str, data: bytes) -> dict[str, Any]:
    status, headers, _ = api(registry, "POST", f"/v2/{repository}/blobs/uploads/")
    assert status == 202, status
    location = headers["Location"]
    location = location if location.startswith("http") else f"{registry.url}{location}"
    separator = "&" if "?" in location else "?"
    request = urllib.request.Request(
        f"{location}{separator}digest={sha(data)}",
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    return {"digest": sha(data), "size": len(data)}


def put_manifest(registry: OciRegistry, repository: str, tag: str, manifest: dict[str, Any]) -> str:
    body = json.dumps(manifest).encode()
    status, headers, text = api(
        registry, "PUT", f"/v2/{repository}/manifests/{tag}", body, {"Content-Type": manifest["mediaType"]}
    )
    assert status == 201, text
    assert headers["Docker-Content-Digest"] == sha(body)
    return sha(body)


def push_by_hand(
    registry: OciRegistry,
    repository: str,
    tag: str,
    layers: list[tuple[str, bytes]],
    config: tuple[str, bytes] = (EMPTY_CONFIG, b"{}"),
    annotations: dict[str, str] | None = None,
    sizes: list[int] | None = None,
) -> str:
    """A single-manifest artifact with these (media type, bytes) layers; `sizes` overrides the
    descriptors' sizes (a manifest that lies about them)."""
    descriptors = [{"mediaType": kind, **put_blob(registry, repository, data)} for kind, data in layers]
    for descriptor, size in zip(descriptors, sizes or [], strict=False):
        descriptor["size"] = size
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": config[0], **put_blob(registry, repository, config[1])},
        "layers": descriptors,
    }
    if annotations:
        manifest["annotations"] = annotations
    return put_manifest(registry, repository, tag, manifest)


def blob_file(registry: OciRegistry, digest: str) -> Path:
    """Where the registry's filesystem storage keeps a blob (manifests are blobs too)."""
    assert registry.storage is not None
    hexdigest = digest.removeprefix("sha256:")
    path = registry.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    assert path.is_file(), path
    return path


def corrupt(path: Path, old: bytes, new: bytes) -> None:
    """Change bytes in place, keeping the length (the registry serves the file as it is)."""
    data = path.read_bytes()
    assert old in data and len(old) == len(new)
    path.write_bytes(data.replace(old, new, 1))


# -- references ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:5000/team/greeter:1.0.0",
        f"127.0.0.1:5000/team/greeter@{DIGEST}",
        f"127.0.0.1:5000/team/greeter:v1.2.3-rc.1@{DIGEST}",
        "localhost:5000/greeter:latest",
        "registry.example.com/org/sub/calc:2",
        "registry.example.com:443/a.b_c-d/e__f:X_y.z-1",
        "[::1]:5000/calc:1.0.0",
    ],
)
def test_a_reference_round_trips(text: str) -> None:
    parsed = Reference.parse(text)
    assert str(parsed) == text
    assert Reference.parse(str(parsed)) == parsed


def test_a_reference_has_its_parts() -> None:
    parsed = Reference.parse(f"127.0.0.1:5000/team/greeter:1.0.0@{DIGEST}")
    assert parsed == Reference("127.0.0.1:5000", "team/greeter", "1.0.0", DIGEST)
    bare = Reference.parse("127.0.0.1:5000/team/greeter:1.0.0")
    assert bare.digest is None
    assert bare.with_digest(DIGEST) == parsed
    assert str(bare.with_digest(DIGEST)) == f"127.0.0.1:5000/team/greeter:1.0.0@{DIGEST}"
    assert Reference.parse(f"reg.example/calc@{DIGEST}").tag is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("team/greeter:1.0.0", "registry"),
        ("greeter:1.0.0", "registry"),
        ("127.0.0.1:5000/team/greeter", "tag or a digest"),
        ("127.0.0.1:5000/team/greeter@sha256:abc", "digest"),
        (f"127.0.0.1:5000/team/greeter@md5:{'ab' * 16}", "digest"),
        (f"127.0.0.1:5000/team/greeter@{DIGEST.upper()}", "digest"),
        ("127.0.0.1:5000/Team/Greeter:1.0.0", "repository"),
        ("127.0.0.1:5000/:1.0.0", "repository"),
        ("127.0.0.1:5000/team/greeter:bad tag", "tag"),
        ("127.0.0.1:5000/team/greeter:" + "t" * 129, "tag"),
        ("", "registry"),
    ],
)
def test_a_bad_reference_says_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Reference.parse(text)


# -- push and pull -------------------------------------------------------------------------------


def test_push_then_pull_by_tag_and_by_digest(oci_registry: OciRegistry) -> None:
    client = anonymous()
    data = wasm()
    target = ref(oci_registry, "team/greeter", "1.0.0")
    digest = client.push(data, target, annotations={"org.opencontainers.image.version": "1.0.0"})
    assert digest.startswith("sha256:") and len(digest) == 71

    by_tag = client.pull(target)
    assert isinstance(by_tag, Pulled)
    assert by_tag.wasm == data
    assert by_tag.wasm_digest == sha(data)
    assert by_tag.layout == "cncf"
    assert by_tag.reference == target.with_digest(digest)
    assert by_tag.annotations["org.opencontainers.image.version"] == "1.0.0"
    created = by_tag.annotations["org.opencontainers.image.created"]
    assert time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")

    by_digest = client.pull(Reference(oci_registry.host, "team/greeter", digest=digest))
    assert by_digest.wasm == data
    assert by_digest.reference.digest == digest
    assert by_digest.annotations == by_tag.annotations
    both = client.pull(target.with_digest(digest))
    assert both.wasm == data

    assert client.resolve(target) == digest
    assert client.resolve(Reference(oci_registry.host, "team/greeter", digest=digest)) == digest


def test_a_pushed_artifact_follows_the_cncf_wasm_layout(oci_registry: OciRegistry) -> None:
    data = wasm(unique())
    digest = anonymous().push(data, ref(oci_registry, "team/layout", "0.1.0"))
    status, _, body = api(oci_registry, "GET", f"/v2/team/layout/manifests/{digest}", headers={"Accept": MANIFEST})
    assert status == 200
    assert sha(body) == digest
    manifest = json.loads(body)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == MANIFEST
    assert manifest["config"]["mediaType"] == "application/vnd.wasm.config.v0+json"
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/wasm"]
    assert manifest["layers"][0]["digest"] == sha(data)
    assert manifest["layers"][0]["size"] == len(data)
    _, _, raw = api(oci_registry, "GET", f"/v2/team/layout/blobs/{manifest['config']['digest']}")
    config = json.loads(raw)
    assert config["architecture"] == "wasm"
    assert config["os"] == "wasip1"
    assert config["layerDigests"] == [sha(data)]
    assert "created" in config


def test_pushing_again_moves_the_tag(oci_registry: OciRegistry) -> None:
    client = anonymous()
    target = ref(oci_registry, "team/moving", "latest")
    first = client.push(wasm("a"), target)
    second = client.push(wasm("b"), target)
    assert first != second
    assert client.resolve(target) == second
    assert client.pull(target).wasm == wasm("b")
    assert client.pull(target.with_digest(first)).wasm == wasm("a")  # the old manifest, by its digest


def test_push_needs_a_tag(oci_registry: OciRegistry) -> None:
    with pytest.raises((OciError, ValueError), match="tag"):
        anonymous().push(wasm(), Reference(oci_registry.host, "team/notag", digest=DIGEST))


def test_a_plain_single_layer_artifact_is_read(oci_registry: OciRegistry) -> None:
    data = wasm(unique())
    digest = push_by_hand(
        oci_registry, "team/plain", "1.0.0", [("application/wasm", data)], annotations={"made.by": "hand"}
    )
    pulled = anonymous().pull(ref(oci_registry, "team/plain", "1.0.0"))
    assert pulled.layout == "plain"
    assert pulled.wasm == data
    assert pulled.wasm_digest == sha(data)
    assert pulled.reference.digest == digest
    assert pulled.annotations == {"made.by": "hand"}

    push_by_hand(oci_registry, "team/plain", "1.0.1", [("application/wasm", data)], config=(IMAGE_CONFIG, b"{}"))
    assert anonymous().pull(ref(oci_registry, "team/plain", "1.0.1")).layout == "plain"


def test_other_media_types_are_refused_naming_them(oci_registry: OciRegistry) -> None:
    client = anonymous()
    tar = "application/vnd.oci.image.layer.v1.tar+gzip"
    push_by_hand(oci_registry, "team/image", "tar", [(tar, b"not a module " + unique().encode())])
    with pytest.raises(OciError, match="not a WebAssembly artifact") as refused:
        client.pull(ref(oci_registry, "team/image", "tar"))
    assert tar in str(refused.value)
    assert "127.0.0.1" in str(refused.value) and "team/image:tar" in str(refused.value)

    two = [("application/wasm", wasm(unique())), ("application/wasm", wasm(unique()))]
    push_by_hand(oci_registry, "team/image", "two", two)
    with pytest.raises(OciError, match="not a WebAssembly artifact"):
        client.pull(ref(oci_registry, "team/image", "two"))

    push_by_hand(oci_registry, "team/image", "none", [])
    with pytest.raises(OciError, match="not a WebAssembly artifact"):
        client.pull(ref(oci_registry, "team/image", "none"))

    one = client.push(wasm(), ref(oci_registry, "team/image", "one"))
    _, _, body = api(oci_registry, "GET", f"/v2/team/image/manifests/{one}", headers={"Accept": MANIFEST})
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, "digest": one, "size": len(body)}],
    }
    put_manifest(oci_registry, "team/image", "index", index)
    with pytest.raises(OciError, match="not a WebAssembly artifact: an image index") as error:
        client.pull(ref(oci_registry, "team/image", "index"))
    assert INDEX in str(error.value)


def test_a_tag_or_digest_the_registry_lacks_is_not_found(oci_registry: OciRegistry) -> None:
    client = anonymous()
    client.push(wasm(), ref(oci_registry, "team/present", "1.0.0"))
    for missing in (
        ref(oci_registry, "team/present", "9.9.9"),
        Reference(oci_registry.host, "team/present", digest=DIGEST),
        ref(oci_registry, "team/present", "1.0.0", DIGEST),
        ref(oci_registry, "team/absent", "1.0.0"),
    ):
        with pytest.raises(OciError, match="not found") as error:
            client.pull(missing)
        assert str(missing) in str(error.value)
        with pytest.raises(OciError, match="not found"):
            client.resolve(missing)


def test_a_manifest_that_does_not_hash_to_its_digest_is_refused(oci_registry: OciRegistry) -> None:
    client = anonymous()
    marker = unique()
    target = ref(oci_registry, "team/tampered", "1.0.0")
    digest = client.push(wasm(), target, annotations={"marker": marker})
    assert client.pull(target.with_digest(digest)).annotations["marker"] == marker
    corrupt(blob_file(oci_registry, digest), marker.encode(), marker[::-1].encode())

    with pytest.raises(OciError, match="digest mismatch") as by_digest:
        client.pull(target.with_digest(digest))
    assert digest in str(by_digest.value)
    with pytest.raises(OciError, match="digest mismatch"):
        client.resolve(Reference(oci_registry.host, "team/tampered", digest=digest))
    with pytest.raises(OciError, match="digest mismatch") as by_tag:  # the registry says which digest it serves
        client.pull(target)
    assert f"expected the manifest {digest}" in str(by_tag.value)


def test_a_layer_that_does_not_hash_to_its_digest_is_refused(oci_registry: OciRegistry) -> None:
    client = anonymous()
    name = unique()
    data = wasm(name)
    target = ref(oci_registry, "team/tampered-layer", "1.0.0")
    client.push(data, target)
    corrupt(blob_file(oci_registry, sha(data)), f"t{name}".encode(), f"u{name}".encode())
    with pytest.raises(OciError, match="digest mismatch") as error:
        client.pull(target)
    assert sha(data) in str(error.value)


def test_tags_are_listed(oci_registry: OciRegistry) -> None:
    client = anonymous()
    repository = f"team/tags-{unique()}"
    tags = ["1.0.0", "1.1.0", "2.0.0-rc.1", "latest"]
    for tag in tags:
        client.push(wasm(), ref(oci_registry, repository, tag))
    assert sorted(client.tags(Reference(oci_registry.host, repository))) == sorted(tags)
    assert sorted(client.tags(ref(oci_registry, repository, "1.0.0"))) == sorted(tags)
    with pytest.raises(OciError, match="not found"):
        client.tags(Reference(oci_registry.host, f"team/none-{unique()}"))


def test_a_layer_over_the_limit_is_refused(oci_registry: OciRegistry) -> None:
    client = anonymous()
    data = wasm()
    target = ref(oci_registry, "team/large", "1.0.0")
    client.push(data, target)
    with pytest.raises(OciError, match="too large") as error:
        client.pull(target, max_bytes=len(data) - 1)
    assert str(len(data)) in str(error.value)
    assert client.pull(target, max_bytes=len(data)).wasm == data


def test_a_layer_longer_than_its_descriptor_says_is_refused_while_downloading(oci_registry: OciRegistry) -> None:
    data = wasm(unique()) + b"\0" * 4096  # a custom section's worth of trailing bytes: still a blob
    push_by_hand(oci_registry, "team/liar", "1.0.0", [("application/wasm", data)], sizes=[10])
    with pytest.raises(OciError, match=r"too large: the layer .* more than the limit of 100 bytes"):
        anonymous().pull(ref(oci_registry, "team/liar", "1.0.0"), max_bytes=100)


def test_tags_follow_the_registrys_pages() -> None:
    """docker-registry 2.8 answers every tag at once (it ignores `n`), so pages come from a stub that
    answers as paginating registries do: a `Link: <...>; rel="next"` header, relative or absolute."""
    pages = {
        "/v2/team/paged/tags/list": (["1.0.0", "1.1.0"], '</v2/team/paged/tags/list?last=1.1.0&n=2>; rel="next"'),
        "/v2/team/paged/tags/list?last=1.1.0&n=2": (
            ["2.0.0", "2.1.0"],
            '<{base}/v2/team/paged/tags/list?last=2.1.0&n=2>; rel="next"',
        ),
        "/v2/team/paged/tags/list?last=2.1.0&n=2": (["3.0.0"], None),
    }
    asked: list[str] = []

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            tags, link = pages[self.path]
            body = json.dumps({"name": "team/paged", "tags": tags}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if link:
                self.send_header("Link", link.format(base=f"http://127.0.0.1:{server.server_port}"))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        found = anonymous().tags(Reference(f"127.0.0.1:{server.server_port}", "team/paged"))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert found == ["1.0.0", "1.1.0", "2.0.0", "2.1.0", "3.0.0"]
    assert asked == list(pages)


# -- reaching the registry -----------------------------------------------------------------------


def test_a_registry_that_is_down_is_unreachable_at_once() -> None:
    port = free_port()  # nothing listens there
    client = anonymous()
    target = Reference(f"127.0.0.1:{port}", "team/greeter", "1.0.0")
    started = time.monotonic()
    for call in (lambda: client.pull(target), lambda: client.resolve(target), lambda: client.tags(target)):
        with pytest.raises(OciError, match="unreachable") as error:
            call()
        assert f"127.0.0.1:{port}" in str(error.value)
        assert "refused" in str(error.value).lower()
    with pytest.raises(OciError, match="unreachable"):
        client.push(wasm(), target)
    assert time.monotonic() - started < 10  # no retries with back-off


def test_https_unless_local_or_named_insecure(oci_registry: OciRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    """127.1 is 127.0.0.1 to the resolver but not a name the client takes for local: HTTPS, which the
    plain-HTTP registry does not speak, until it is named insecure."""
    port = oci_registry.host.rsplit(":", 1)[1]
    anonymous().push(wasm(), ref(oci_registry, "team/scheme", "1.0.0"))
    other = Reference(f"127.1:{port}", "team/scheme", "1.0.0")
    monkeypatch.delenv("HOTSWAP_OCI_INSECURE", raising=False)
    with pytest.raises(OciError, match=f"127.1:{port}.* unreachable: the TLS handshake failed"):
        anonymous().resolve(other)
    named = OciClient(Credentials.from_environment({}), insecure=[f"127.1:{port}"])
    assert named.pull(other).wasm == wasm()
    monkeypatch.setenv("HOTSWAP_OCI_INSECURE", f"example.invalid, 127.1:{port}")
    assert OciClient(Credentials.from_environment({})).resolve(other).startswith("sha256:")
    assert anonymous().resolve(Reference(f"localhost:{port}", "team/scheme", "1.0.0")).startswith("sha256:")


# -- credentials ---------------------------------------------------------------------------------


def docker_config(directory: Path, entries: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps({"auths": entries}))
    return path


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_come_from_a_docker_config_or_the_environment(tmp_path: Path) -> None:
    docker = docker_config(
        tmp_path / "docker",
        {
            "127.0.0.1:5000": {"auth": basic("alice", "pa:ss")},
            "https://reg.example.com/v1/": {"username": "bob", "password": "hunter2"},
            "empty.example.com": {},
        },
    )
    found = Credentials.from_environment({"DOCKER_CONFIG": str(docker.parent)})
    assert found.for_registry("127.0.0.1:5000") == ("alice", "pa:ss")
    assert found.for_registry("reg.example.com") == ("bob", "hunter2")
    assert found.for_registry("empty.example.com") is None
    assert found.for_registry("127.0.0.1:5001") is None

    home = docker_config(tmp_path / "home" / ".docker", {"127.0.0.1:5000": {"auth": basic("carol", "x")}})
    assert Credentials.from_environment({"HOME": str(home.parent.parent)}).for_registry("127.0.0.1:5000") == (
        "carol",
        "x",
    )
    auth_file = docker_config(tmp_path / "podman", {"127.0.0.1:5000": {"auth": basic("dave", "y")}})
    first = Credentials.from_environment({"REGISTRY_AUTH_FILE": str(auth_file), "DOCKER_CONFIG": str(docker.parent)})
    assert first.for_registry("127.0.0.1:5000") == ("dave", "y")

    pair = {"HOTSWAP_OCI_USERNAME": "ci", "HOTSWAP_OCI_PASSWORD": "t0k"}
    nowhere = Credentials.from_environment(pair)  # no HOTSWAP_OCI_REGISTRY: sent to no registry
    assert nowhere.for_registry("127.0.0.1:5000") is None and nowhere.for_registry("reg.example.com") is None
    named = Credentials.from_environment({**pair, "HOTSWAP_OCI_REGISTRY": "reg.example.com, 127.0.0.1:5001"})
    assert named.for_registry("reg.example.com") == ("ci", "t0k")
    assert named.for_registry("127.0.0.1:5001") == ("ci", "t0k")
    assert named.for_registry("127.0.0.1:5000") is None
    both = Credentials.from_environment(
        {"DOCKER_CONFIG": str(docker.parent), **pair, "HOTSWAP_OCI_REGISTRY": "127.0.0.1:5000,elsewhere.example.com"}
    )
    assert both.for_registry("127.0.0.1:5000") == ("alice", "pa:ss")  # the host's own entry first
    assert both.for_registry("elsewhere.example.com") == ("ci", "t0k")

    assert Credentials.from_environment({}).for_registry("127.0.0.1:5000") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert Credentials.from_environment({"DOCKER_CONFIG": str(tmp_path / "broken")}).for_registry("x.y") is None


def test_an_auth_registry_refuses_anonymous_pulls_and_pushes(oci_registry_auth: OciRegistry) -> None:
    client = anonymous()
    target = ref(oci_registry_auth, "team/private", "1.0.0")
    for call in (lambda: client.pull(target), lambda: client.tags(target), lambda: client.push(wasm(), target)):
        with pytest.raises(OciError, match="unauthorized") as error:
            call()
        assert "no credentials" in str(error.value)
        assert oci_registry_auth.host in str(error.value)


def test_an_auth_registry_takes_credentials_from_a_docker_config(
    oci_registry_auth: OciRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert oci_registry_auth.username and oci_registry_auth.password
    docker = docker_config(
        tmp_path / "docker",
        {oci_registry_auth.host: {"auth": basic(oci_registry_auth.username, oci_registry_auth.password)}},
    )
    for name in ("REGISTRY_AUTH_FILE", "HOTSWAP_OCI_USERNAME", "HOTSWAP_OCI_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(docker.parent))
    client = OciClient()  # credentials from the environment
    data = wasm()
    target = ref(oci_registry_auth, "team/private", "1.0.0")
    digest = client.push(data, target)
    pulled = client.pull(target)
    assert pulled.wasm == data and pulled.reference.digest == digest
    assert client.tags(target) == ["1.0.0"]


def test_an_auth_registry_takes_credentials_from_the_environment(oci_registry_auth: OciRegistry) -> None:
    assert oci_registry_auth.username and oci_registry_auth.password
    env = {
        "HOTSWAP_OCI_USERNAME": oci_registry_auth.username,
        "HOTSWAP_OCI_PASSWORD": oci_registry_auth.password,
        "HOTSWAP_OCI_REGISTRY": oci_registry_auth.host,
    }
    client = OciClient(Credentials.from_environment(env))
    target = ref(oci_registry_auth, "team/private-env", "2.0.0")
    digest = client.push(wasm(), target)
    assert client.resolve(target) == digest
    assert client.pull(target.with_digest(digest)).wasm == wasm()


def test_an_auth_registry_refuses_a_wrong_password(oci_registry_auth: OciRegistry, tmp_path: Path) -> None:
    assert oci_registry_auth.username
    env = {
        "HOTSWAP_OCI_USERNAME": oci_registry_auth.username,
        "HOTSWAP_OCI_PASSWORD": "wrong",
        "HOTSWAP_OCI_REGISTRY": oci_registry_auth.host,
    }
    client = OciClient(Credentials.from_environment(env))
    target = ref(oci_registry_auth, "team/private", "1.0.0")
    started = time.monotonic()
    with pytest.raises(OciError, match="unauthorized") as error:
        client.pull(target)
    assert "refused" in str(error.value)
    with pytest.raises(OciError, match="unauthorized"):
        client.push(wasm(), target)
    docker = docker_config(tmp_path / "d", {oci_registry_auth.host: {"auth": basic(oci_registry_auth.username, "no")}})
    with pytest.raises(OciError, match="unauthorized"):
        OciClient(Credentials.from_environment({"DOCKER_CONFIG": str(docker.parent)})).resolve(target)
    assert time.monotonic() - started < 10
