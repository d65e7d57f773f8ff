"""A control plane as someone between an edge node and the real one would play it, for the attacks on
a node run with `--control-plane-key` (tests/security/test_pinned_table_attacks.py).

`RoguePlane` speaks the node protocol (`edge.nodeapi`) on 127.0.0.1: it answers registrations with
whatever public key the test says, hands out one table answer at a time on the long-poll (any body,
any signature header), answers heartbeats, and serves module binaries by digest. It checks the
bodies a node sends with the same models the real control plane does (a registration or heartbeat
they refuse is a 400), and records everything the node sent. `MitmProxy` sits in front of a real
control plane instead, passing everything on and rewriting the assignment answers it is told to.
`Keys` is a key pair and what it signs: table signatures and their bindings to a node and generation
(any claims, any algorithm) and execute tokens. `spawn_node` starts a real `hotswap edge` process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import wasmtime
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ValidationError

from edge import tablebinding
from edge.auth import EDGE_AUDIENCE, ISSUER
from edge.nodeapi import NODES_PATH, Heartbeat, HeartbeatAnswer, Registration, RegistrationAnswer
from edge.protocol import (
    GENERATION_FLOOR_AUDIENCE,
    TABLE_AUDIENCE,
    TABLE_BINDING_AUDIENCE,
    TABLE_BINDING_HEADER,
    TABLE_SIGNATURE_HEADER,
    canonical_json,
)
from tests.e2e.cluster import EdgeProcess

ROOT = Path(__file__).resolve().parents[2]
WASM = ROOT / "fleet-example" / "wasm"
BLOBS_PATH = "/api/v1/wasm/blobs/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Keys:
    """An Ed25519 key pair; `pem` is the public half, as `--control-plane-key` takes it."""

    private: ed25519.Ed25519PrivateKey = field(default_factory=ed25519.Ed25519PrivateKey.generate)

    @property
    def pem(self) -> str:
        public = self.private.public_key()
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    @property
    def public_raw(self) -> bytes:
        return self.private.public_key().public_bytes_raw()

    def write(self, path: Path) -> Path:
        path.write_text(self.pem)
        return path

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private, algorithm="EdDSA")

    def sign_by_hand(self, claims: dict[str, Any]) -> str:
        """`claims` signed with this key as they are: PyJWT will not encode some shapes (an `iss`
        that is not a string) that a verifier must still refuse."""
        header = {"alg": "EdDSA", "typ": "JWT"}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        return signing_input + "." + _b64(self.private.sign(signing_input.encode()))

    def table_signature(self, modules: Any, **claims: Any) -> str:
        """What the control plane sends with a table, signed with this key (see `table_claims`)."""
        return self.sign(table_claims(modules, **claims))

    def table_binding(
        self,
        node_id: str,
        generation: int,
        modules: Any,
        others: Sequence[tuple[str, int, Any]] = (),
        **claims: Any,
    ) -> str:
        """What the control plane sends with a table to bind it to `node_id` and `generation`: the
        node's path in a batch with `others` (node id, generation, modules), signed with this key."""
        return table_binding(self.sign, node_id, generation, modules, others, **claims)

    def execute_token(self, role: str = "developer") -> str:
        now = int(time.time())
        return self.sign({"iss": ISSUER, "aud": EDGE_AUDIENCE, "sub": "tester", "role": role, "exp": now + 600})


def table_claims(modules: Any, **claims: Any) -> dict[str, Any]:
    """The claims of a table signature (reconciler.apply.tables); `claims` replace or add claims (a
    value None leaves that claim out)."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": TABLE_AUDIENCE,
        "sha256": hashlib.sha256(canonical_json(modules)).hexdigest(),
        "iat": int(time.time()),
    }
    base.update(claims)
    return {k: v for k, v in base.items() if v is not None}


def table_binding(
    sign: Callable[[dict[str, Any]], str],
    node_id: str,
    generation: int,
    modules: Any,
    others: Sequence[tuple[str, int, Any]] = (),
    **claims: Any,
) -> str:
    """A `TABLE_BINDING_HEADER` value as `reconciler.apply.tables.TableEncoder.bind` makes one, signed
    with `sign`; `claims` replace or add claims (a value None leaves that claim out)."""
    batch = [(node_id, generation, modules), *others]
    leaves = [tablebinding.leaf(n, g, hashlib.sha256(canonical_json(m)).hexdigest()) for n, g, m in batch]
    tree = tablebinding.Tree(leaves)
    return tablebinding.header(sign(binding_claims(tree.root, **claims)), tree.path(0))


def binding_claims(tree_root: bytes, /, **claims: Any) -> dict[str, Any]:
    """The claims of a binding over `tree_root` (reconciler.apply.tables.TableEncoder.bind); `claims`
    replace or add claims (a value None leaves that claim out; `root` replaces the root's)."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": TABLE_BINDING_AUDIENCE,
        "root": tree_root.hex(),
        "iat": int(time.time()),
    }
    base.update(claims)
    return {k: v for k, v in base.items() if v is not None}


def unsigned_jwt(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None = None) -> str:
    """A compact JWS built by hand: `alg: none` with no signature, or HMAC-SHA256 keyed with `secret`
    (PyJWT will not make either with an asymmetric key, which is the point)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    return signing_input + "." + _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def binary(name: str) -> bytes:
    """A module binary from fleet-example's WAT sources."""
    return bytes(wasmtime.wat2wasm((WASM / name).read_text()))


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def entry(module: str, version: str, data: bytes, weight: int = 100) -> dict[str, Any]:
    """One module table row as the wire has it (edge.protocol.ModuleEntry, camelCase, defaults left out)."""
    return {"module": module, "version": version, "digest": digest_of(data), "weight": weight}


def table_body(generation: int, modules: Any, **extra: Any) -> bytes:
    return json.dumps({"generation": generation, "modules": modules, **extra}).encode()


@dataclass
class TableAnswer:
    """One long-poll answer: `body` as sent, the signature header (None: none), and the generation it
    claims (the plane answers it to every poll whose `after` differs; -1 when the body names none)."""

    body: bytes
    signature: str | None
    generation: int
    headers: dict[str, str] = field(default_factory=dict)  # a binding among them, when there is one
    served: int = 0  # times a poll got it: a second time means the node did not take it the first
    # Set: bound when served, to the polling node under `generation` (a binding of `modules`, signed by `keys`)
    bind: tuple[Keys, Any] | None = None


class RoguePlane:
    """A control plane that answers what the test says (see the module docstring)."""

    def __init__(self, keys: Keys, heartbeat_seconds: float = 0.2) -> None:
        self.keys = keys
        self.public_key: str | None = keys.pem  # what registration answers name (None: no key)
        self.issuer: str | None = ISSUER
        # What a registration that carries a nonce is answered as its floor: this generation, signed
        # with `floor_keys` (default the plane's); None: no floor at all.
        self.floor: int | None = 0
        self.floor_keys: Keys | None = None
        self.floor_token: str | None = None  # set: every registration is answered this floor instead
        self.floor_claims: dict[str, Any] = {}  # claims put in the floor's in place of the right ones
        self.floors: list[str] = []  # the floors answered, in order
        self.heartbeat_seconds = heartbeat_seconds
        self.answer: TableAnswer | None = None
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.polls: list[int] = []
        self.refused_bodies: list[str] = []  # registrations and heartbeats the real models refuse
        # Set: the registration (heartbeat) answer is these bytes instead, whatever was asked; `raw_sent`
        # counts the answers they went out as.
        self.raw_registration: bytes | None = None
        self.raw_heartbeat: bytes | None = None
        self.raw_sent = 0
        self.blobs: dict[str, bytes] = {}
        self.url = ""
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None

    # -- what the test sets -----------------------------------------------------------------------

    def add_blob(self, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs[digest] = data
        return digest

    def offer(
        self, body: bytes, signature: str | None, generation: int, headers: dict[str, str] | None = None
    ) -> TableAnswer:
        """Answer the next polls with this; returns it (its `served` counts the polls it answered)."""
        self.answer = TableAnswer(body, signature, generation, dict(headers or {}))
        self._changed.set()
        self._changed = asyncio.Event()
        return self.answer

    def offer_signed(self, generation: int, modules: Any, keys: Keys | None = None) -> TableAnswer:
        """A table as the control plane would send it to the registered node, signed and bound to it
        under `generation` with `keys` (default the plane's)."""
        signer = keys or self.keys
        answer = self.offer(table_body(generation, modules), signer.table_signature(modules), generation)
        answer.bind = (signer, modules)  # to the node that polls: it may not have registered yet
        return answer

    # -- what the node sent -----------------------------------------------------------------------

    @property
    def node_url(self) -> str:
        return str(self.registrations[-1]["url"]) if self.registrations else ""

    def running(self) -> set[tuple[str, str, int]]:
        """(module, version, weight) the node's latest heartbeat reports."""
        if not self.heartbeats:
            return set()
        return {(r["module"], r["version"], r["weight"]) for r in self.heartbeats[-1].get("running", [])}

    def reported_generation(self) -> int | None:
        return int(self.heartbeats[-1]["generation"]) if self.heartbeats else None

    # -- the server -------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post(NODES_PATH, self._register)
        app.router.add_post(NODES_PATH + "/{id}/heartbeat", self._heartbeat)
        app.router.add_get(NODES_PATH + "/{id}/assignment", self._assignment)
        app.router.add_get(BLOBS_PATH + "{digest}", self._blob)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._closing = True  # waiting polls end with a 204
        self._changed.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _raw(self, body: bytes) -> web.Response:
        self.raw_sent += 1
        return web.Response(body=body, status=200, content_type="application/json")

    async def _register(self, request: web.Request) -> web.Response:
        if self.raw_registration is not None:
            return self._raw(self.raw_registration)
        raw = await request.json()
        try:
            registration = Registration.model_validate(raw)  # as the real control plane reads it
        except ValidationError as exc:
            self.refused_bodies.append(f"registration: {exc.errors()[0]['msg']}")
            return web.json_response({"error": "bad_request"}, status=400)
        self.registrations.append(raw)
        answer = RegistrationAnswer(
            id=registration.id,
            heartbeat_seconds=self.heartbeat_seconds,
            generation=0,
            public_key=self.public_key,
            issuer=self.issuer,
            floor=self._floor(registration),
        )
        return web.json_response(answer.model_dump(mode="json", by_alias=True, exclude_none=True), status=201)

    def _floor(self, registration: Registration) -> str | None:
        if self.floor_token is not None:
            return self.floor_token
        if registration.nonce is None or self.floor is None:
            return None
        claims = {
            "aud": GENERATION_FLOOR_AUDIENCE,
            "iss": ISSUER,
            "sub": registration.id,
            "nonce": registration.nonce,
            "generation": self.floor,
            **self.floor_claims,
        }
        floor = (self.floor_keys or self.keys).sign(claims)
        self.floors.append(floor)
        return floor

    async def _heartbeat(self, request: web.Request) -> web.Response:
        if self.raw_heartbeat is not None:
            return self._raw(self.raw_heartbeat)
        raw = await request.json()
        try:
            Heartbeat.model_validate(raw)
        except ValidationError as exc:
            self.refused_bodies.append(f"heartbeat: {exc.errors()[0]['msg']}")
            return web.json_response({"error": "bad_request"}, status=400)
        self.heartbeats.append(raw)
        generation = self.answer.generation if self.answer is not None else 0
        return web.json_response(HeartbeatAnswer(generation=max(generation, 0)).model_dump(by_alias=True))

    async def _assignment(self, request: web.Request) -> web.StreamResponse:
        after = int(float(request.query.get("after", "0")))
        wait = min(float(request.query.get("wait", "0")), 25.0)
        self.polls.append(after)
        deadline = time.monotonic() + wait
        while True:
            answer = self.answer
            if answer is not None and answer.generation != after:
                answer.served += 1
                if answer.bind is not None:  # kept in `headers`: what a replay of this answer sends
                    keys, modules = answer.bind
                    binding = keys.table_binding(request.match_info["id"], answer.generation, modules)
                    answer.headers[TABLE_BINDING_HEADER] = binding
                headers = dict(answer.headers)
                if answer.signature is not None:
                    headers[TABLE_SIGNATURE_HEADER] = answer.signature
                return web.Response(body=answer.body, content_type="application/json", headers=headers)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return web.Response(status=204)
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return web.Response(status=204)

    async def _blob(self, request: web.Request) -> web.Response:
        data = self.blobs.get(request.match_info["digest"])
        if data is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.Response(body=data, content_type="application/octet-stream")


Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


class MitmProxy:
    """Everything on to `upstream` (a real control plane) and back, as it is, until `rewrite_tables`:
    from then on an assignment poll is passed on as `after=0` (the control plane answers its table at
    once) and the 200 answer's JSON goes through the rewrite (its signature header passes unchanged);
    polls waiting at that moment are cut, so the node asks again at once. Records the registration
    bodies and the assignment polls (`after` as the node sent it) that pass, and each rewritten answer,
    in `events`, in order."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewrite: Rewrite | None = None
        # ("register", generation), ("poll", after), ("rewritten", 0), ("heartbeat", generation) answered 200
        self.events: list[tuple[str, int]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._waiting: set[asyncio.Task[Any]] = set()

    def rewrite_tables(self, rewrite: Rewrite | None) -> None:
        self.rewrite = rewrite
        if rewrite is not None:
            for task in list(self._waiting):
                task.cancel()

    def heartbeats_since(self, mark: int) -> list[int]:
        """The generations of the heartbeats the control plane took (200) since `len(events)` was `mark`."""
        return [value for kind, value in self.events[mark:] if kind == "heartbeat"]

    def registered_with(self, generation: int) -> bool:
        return ("register", generation) in self.events

    def polled_after_rewrite(self, below: int) -> bool:
        """A poll with `after` under `below` came after a rewritten answer: the node did not take it."""
        rewritten = [i for i, (kind, _) in enumerate(self.events) if kind == "rewritten"]
        return bool(rewritten) and any(
            kind == "poll" and value < below for kind, value in self.events[rewritten[0] + 1 :]
        )

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        assignment = request.method == "GET" and request.path.endswith("/assignment")
        query = dict(request.query)
        if request.method == "POST" and request.path == NODES_PATH:
            self.events.append(("register", int(json.loads(body).get("generation", 0))))
        if assignment:
            self.events.append(("poll", int(float(query.get("after", "0")))))
            if self.rewrite is not None:
                query["after"] = "0"
        skip = {"host", "content-length", "transfer-encoding", "connection"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        task = asyncio.current_task()
        if assignment and task is not None:
            self._waiting.add(task)
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path,
                params=query,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as answer:
                data = await answer.read()
                out = {k: v for k, v in answer.headers.items() if k.lower() not in skip | {"content-encoding"}}
                status = answer.status
        finally:
            if task is not None:
                self._waiting.discard(task)
        if request.method == "POST" and request.path.endswith("/heartbeat") and status == 200:
            self.events.append(("heartbeat", int(json.loads(body).get("generation", 0))))
        rewrite = self.rewrite
        if rewrite is not None and assignment and status == 200:
            data = json.dumps(rewrite(json.loads(data))).encode()
            self.events.append(("rewritten", 0))
        return web.Response(body=data, status=status, headers=out)


def spawn_node(
    control: str,
    node_id: str,
    data: Path,
    *,
    token: str = "a-node-token",
    region: str = "us-east",
    flags: Sequence[str] = (),
) -> EdgeProcess:
    """A real `hotswap edge` process joining `control`, as tests.e2e.cluster.spawn_edge starts one (its
    cache dir under `data`: without --cache-dir a node keeps its table in the user's cache)."""
    log = data / f"{node_id}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOTSWAP_NODE_TOKEN": token, "HOTSWAP_LOG_FORMAT": "text"}
    env.pop("HOTSWAP_CONTROL_PLANE_KEY", None)
    args = [sys.executable, "-m", "hotswap", "edge", "--control", control, "--region", region, "--id", node_id]
    args += ["--port", "0", "--threads", "2", "--log-level", "WARNING", "--log-format", "text"]
    args += ["--cache-dir", str(data / "cache" / node_id)]
    with log.open("ab") as out:
        process = subprocess.Popen([*args, *flags], stdout=out, stderr=subprocess.STDOUT, env=env)
    return EdgeProcess(node_id, region, process, log)


def kept_table(data: Path, node_id: str) -> Path:
    """Where a node spawned by `spawn_node` keeps its table."""
    return data / "cache" / node_id / "nodes" / node_id / "table.json"
