"""Attacks on the OCI sources and the update automation, from the outside: a fleet author (who can
commit YAML), whoever controls an OCI registry a fleet or a ModuleUpdate names, and a developer.

The registries here are this file's own (`FakeRegistry`, an http.server on 127.0.0.1 that answers
with whatever a test scripts: tag pages, manifests, redirects, challenges, slow bodies), next to
the real docker-registry of tests/services.py where a real one is meant. Each test asserts the safe
behaviour; the ones for attacks that were refused keep them refused.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.apply.updates import Proposal, UpdateAutomation
from reconciler.gitsource.approving import ApprovalScanner
from reconciler.gitsource.gitrepo import GitRepo
from reconciler.gitsource.gitwrite import GitWriter, WriterConfig
from reconciler.gitsource.oci import MANIFEST, WASM_CONFIG, WASM_LAYER, Credentials, OciClient, OciError
from reconciler.gitsource.trust import parse_trust
from reconciler.gitsource.verify import Verifier
from reconciler.spec.loader import load_fleet
from reconciler.spec.ocireference import Reference
from tests.git.gitutil import git, make_key

DIGEST = "sha256:" + "ab" * 32
SECRET = "s3cret-Pa55word"


# -- a registry of the attacker's own ---------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


Answer = tuple[int, dict[str, str], bytes | Callable[[Any], None]]


@dataclass
class FakeRegistry:
    """An HTTP server on 127.0.0.1 whose every answer `route(method, path, headers)` gives; every
    request is recorded in `seen`. A body may be a callable that writes it itself (slowly, say)."""

    route: Callable[[str, str, dict[str, str]], Answer]
    seen: list[Seen] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeRegistry:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per keep-alive answer

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                headers = {k: v for k, v in self.headers.items()}
                fake.seen.append(Seen(self.command, self.path, headers))
                status, extra, body = fake.route(self.command, self.path, headers)
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                if callable(body):
                    self.send_header("Connection", "close")
                    self.end_headers()
                    try:
                        body(self.wfile)
                    except OSError:
                        pass
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = _answer  # noqa: N815 - http.server's names

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def authorizations(self) -> list[str]:
        return [s.headers["Authorization"] for s in self.seen if "Authorization" in s.headers]


@pytest.fixture
def fake() -> Iterator[Callable[[Callable[[str, str, dict[str, str]], Answer]], FakeRegistry]]:
    started: list[FakeRegistry] = []

    def make(route: Callable[[str, str, dict[str, str]], Answer]) -> FakeRegistry:
        registry = FakeRegistry(route).start()
        started.append(registry)
        return registry

    yield make
    for registry in started:
        registry.stop()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def wasm_manifest(layer: bytes) -> bytes:
    config = b"{}"
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": WASM_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": WASM_LAYER, "digest": sha(layer), "size": len(layer)}],
        }
    ).encode()


def json_answer(value: Any, **headers: str) -> Answer:
    return 200, {"Content-Type": "application/json", **headers}, json.dumps(value).encode()


# -- a fleet in a bare repository, for the automation's writes --------------------------------------


FLEET = (
    "apiVersion: hotswap.dev/v1\nkind: Fleet\nmetadata: {name: f}\nspec:\n"
    "  environment: production\n  regions: [{name: us-east}]\n"
)
MODULE = (
    "apiVersion: hotswap.dev/v1\nkind: Module\nmetadata: {name: calc}\nspec:\n"
    "  version: 1.0.0\n"
    f'  source: {{digest: "{DIGEST}"}}\n'
)


def update_yaml(host: str, *, author: str | None = None, write: str = "commit") -> str:
    text = (
        "apiVersion: hotswap.dev/v1\nkind: ModuleUpdate\nmetadata: {name: calc}\nspec:\n"
        f"  module: calc\n  repository: {host}/team/calc\n  semver: '^1.0.0'\n  write: {write}\n"
    )
    if author is not None:
        text += f"  author: {json.dumps(author)}\n"
    return text


@dataclass
class FleetRepo:
    work: Path  # a person's checkout
    remote: Path  # the bare repository the control plane follows
    writer: GitWriter

    def load(self, ref: str = "main") -> Any:
        """The fleet as the Git source reads it at `ref` of the remote."""
        out = self.work.parent / f"checkout-{ref.replace('/', '-')}"
        git(self.work.parent, "clone", "-q", "--branch", ref, str(self.remote), str(out))
        return load_fleet(out / "fleet")


def fleet_repo(tmp: Path, update: str) -> FleetRepo:
    work = tmp / "work"
    (work / "fleet" / "modules").mkdir(parents=True)
    (work / "fleet" / "fleet.yaml").write_text(FLEET)
    (work / "fleet" / "modules" / "calc.yaml").write_text(MODULE)
    (work / "fleet" / "updates.yaml").write_text(update)
    git(tmp, "init", "-q", "-b", "main", str(work))
    git(work, "add", "-A")
    git(work, "-c", "user.name=bob", "-c", "user.email=bob@example.com", "commit", "-qm", "calc, updated from OCI")
    remote = tmp / "fleet.git"
    git(tmp, "clone", "-q", "--bare", str(work), str(remote))
    config = WriterConfig(str(remote), "main", "fleet", tmp / "api-work", tmp / "cp" / "git-signing-key")
    return FleetRepo(work, remote, GitWriter(config))


class NoController:
    """`UpdateAutomation.check` and `.write` need no controller."""


def automation(writer: GitWriter, client: OciClient) -> UpdateAutomation:
    return UpdateAutomation(NoController(), writer, client)  # type: ignore[arg-type]


def anonymous() -> OciClient:
    return OciClient(Credentials({}), timeout=5)


# -- the update automation's commit ------------------------------------------------------------------


def test_a_module_update_author_cannot_add_trailers_to_the_control_planes_commit(tmp_path: Path) -> None:
    """FINDING. `ModuleUpdate.spec.author` is any string up to 256 characters, newlines included, and
    is written as is into the `Hotswap-Requested-By:` trailer of the commit the control plane signs.
    A developer who commits the ModuleUpdate adds `Hotswap-Approve: calc@1.3.0` and
    `Hotswap-Approved-By: alice@example.com` lines: the Git source reads them from a commit signed
    by the control plane (actsFor admin) as alice's approval of the version the automation bumps to
    (reconciler.gitsource.approving `_api_approvals`), so an approval policy or a breaking-interface
    gate is satisfied by an admin who never approved anything."""
    injected = "bob@example.com\nHotswap-Approve: calc@1.3.0\nHotswap-Approved-By: alice@example.com"
    repo = fleet_repo(tmp_path, update_yaml("127.0.0.1:5000", author=injected))
    loaded = load_fleet(repo.work / "fleet")
    if not loaded.ok:  # refused where it is written: safe
        assert any("author" in p.message or "author" in str(p) for p in loaded.errors), loaded.errors
        return
    assert loaded.fleet is not None
    update = loaded.fleet.updates["calc"]
    proposal = Proposal("calc", "1.3.0", "1.3.0", f"127.0.0.1:5000/team/calc:1.3.0@{DIGEST}")
    try:
        automation(repo.writer, anonymous()).write(update, proposal)
    except Exception:  # the automation refuses to write such a commit: safe
        return
    head = git(repo.remote, "rev-parse", "main").strip()
    commit = GitRepo(repo.remote).commits([head])[0]
    # what the Git source makes of it, under a trust file where the control plane acts for admins
    alice, bob = make_key(tmp_path / "keys", "alice"), make_key(tmp_path / "keys", "bob")
    trust = parse_trust(
        "requireSignedCommits: true\nprincipals:\n"
        f'  - {{name: alice@example.com, roles: [admin], keys: ["{alice.public}"]}}\n'
        f'  - {{name: bob@example.com, roles: [developer], keys: ["{bob.public}"]}}\n'
        "  - {name: hotswap-control-plane, actsFor: [admin, developer, operator], "
        f'keys: ["{repo.writer.public_key}"]}}\n'
    )
    scanner = ApprovalScanner(GitRepo(repo.remote), Verifier(trust, tmp_path / "verify"), trust)
    approvals, _ = scanner.scan([commit])
    assert not approvals, f"the automation's commit counts as approvals: {approvals}"
    assert commit.approves == () and commit.api_approved_by == (), (commit.approves, commit.api_approved_by)


def tag_registry(fake: Any, tags: list[str]) -> FakeRegistry:
    """A registry with these tags in team/calc, each naming one small Wasm artifact."""
    layer = b"\0asm\x01\0\0\0"
    manifest = wasm_manifest(layer)

    def route(method: str, path: str, headers: dict[str, str]) -> Answer:
        if path.startswith("/v2/team/calc/tags/list"):
            return json_answer({"name": "team/calc", "tags": tags})
        if path.startswith("/v2/team/calc/manifests/"):
            return 200, {"Content-Type": MANIFEST, "Docker-Content-Digest": sha(manifest)}, manifest
        if path.startswith("/v2/team/calc/blobs/"):
            return 200, {}, layer
        return 404, {}, b"{}"

    registry: FakeRegistry = fake(route)
    return registry


@pytest.mark.parametrize(
    "tag",
    ["1.0999.0", "01.5.0", "1.5.0+" + "b" * 200, "1.5.0\n"],
    ids=["leading-zero-minor", "leading-zero-major", "build-suffix-past-128", "final-newline"],
)
def test_a_registry_tag_cannot_make_the_automation_commit_a_fleet_that_does_not_load(
    tmp_path: Path, fake: Any, tag: str
) -> None:
    """FINDING. The automation's semver (reconciler.spec.updates.SEMVER: `\\d+`, a `$` that also
    matches before a final newline) is looser than the one the loader holds a Module's `version` to
    (no leading zeros, in the pre-release too). Whoever can push a tag to the watched repository
    (`1.0999.0` ranks highest in `^1.0.0`; a build suffix past the 128 characters a tag may have; a
    final newline) gets a signed commit on the tracked branch whose fleet the
    Git source refuses: every later change waits until a person reverts it."""
    registry = tag_registry(fake, ["1.1.0", tag])
    repo = fleet_repo(tmp_path, update_yaml(registry.host))
    loaded = load_fleet(repo.work / "fleet")
    assert loaded.ok and loaded.fleet is not None, loaded.errors
    update = loaded.fleet.updates["calc"]
    robot = automation(repo.writer, anonymous())
    try:
        proposal = robot.check(update, "1.0.0")
        assert proposal is not None
        robot.write(update, proposal)
    except Exception:  # refusing to propose or to write it is the safe outcome
        pass
    after = repo.load()
    assert after.ok, f"the automation committed a fleet that does not load: {after.errors}"


# -- credentials ---------------------------------------------------------------------------------------


def challenge(realm: str = 'Basic realm="registry"') -> Callable[[str, str, dict[str, str]], Answer]:
    """A registry that asks for credentials on every request and records what it is sent."""

    def route(method: str, path: str, headers: dict[str, str]) -> Answer:
        return 401, {"Www-Authenticate": realm, "Content-Type": "application/json"}, b'{"errors":[]}'

    return route


def test_a_registry_a_fleet_author_names_is_not_sent_the_control_planes_password(fake: Any) -> None:
    """FINDING. `HOTSWAP_OCI_USERNAME`/`HOTSWAP_OCI_PASSWORD` are "for every registry"
    (Credentials.everywhere): the control plane answers any registry's Basic challenge with them. A
    fleet author commits `source.oci: "their.host/x:1@sha256:..."` (or a ModuleUpdate repository)
    and their registry answers 401 Basic: the next request carries the control plane's registry
    password in clear base64. Credentials should go only to the registry they were given for."""
    attacker = fake(challenge())
    trusted = {
        "HOTSWAP_OCI_USERNAME": "ci-robot",
        "HOTSWAP_OCI_PASSWORD": SECRET,
        "HOTSWAP_OCI_REGISTRY": "reg.example",
    }
    for env in (trusted, {**trusted, "HOTSWAP_OCI_REGISTRY": ""}):
        client = OciClient(Credentials.from_environment(env), timeout=5)
        with pytest.raises(OciError):
            client.pull(Reference(attacker.host, "x/calc", "1.0.0", DIGEST))
    sent = [base64.b64decode(a.split()[-1]).decode(errors="replace") for a in attacker.authorizations()]
    assert not any(SECRET in s for s in sent), f"the attacker's registry was sent {sent}"


def test_tag_pages_on_another_host_are_not_sent_the_registrys_credentials(fake: Any) -> None:
    """FINDING. `OciClient.tags` follows a `Link: <...>; rel="next"` to any absolute URL, any host,
    any scheme, and `_request` adds the Authorization header it holds for the reference's registry
    to it (and answers that host's own Basic challenge with the registry's credentials). A registry
    (or whoever can put a Link header in its answers: a proxy, a CDN) sends the ModuleUpdate's tag
    listing to another host, which receives the credentials kept for the first."""
    collector = fake(challenge())

    def registry_route(method: str, path: str, headers: dict[str, str]) -> Answer:
        if headers.get("Authorization") != basic("ci-robot", SECRET):
            return challenge()(method, path, headers)
        link = f'<http://{collector.host}/v2/team/calc/tags/list?last=1.0.0>; rel="next"'
        return json_answer({"name": "team/calc", "tags": ["1.0.0"]}, Link=link)

    registry = fake(registry_route)
    client = OciClient(Credentials({registry.host: ("ci-robot", SECRET)}), timeout=5)
    try:
        client.tags(Reference(registry.host, "team/calc"))
    except OciError:
        pass  # refusing the other host's page is the safe outcome
    assert collector.authorizations() == [], f"another host got {collector.authorizations()}"


def test_a_redirect_to_another_host_does_not_carry_the_credentials(fake: Any) -> None:
    """Held: a registry that redirects a manifest (or blob) request to another host (storage, a CDN,
    or an attacker's) does not get the Authorization header forwarded there (requests drops it when
    the host changes), and the other host's own challenge is not answered with them."""
    other = fake(lambda m, p, h: (404, {}, b"{}"))

    def route(method: str, path: str, headers: dict[str, str]) -> Answer:
        if headers.get("Authorization") != basic("ci-robot", SECRET):
            return challenge()(method, path, headers)
        return 307, {"Location": f"http://{other.host}/v2/team/calc/manifests/{DIGEST}"}, b""

    registry = fake(route)
    client = OciClient(Credentials({registry.host: ("ci-robot", SECRET)}), timeout=5)
    with pytest.raises(OciError):
        client.pull(Reference(registry.host, "team/calc", "1.0.0", DIGEST))
    assert other.seen, "the redirect was not followed"
    assert other.authorizations() == []


def test_credentials_appear_in_no_error_message(fake: Any) -> None:
    """Held: a registry that refuses the credentials, or fails, gets an error that names the
    registry and the reference, never the password (it ends in events and the API)."""
    for status in (401, 500):
        registry = fake(lambda m, p, h, s=status: (s, {"Www-Authenticate": 'Basic realm="r"'}, b"no"))
        client = OciClient(Credentials({registry.host: ("ci-robot", SECRET)}), timeout=5)
        with pytest.raises(OciError) as caught:
            client.pull(Reference(registry.host, "team/calc", "1.0.0", DIGEST))
        assert SECRET not in str(caught.value) and "ci-robot" not in str(caught.value), str(caught.value)


# -- what the control plane can be made to fetch, and what comes back --------------------------------


INTERNAL = "INTERNAL-ONLY: db_password=hunter2 (an answer meant for the local network)"


def test_an_internal_service_s_answer_does_not_come_back_in_the_error(fake: Any) -> None:
    """FINDING. A fleet author names any host and port as the registry (plain HTTP for 127.0.0.1),
    or a registry they run redirects the manifest request anywhere (requests follows up to 30
    redirects, to any host, port and path): the control plane makes the request from inside the
    network, and when the answer is not 2xx its first 300 bytes go into the OciError, which the
    controller turns into the `ArtifactPullFailed` stall message (events, the status API). A service
    reachable only from the control plane thereby answers the fleet author."""
    internal = fake(lambda m, p, h: (500, {"Content-Type": "text/plain"}, INTERNAL.encode()))
    attacker = fake(lambda m, p, h: (302, {"Location": f"http://{internal.host}/admin/config"}, b""))
    for host in (internal.host, attacker.host):
        with pytest.raises(OciError) as caught:
            anonymous().pull(Reference(host, "x/calc", "1.0.0", DIGEST))
        assert "hunter2" not in str(caught.value), f"via {host}: {caught.value}"


def test_an_endless_tag_list_is_refused(fake: Any) -> None:
    """FINDING. `OciClient.tags` follows `Link` pages with no bound on their number nor on the
    tags gathered (each page is read whole, with no size limit either). A registry a ModuleUpdate
    names that always answers with one more page keeps the automation's thread listing forever,
    growing its memory, and that ModuleUpdate is never checked again. This one stops after 3,000
    pages (300,000 tags) so that the test ends; the listing should have given up well before."""
    pages = 3000

    def route(method: str, path: str, headers: dict[str, str]) -> Answer:
        page = int(path.rsplit("=", 1)[1]) if "last=" in path else 0
        tags = [f"0.0.{page * 100 + i}-x" for i in range(100)]
        link = {"Link": f'</v2/team/calc/tags/list?n=100&last={page + 1}>; rel="next"'} if page < pages else {}
        return json_answer({"name": "team/calc", "tags": tags}, **link)

    registry = fake(route)
    with pytest.raises(OciError):
        anonymous().tags(Reference(registry.host, "team/calc"))
    assert len(registry.seen) < pages


def test_a_registry_that_answers_a_byte_at_a_time_cannot_hold_a_pull(fake: Any) -> None:
    """FINDING. The client's timeout bounds each read, not the request: a registry that sends its
    manifest one byte every 0.2 s (well inside a 1 s timeout) holds `pull` for as long as it likes
    (4 MiB allowed: ten days). The controller awaits the pull inside its pass
    (`reconciler.apply.binaries.Binaries`), so one Module naming such a registry stops every rollout and
    rollback of the fleet; a ModuleUpdate naming it holds the automation. The drip is the attack, not
    a synchronisation: it stops after 60 bytes (12 s) so that the test ends, and the pull should have
    given up (its connection closed) after a few of them."""
    total = 60
    sent: list[int] = []

    def drip(out: Any) -> None:
        for _ in range(total):
            out.write(b" ")
            out.flush()
            sent.append(1)
            time.sleep(0.2)

    def route(method: str, path: str, headers: dict[str, str]) -> Answer:
        return 200, {"Content-Type": MANIFEST, "Content-Length": str(total)}, drip

    registry = fake(route)
    with pytest.raises(OciError):
        OciClient(Credentials({}), timeout=1).pull(Reference(registry.host, "team/calc", "1.0.0", DIGEST))
    assert len(sent) < total / 2, f"the pull read all {len(sent)} bytes of a body sent a byte at a time"


# -- attacks that were refused ----------------------------------------------------------------------


def test_tags_that_are_not_plain_semver_are_never_proposed(fake: Any) -> None:
    """Held: tag names are the registry's strings, but one that would carry YAML, a comment, a path
    or a second line into the commit is not semver, so the automation never takes it."""
    hostile = ["1.5.0 #", "1.5.0\nrollout: x", "1.5.0: x", "1.5.0/../../x", "../1.5.0", "1.5.0\r", "1.5.0 ", "1.5.0,"]
    registry = tag_registry(fake, hostile)
    update_doc = load_fleet_docs(registry.host)
    assert automation(writer_unused(), anonymous()).check(update_doc, "1.0.0") is None


def load_fleet_docs(host: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "modules").mkdir()
        (root / "fleet.yaml").write_text(FLEET)
        (root / "modules" / "calc.yaml").write_text(MODULE)
        (root / "updates.yaml").write_text(update_yaml(host))
        loaded = load_fleet(root)
    assert loaded.ok and loaded.fleet is not None, loaded.errors
    return loaded.fleet.updates["calc"]


def writer_unused() -> GitWriter:
    return GitWriter(WriterConfig("/nonexistent", "main", "fleet", Path("/nonexistent"), Path("/nonexistent")))


def test_a_manifest_or_layer_that_is_not_what_its_digest_names_is_refused(fake: Any) -> None:
    """Held: a registry that serves, for the digest a fleet pins, another manifest, or for the
    layer's digest another module, is refused for a digest mismatch; nothing of it is used."""
    good_layer, evil_layer = b"\0asm\x01\0\0\0", b"\0asm\x01\0\0\0\0"
    manifest = wasm_manifest(good_layer)
    other = wasm_manifest(evil_layer)

    def swapped_manifest(method: str, path: str, headers: dict[str, str]) -> Answer:
        return 200, {"Content-Type": MANIFEST, "Docker-Content-Digest": sha(manifest)}, other

    def swapped_layer(method: str, path: str, headers: dict[str, str]) -> Answer:
        if "/manifests/" in path:
            return 200, {"Content-Type": MANIFEST}, manifest
        return 200, {}, evil_layer

    for route, digest in ((swapped_manifest, sha(manifest)), (swapped_layer, sha(manifest))):
        registry = fake(route)
        with pytest.raises(OciError, match="digest mismatch"):
            anonymous().pull(Reference(registry.host, "team/calc", "1.0.0", digest))
        # by tag, the registry's own Docker-Content-Digest is held to the bytes too
        with pytest.raises(OciError, match="digest mismatch"):
            anonymous().pull(Reference(registry.host, "team/calc", "1.0.0"))
