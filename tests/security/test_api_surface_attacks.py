"""Outside attacks on the control plane's HTTP surface after today's trust-boundary changes, against
a real control plane on 127.0.0.1 (no edge node processes: none of these needs one).

- routes (d33b161, each handler names its route with `web.RouteTableDef`): the app serves exactly
  the routes of the inventory below, each refusing every role the route refused before (the table is
  the one of 6318bc6's setup() and handlers), no handler is `@public` but the ones that were, every
  route but those answers 401 without a token (HEAD too), no route's path is shadowed by another's
  pattern, and methods a path does not serve are a JSON 405;
- tokens (b42ba90, one table of refusal kinds): expired, not yet valid, wrong audience (edge, one
  node, module tables, a list), wrong issuer, alg none, HS256 keyed with the public key, a foreign
  key, missing claims, a console session cookie as bearer, the signature of a module table a node
  receives, garbage: all 401 with a reason, and no answer carries the HS256 secret or a private key;
- the audit route's numbers (cce85ef): huge, negative, fractional, repeated, unicode digits, 5,000
  digits: a 400 or a bounded answer, never a 500 or more lines than the limit;
- approvals (90078f2, `approver`/`commit_approval`): a viewer, operator or node token cannot approve
  a deployment or an interface; an approver cannot approve what waits for no approval, nor twice; a
  refusal commits nothing and writes no audit line, an approval writes exactly one;
- the stores' SQL (bc48010, c8b7eba, 0c6182f, the `Table` helper): quotes, `;`, `%s`, `?`, NUL and
  long values in every list route's filters reach no SQL text: exact matches only, no 500, no table
  dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.nodeapi import NODES_PATH
from edge.protocol import TABLE_SIGNATURE_HEADER
from reconciler.api.auth import AUDIENCE, EDGE_AUDIENCE, ISSUER, node_audience
from reconciler.api.base import is_public
from reconciler.api.security import BUCKETS, SESSION_JTI_PREFIX
from reconciler.gitsource.acting import CONTROL_PLANE_NAME
from tests.api.conftest import Answer, call
from tests.e2e.cluster import Cluster, poll, start_cluster, stop_cluster
from tests.e2e.signed import People, push, start_signed_cluster
from tests.git.gitutil import git
from tests.security.test_attack_node_reports import ROGUE, _registered_rogue_with_calc

READ = frozenset({"admin", "developer", "operator", "viewer"})
ALL = READ | {"node"}
ROLES = sorted(ALL)
PUBLIC = frozenset({"<public>"})
W = "/api/v1/wasm"

# (method, canonical path) -> the roles that get past authorization, or PUBLIC: what each route
# required at 6318bc6 (before the routes were named on their handlers). HEAD follows GET.
INVENTORY: dict[tuple[str, str], frozenset[str]] = {
    ("POST", f"{W}/modules"): frozenset({"developer", "admin"}),
    ("GET", f"{W}/modules"): ALL,
    ("GET", f"{W}/modules/{{id}}"): ALL,
    ("GET", f"{W}/modules/{{id}}/binary"): ALL,
    ("GET", f"{W}/blobs/{{digest}}"): ALL,
    ("DELETE", f"{W}/modules/{{id}}"): frozenset({"admin"}),
    ("POST", NODES_PATH): frozenset({"node", "admin"}),
    ("GET", NODES_PATH): ALL,
    ("GET", f"{NODES_PATH}/{{id}}"): READ,
    ("DELETE", f"{NODES_PATH}/{{id}}"): frozenset({"operator", "admin"}),
    ("GET", f"{NODES_PATH}/{{id}}/health"): READ,
    ("POST", f"{NODES_PATH}/{{id}}/drain"): frozenset({"operator", "admin"}),
    ("DELETE", f"{NODES_PATH}/{{id}}/drain"): frozenset({"operator", "admin"}),
    ("POST", f"{NODES_PATH}/{{id}}/heartbeat"): frozenset({"node", "admin"}),
    ("GET", f"{NODES_PATH}/{{id}}/assignment"): frozenset({"node", "admin"}),
    ("GET", f"{W}/deployments"): READ,
    ("GET", f"{W}/deployments/{{id}}"): READ,
    ("POST", f"{W}/deployments"): frozenset({"developer", "admin"}),
    ("POST", f"{W}/deployments/{{id}}/execute"): frozenset({"developer", "admin"}),  # a dev fleet
    ("POST", f"{W}/deployments/{{id}}/rollback"): frozenset({"operator", "admin"}),
    ("POST", f"{W}/deployments/{{id}}/pause"): frozenset({"operator", "admin"}),
    ("POST", f"{W}/deployments/{{id}}/resume"): frozenset({"operator", "admin"}),
    ("POST", f"{W}/execute"): frozenset({"developer", "admin"}),
    ("GET", f"{W}/interfaces"): READ,
    ("POST", f"{W}/interfaces"): frozenset({"developer", "admin"}),
    ("GET", f"{W}/interfaces/{{id}}"): READ,
    ("POST", f"{W}/interfaces/{{id}}/approve"): frozenset({"admin"}),
    ("POST", f"{W}/interfaces/{{id}}/validate"): READ,
    ("GET", f"{W}/source"): READ,
    ("POST", f"{W}/source/accept-rewrite"): frozenset({"admin"}),
    ("GET", f"{W}/status"): READ,
    ("GET", f"{W}/snapshot"): READ,
    ("GET", f"{W}/diff"): READ,
    ("GET", f"{W}/audit"): READ,
    ("GET", f"{W}/notifications"): READ,
    ("GET", "/api/v1/openapi.json"): ALL,
    ("GET", "/metrics"): READ,
    ("GET", "/health"): PUBLIC,
    ("GET", "/ui"): PUBLIC,
    ("GET", "/ui/"): PUBLIC,
    ("POST", "/ui/session"): PUBLIC,
    ("GET", "/ui/session"): PUBLIC,
    ("DELETE", "/ui/session"): PUBLIC,
    ("GET", "/ui/login/{code}"): PUBLIC,
    ("GET", "/ui/events"): READ,
    ("GET", "/ui/{name}"): PUBLIC,
}

# What a placeholder becomes in a request, and the body each write is sent (about things that do
# not exist, so an allowed call changes nothing).
FILL = {"{id}": "ghost", "{digest}": "0" * 64, "{code}": "not-a-code", "{name}": "nope.js"}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", f"{W}/modules"): {"name": "x"},
    ("POST", f"{W}/deployments"): {"module": "nope", "version": "1.0.0"},
    ("POST", f"{W}/execute"): {"module": "nope", "function": "f"},
    ("POST", f"{NODES_PATH}/{{id}}/heartbeat"): {"generation": 0},
    ("POST", f"{W}/source/accept-rewrite"): {"head": "0" * 40},
}
QUERIES = {("GET", f"{NODES_PATH}/{{id}}/assignment"): "?after=0&wait=0"}
IDS = {("POST", f"{W}/deployments/{{id}}/execute"): "nope-v1.0.0"}


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, [])
    try:
        await poll(lambda: cluster.plane.source.latest is not None, "the first revision")
        yield cluster
    finally:
        await stop_cluster(cluster)


def _canonical(route: Any) -> str:
    resource = route.resource
    assert resource is not None
    # aiohttp's canonical of `{name:.+}` is `{name}`
    return str(resource.canonical)


def _served(cluster: Cluster) -> dict[tuple[str, str], Any]:
    """(method, canonical path) -> handler of every route the running app serves, HEAD left out."""
    served: dict[tuple[str, str], Any] = {}
    for route in cluster.plane.app.router.routes():
        if route.method == "HEAD":
            continue
        served[(route.method, _canonical(route))] = route.handler
    return served


def _concrete(method: str, path: str) -> str:
    ident = IDS.get((method, path))
    out = path.replace("{id}", ident) if ident else path
    for placeholder, value in FILL.items():
        out = out.replace(placeholder, value)
    return out + QUERIES.get((method, path), "")


async def _status(url: str, method: str, path: str, token: str | None, body: Any = None) -> Answer:
    """The answer's status and (unless it is a stream) its JSON body; a stream is left unread."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url + path, headers=headers, json=body) as r,
    ):
        if r.headers.get("Content-Type", "").startswith("text/event-stream"):
            return Answer(r.status, None, dict(r.headers))
        raw = await r.read()
        try:
            parsed: Any = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return Answer(r.status, parsed, dict(r.headers))


# -- routes -----------------------------------------------------------------------------------------


async def test_the_app_serves_exactly_the_inventory_and_public_handlers_are_the_old_ones(plane: Cluster) -> None:
    served = _served(plane)
    assert set(served) == set(INVENTORY), (
        f"routes added: {sorted(set(served) - set(INVENTORY))}; routes gone: {sorted(set(INVENTORY) - set(served))}"
    )
    wrongly_public = [key for key, handler in served.items() if is_public(handler) != (INVENTORY[key] == PUBLIC)]
    assert not wrongly_public, wrongly_public
    # every GET also answers HEAD, through the same (non-public) handler
    heads = {_canonical(r): r.handler for r in plane.plane.app.router.routes() if r.method == "HEAD"}
    for (method, path), handler in served.items():
        if method == "GET":
            assert heads.get(path) is handler, path


async def test_each_role_against_each_route_of_the_app(plane: Cluster) -> None:
    tokens = {role: plane.token(role, subject="ghost" if role == "node" else f"user-{role}") for role in ROLES}
    wrong: list[str] = []
    for (method, path), allowed in sorted(INVENTORY.items()):
        if allowed == PUBLIC:
            continue
        concrete, body = _concrete(method, path), BODIES.get((method, path), {} if method == "POST" else None)
        for role in ROLES:
            answer = await _status(plane.url, method, concrete, tokens[role], body)
            assert answer.status < 500 or answer.status == 503, f"{role} {method} {concrete}: {answer}"
            if role in allowed and answer.status in (401, 403):
                wrong.append(f"{role} refused on {method} {concrete}: {answer.status} {answer.body}")
            if role not in allowed and answer.status != 403:
                wrong.append(f"{role} NOT refused on {method} {concrete}: {answer.status} {answer.body}")
    assert not wrong, "\n".join(wrong)


async def test_every_route_but_the_public_ones_needs_a_token_head_included(plane: Cluster) -> None:
    for (method, path), allowed in sorted(INVENTORY.items()):
        concrete = _concrete(method, path)
        body = BODIES.get((method, path), {} if method == "POST" else None)
        if allowed == PUBLIC:
            continue
        answer = await _status(plane.url, method, concrete, None, body)
        assert answer.status == 401, f"{method} {concrete}: {answer.status} {answer.body}"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        if method == "GET":
            head = await _status(plane.url, "HEAD", concrete, None)
            assert head.status == 401, f"HEAD {concrete}: {head.status}"
    health = await call(plane.url, "GET", "/health")
    assert health.status == 200 and health.body["status"] == "ok"
    assert set(health.body) == {"status", "version", "python"}  # nothing more to the anonymous


def _pattern(route: Any) -> re.Pattern[str]:
    info = route.resource.get_info()
    if "pattern" in info:
        return re.compile(info["pattern"].pattern)
    return re.compile(re.escape(info["path"]))


async def test_no_route_is_shadowed_by_another_routes_pattern(plane: Cluster) -> None:
    """A concrete path of each route matches no other route of the same method: a literal segment
    never falls to a `{id}` (a request to it would be answered, and authorized, by another handler)."""
    routes = [r for r in plane.plane.app.router.routes() if r.method != "HEAD"]
    clashes: list[str] = []
    for route in routes:
        path = _concrete(route.method, _canonical(route)).split("?")[0]
        for other in routes:
            if other is route or other.method != route.method:
                continue
            if _pattern(other).fullmatch(path) and (route.method, _canonical(other)) != ("GET", "/ui/{name}"):
                clashes.append(f"{route.method} {path}: {_canonical(route)} and {_canonical(other)}")
    assert not clashes, clashes
    # literal API segments where a `{id}` also sits at that depth resolve to their own route
    for literal in ("health", "drain", "heartbeat", "assignment"):
        answer = await call(plane.url, "GET", f"{NODES_PATH}/{literal}", plane.token("viewer"))
        assert answer.status == 404 and answer.body["error"] == "not_found", answer  # the node {literal!r}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", NODES_PATH),
        ("PATCH", f"{NODES_PATH}/ghost"),
        ("PUT", f"{W}/modules/x-v1.0.0"),
        ("DELETE", f"{W}/deployments"),
        ("GET", f"{W}/deployments/x/execute"),
        ("GET", f"{W}/interfaces/x/approve"),
        ("DELETE", f"{W}/audit"),
        ("POST", "/metrics"),
        ("PUT", f"{W}/source/accept-rewrite"),
        ("POST", f"{W}/status"),
        ("GET", f"{W}/execute"),
    ],
)
async def test_methods_a_path_does_not_serve_are_a_json_405(plane: Cluster, method: str, path: str) -> None:
    answer = await call(plane.url, method, path, plane.token("admin"))
    assert answer.status == 405, (method, path, answer)
    assert answer.body["error"] == "method_not_allowed", answer.body
    allowed = {m.strip() for m in answer.headers.get("Allow", "").split(",") if m.strip()}
    assert allowed and method not in allowed, answer.headers  # says which methods the path does take
    anonymous = await call(plane.url, method, path)
    assert anonymous.status in (401, 405) and anonymous.status != 200


# -- tokens -----------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None) -> str:
    """A JWT put together by hand: HMAC-SHA256 with `key` when given, no signature otherwise."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest()) if key is not None else ""
    return f"{signing_input}.{signature}"


def _claims(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "mallory",
        "roles": ["admin"],
        "iat": now,
        "exp": now + 600,
    }
    for name, value in override.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def _secrets_of(cluster: Cluster) -> list[str]:
    auth = cluster.plane.options.data_dir / "auth"
    secret = (auth / "hs256.secret").read_text().strip()
    pem = (auth / "signing-key.pem").read_text()
    body = "".join(line for line in pem.splitlines() if "-----" not in line)
    return [secret, body, body[:24], "PRIVATE KEY"]


def _bad_tokens(cluster: Cluster) -> dict[str, str]:
    authority = cluster.plane.authority
    sign = authority.sign
    now = time.time()
    public_pem = authority.public_key_pem.encode()
    stranger = ed25519.Ed25519PrivateKey.generate()
    table = {"aud": "hotswap-table", "sha256": "0" * 64, "iat": int(now), "iss": ISSUER}
    return {
        "expired": authority.mint("mallory", ["admin"], now=now - 7200, ttl_seconds=3600),
        "not-yet-valid": sign(_claims(nbf=int(now) + 3600)),
        "edge-audience": authority.mint("mallory", ["admin"], audience=EDGE_AUDIENCE),
        "one-node-audience": authority.mint("mallory", ["admin"], audience=node_audience("edge-us-east-1")),
        "list-audience": sign(_claims(aud=[AUDIENCE])),
        "list-audience-with-edge": sign(_claims(aud=[AUDIENCE, EDGE_AUDIENCE])),
        "wrong-issuer": authority.mint("mallory", ["admin"], issuer="evil"),
        "wrong-issuer-hs256": authority.mint("mallory", ["admin"], issuer="evil", algorithm="HS256"),
        "alg-none": _unsigned({"alg": "none", "typ": "JWT"}, _claims()),
        "alg-None": _unsigned({"alg": "None", "typ": "JWT"}, _claims()),
        "no-alg": _unsigned({"typ": "JWT"}, _claims()),
        "hs256-keyed-with-the-public-key": _unsigned({"alg": "HS256", "typ": "JWT"}, _claims(), public_pem),
        "hs512-keyed-with-the-public-key": jwt.encode(_claims(), "x" * 64, algorithm="HS512"),
        "foreign-ed25519-key": jwt.encode(_claims(), stranger, algorithm="EdDSA"),
        "rs256-header-on-eddsa-key": _unsigned({"alg": "RS256", "typ": "JWT"}, _claims()),
        "no-exp": sign(_claims(exp=None)),
        "no-iss": sign(_claims(iss=None)),
        "no-aud": sign(_claims(aud=None)),
        "no-sub": sign(_claims(sub=None)),
        "exp-not-a-number": sign(_claims(exp="tomorrow")),
        "session-jti-as-bearer": authority.mint("mallory", ["admin"], jti=SESSION_JTI_PREFIX + "csrf"),
        "module-table-signature": sign(table),
        "alg-with-crlf": _unsigned({"alg": "x\r\nSet-Cookie: owned=1", "typ": "JWT"}, _claims()),
        "garbage": "garbage",
        "three-dots": "a.b.c",
        "empty-segments": "..",
        "header-not-an-object": f"{_b64(b'[1]')}.{_b64(b'{}')}.",
        "huge": "A" * 6000,
    }


async def test_every_refused_token_is_a_401_that_says_why_and_discloses_no_secret(plane: Cluster) -> None:
    secrets_ = _secrets_of(plane)
    for name, token in _bad_tokens(plane).items():
        for path in (f"{W}/status", f"{W}/audit", NODES_PATH):
            answer = await call(plane.url, "GET", path, token)
            assert answer.status == 401, f"{name} on {path}: {answer.status} {answer.body}"
            assert answer.body["error"] == "unauthorized" and answer.body["message"], (name, answer.body)
            challenge = answer.headers["WWW-Authenticate"]
            assert challenge.startswith("Bearer") and "\n" not in challenge and "\r" not in challenge
            assert "owned" not in answer.headers.get("Set-Cookie", ""), name
            text = json.dumps(answer.body) + challenge
            leaked = [s for s in secrets_ if s in text]
            assert not leaked, (name, text)
        # a refused token is refused again (no cache of the first answer lets it in)
        again = await call(plane.url, "GET", f"{W}/status", token)
        assert again.status == 401, name


async def test_the_reasons_name_the_fault(plane: Cluster) -> None:
    bad = _bad_tokens(plane)
    expect = {
        "expired": "expired",
        "not-yet-valid": "not valid yet",
        "edge-audience": "audience must be 'hotswap-api'",
        "list-audience": "must name one audience",
        "list-audience-with-edge": "must name one audience",
        "wrong-issuer": "not issued by 'hotswap'",
        "alg-none": "'none' are not accepted",
        "no-alg": "'None' are not accepted",
        "hs256-keyed-with-the-public-key": "signature does not verify",
        "foreign-ed25519-key": "signature does not verify",
        "no-exp": "lacks the 'exp' claim",
        "no-sub": "lacks the 'sub' claim",
        "session-jti-as-bearer": "console session is not a bearer token",
        "garbage": "not a valid JWT",
    }
    for name, words in expect.items():
        answer = await call(plane.url, "GET", f"{W}/status", bad[name])
        assert answer.status == 401 and words in answer.body["message"], (name, answer.body)


async def test_a_real_console_session_cookie_is_no_bearer_token(plane: Cluster) -> None:
    origin = {"Origin": plane.url}
    signed_in = await call(
        plane.url, "POST", "/ui/session", json={"token": plane.token("admin", "ada")}, headers=origin
    )
    assert signed_in.status in (200, 201), signed_in
    cookie = signed_in.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    assert cookie.count(".") == 2  # a JWT signed by the plane, for the API audience
    answer = await call(plane.url, "GET", f"{W}/status", cookie)
    assert answer.status == 401 and "console session" in answer.body["message"], answer
    write = await call(plane.url, "POST", f"{NODES_PATH}/ghost/drain", cookie)
    assert write.status == 401, write  # as a bearer token it would skip the cookie's CSRF check


async def test_the_signature_a_node_receives_with_its_table_is_no_api_token(plane: Cluster) -> None:
    """Module tables are signed with the plane's own key (what nodes check them with): the JWT a node
    holder receives with its table must not open the API."""
    node, _ = await _registered_rogue_with_calc(plane)
    table = await call(plane.url, "GET", f"{NODES_PATH}/{ROGUE}/assignment?after=0&wait=0", node)
    assert table.status == 200, table
    signature = table.headers[TABLE_SIGNATURE_HEADER]
    assert jwt.get_unverified_header(signature)["alg"] == plane.plane.authority.algorithm  # the API's key
    for path in (f"{W}/status", f"{W}/audit", f"{NODES_PATH}/{ROGUE}/assignment?after=0"):
        answer = await call(plane.url, "GET", path, signature)
        assert answer.status == 401, (path, answer)
    # and the node token itself reaches no person's route
    for method, path in (("GET", f"{W}/status"), ("GET", f"{W}/audit"), ("POST", f"{NODES_PATH}/{ROGUE}/drain")):
        answer = await call(plane.url, method, path, node)
        assert answer.status == 403, (method, path, answer)


# -- the audit route's numbers ------------------------------------------------------------------------


def _seed_audit(cluster: Cluster, count: int, subject: str = "seed") -> None:
    for i in range(count):
        cluster.plane.store.append_audit("tester", "test.seed", subject, {"i": i})


@pytest.mark.parametrize(
    "query",
    [
        "limit=-1",
        "limit=0",
        "limit=1001",
        "limit=1.5",
        "limit=1e3",
        "limit=0x10",
        "limit=NaN",
        "limit=inf",
        "limit=" + "9" * 40,
        "limit=" + "9" * 5000,
        "after=-1",
        "after=" + str(2**62 + 1),
        "after=" + "9" * 5000,
        "after=1.0",
        "after=%00",
        "after=1%00",
        "limit=5000&limit=1",
        "limit=abc",
    ],
)
async def test_bad_audit_numbers_are_a_400_naming_the_parameter(plane: Cluster, query: str) -> None:
    _seed_audit(plane, 3)
    answer = await call(plane.url, "GET", f"{W}/audit?{query}", plane.token("viewer"))
    assert answer.status == 400, (query, answer)
    assert answer.body["error"] == "bad_request" and answer.body["field"] in ("limit", "after"), answer.body


@pytest.mark.parametrize(
    ("query", "most"),
    [
        ("limit=1&limit=5000", 1),
        ("limit=2&after=0&after=-5", 2),
        ("limit=%D9%A3", 3),  # ARABIC-INDIC DIGIT THREE: int() reads it as 3
        ("limit=%EF%BC%92", 2),  # FULLWIDTH DIGIT TWO
        ("limit=+2", 2),
        ("limit=1_0", 10),
        ("limit=1000", 1000),
        ("limit=", 100),
        ("after=0&limit=4", 4),
    ],
)
async def test_odd_but_whole_audit_numbers_are_bounded(plane: Cluster, query: str, most: int) -> None:
    _seed_audit(plane, 12)
    answer = await call(plane.url, "GET", f"{W}/audit?{query}", plane.token("viewer"))
    assert answer.status in (200, 400), (query, answer)
    if answer.status == 200:
        assert len(answer.body["entries"]) <= most, (query, len(answer.body["entries"]))
        assert isinstance(answer.body["next"], int)


async def test_the_audit_cursor_past_the_end_and_at_the_bound(plane: Cluster) -> None:
    _seed_audit(plane, 3)
    viewer = plane.token("viewer")
    top = await call(plane.url, "GET", f"{W}/audit?after={2**62}", viewer)
    assert top.status == 200 and top.body["entries"] == [] and top.body["next"] == 2**62
    filtered = await call(plane.url, "GET", f"{W}/audit?after={2**62}&action=test.seed&q=x", viewer)
    assert filtered.status == 200 and filtered.body["entries"] == []


# -- approvals --------------------------------------------------------------------------------------


async def _play_node(cluster: Cluster, node_id: str, region: str) -> None:
    """A node of the test's own over the node protocol: registered with a node token, it reports
    serving whatever it was assigned, a heartbeat every 0.1 s, until cancelled."""
    token = cluster.token("node", node_id)
    hello = {"id": node_id, "region": region, "hostname": "h", "url": "http://127.0.0.1:9"}
    assert (await call(cluster.url, "POST", NODES_PATH, token, json=hello)).status in (200, 201)
    table: dict[str, Any] = {}
    while True:
        answer = await call(cluster.url, "GET", f"{NODES_PATH}/{node_id}/assignment?after=0", token)
        if answer.status == 200:
            table = answer.body
        running = [
            {"module": e["module"], "version": e["version"], "digest": e["digest"], "weight": e["weight"]}
            for e in table.get("modules", [])
        ]
        beat = {"generation": table.get("generation", 0), "running": running}
        await call(cluster.url, "POST", f"{NODES_PATH}/{node_id}/heartbeat", token, json=beat)
        await asyncio.sleep(0.1)  # a node's heartbeat pace, not a synchronisation


@pytest.fixture
async def signed(tmp_path: Path) -> AsyncIterator[tuple[Cluster, People]]:
    cluster, people = await start_signed_cluster(tmp_path, [], approvals="{rollouts: {roles: [admin], count: 2}}")
    node = asyncio.create_task(_play_node(cluster, "edge-played-1", "us-east"))
    try:
        await poll(lambda: cluster.plane.source.latest is not None, "the first revision")
        await cluster.wait_phase("calc", "1.0.0", ["Promoted"])
        yield cluster, people
    finally:
        node.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await node
        await stop_cluster(cluster)


def _head(tmp_path: Path) -> str:
    return git(tmp_path / "fleet.git", "rev-parse", "main").strip()


def _approvals_audited(cluster: Cluster) -> list[tuple[str, str, str]]:
    return [
        (a.actor, a.action, a.subject)
        for a in cluster.plane.store.audit_log(limit=1000)
        if a.action in ("deployment.approve", "interface.approve")
    ]


async def _approve(cluster: Cluster, token: str, ident: str = "calc-v1.1.0") -> Answer:
    return await call(cluster.url, "POST", f"{W}/deployments/{ident}/execute", token)


async def test_who_may_not_approve_commits_nothing_and_is_not_audited(
    signed: tuple[Cluster, People], tmp_path: Path
) -> None:
    cluster, people = signed
    cluster.repo.edit("modules/calc.yaml", "calc-1.0.0.wat", "calc-1.1.0.wat")
    cluster.repo.edit("modules/calc.yaml", "version: 1.0.0", "version: 1.1.0")
    cluster.repo.commit("calc 1.1.0", key=people.bob.private)
    push(cluster.repo)
    await cluster.wait_phase("calc", "1.1.0", ["WaitingApproval"])
    head = _head(tmp_path)

    # roles that never approve, as principals the trust file knows (alice is an admin there)
    for role in ("viewer", "operator", "node"):
        for ident in ("calc-v1.1.0", cluster.latest("calc").id):
            answer = await _approve(cluster, cluster.token(role, "alice@example.com"), ident)
            assert answer.status == 403, (role, ident, answer)
        interface = await call(
            cluster.url,
            "POST",
            f"{W}/interfaces/example:greeter@2.0.0/approve",
            cluster.token(role, "alice@example.com"),
        )
        assert interface.status == 403, (role, interface)
    interface = await call(
        cluster.url,
        "POST",
        f"{W}/interfaces/example:greeter@2.0.0/approve",
        cluster.token("developer", "bob@example.com"),
    )
    assert interface.status == 403, interface  # interfaces: admins only
    # a token's role is not the trust file's: an admin token for someone the trust file does not
    # know, or for the control plane's own principal, counts for nobody
    for subject in ("mallory", CONTROL_PLANE_NAME, "HOTSWAP-CONTROL-PLANE", ""):
        if not subject:
            continue
        answer = await _approve(cluster, cluster.token("admin", subject))
        assert answer.status == 409 and answer.body["error"] == "untrusted_writer", (subject, answer)
        answer = await call(
            cluster.url, "POST", f"{W}/interfaces/example:greeter@2.0.0/approve", cluster.token("admin", subject)
        )
        assert answer.status == 409 and answer.body["error"] == "untrusted_writer", (subject, answer)
    # what waits for no approval: the running version, a version never deployed, a module not in the fleet
    admin = cluster.token("admin", "alice@example.com")
    for ident, error in (("calc-v1.0.0", "not_waiting"), ("calc-v9.9.9", "not_waiting"), ("nope-v1.1.0", "not_found")):
        answer = await _approve(cluster, admin, ident)
        assert answer.status in (404, 409) and answer.body["error"] == error, (ident, answer)
    assert _head(tmp_path) == head, "a refused approval committed"
    assert _approvals_audited(cluster) == [], "a refused approval was audited as an approval"

    # an approver approves once; the second time (by the same principal however spelled) is refused
    first = await _approve(cluster, admin)
    assert first.status == 202 and first.body["approvedBy"] == "alice@example.com", first
    assert _head(tmp_path) == first.body["commit"]
    await poll(lambda: (r := cluster.plane.source.latest) is not None and r.sha == first.body["commit"], "the approval")
    for spelling in ("alice@example.com", "ALICE@example.com", " alice@example.com", "Alice <alice@example.com>"):
        again = await _approve(cluster, cluster.token("admin", spelling))
        assert again.status == 409 and again.body["error"] == "already_approved", (spelling, again)
    assert _head(tmp_path) == first.body["commit"]
    assert _approvals_audited(cluster) == [("alice@example.com", "deployment.approve", "calc@1.1.0")]


# -- what a request sends never reaches SQL text ------------------------------------------------------

HOSTILE = [
    "' OR '1'='1",
    "x'; DROP TABLE audit_log; --",
    "x'); DELETE FROM nodes; --",
    '" OR 1=1 --',
    ") OR (1=1",
    "%s",
    "%(subject)s",
    "?",
    "?, ?",
    "$1",
    "\x00",
    "a\x00' OR 1=1 --",
    "\\",
    "é' UNION SELECT id, id, id, id, id, id FROM nodes --",
    "1 ORDER BY 99",
    "seq DESC; --",
    "x" * 3000,
]

# (path, the list key of its answer): every list route and each filter it reads
FILTERED = [
    (f"{NODES_PATH}?region=", "nodes"),
    (f"{NODES_PATH}?status=", "nodes"),
    (f"{NODES_PATH}?q=", "nodes"),
    (f"{W}/modules?name=", "modules"),
    (f"{W}/modules?q=", "modules"),
    (f"{W}/interfaces?q=", ""),  # no filter: the fleet's interfaces
    (f"{W}/audit?subject=", "entries"),
    (f"{W}/audit?action=", "entries"),
    (f"{W}/audit?q=", "entries"),
    (f"{W}/deployments?module=", "deployments"),
    (f"{W}/deployments?q=", "deployments"),
    (f"{W}/deployments?order=", "deployments"),
    (f"{W}/deployments?limit=5&offset=0&active=", "deployments"),
    (f"{W}/notifications?filter=", ""),
]


async def _register(cluster: Cluster, node_id: str, region: str) -> None:
    hello = {"id": node_id, "region": region, "hostname": "h", "url": "http://127.0.0.1:9"}
    answer = await call(cluster.url, "POST", NODES_PATH, cluster.token("node", node_id), json=hello)
    assert answer.status in (200, 201), answer


async def test_hostile_filters_on_every_list_route_match_nothing_and_break_nothing(plane: Cluster) -> None:
    await _register(plane, "edge-sql-1", "us-east")
    _seed_audit(plane, 5)
    store = plane.plane.store
    audit_before = len(store.audit_log(limit=1000))
    viewer = plane.token("viewer")
    wrong: list[str] = []
    for route, key in FILTERED:
        for value in HOSTILE:
            path = route + quote(value, safe="")
            answer = await call(plane.url, "GET", path, viewer)
            if answer.status not in (200, 400):
                wrong.append(f"{route}{value[:40]!r}: {answer.status} {str(answer.body)[:200]}")
                continue
            filtering = key and "order=" not in route and "active=" not in route
            if answer.status == 200 and filtering and answer.body[key]:
                wrong.append(f"{route}{value[:40]!r} matched {len(answer.body[key])} {key}")
    assert not wrong, "\n".join(wrong)
    # nothing was dropped or deleted, and the filters still work
    assert len(store.audit_log(limit=1000)) >= audit_before  # the plane's own lines may come meanwhile
    assert [n.id for n in store.list_nodes()] == ["edge-sql-1"]
    nodes = await call(plane.url, "GET", f"{NODES_PATH}?region=us-east", viewer)
    assert [n["id"] for n in nodes.body["nodes"]] == ["edge-sql-1"]
    seeded = await call(plane.url, "GET", f"{W}/audit?subject=seed", viewer)
    assert len(seeded.body["entries"]) == 5


async def test_an_audit_subject_is_matched_exactly_whatever_it_holds(plane: Cluster) -> None:
    store = plane.plane.store
    subjects = [v for v in HOSTILE if "\x00" not in v] + ["plain", "PLAIN", "plain%", "pl_in"]
    for subject in subjects:
        store.append_audit("tester", "test.seed", subject, {"subject": subject})
    viewer = plane.token("viewer")
    for subject in subjects:
        answer = await call(plane.url, "GET", f"{W}/audit?subject={quote(subject, safe='')}", viewer)
        assert answer.status == 200, (subject, answer)
        got = [e["subject"] for e in answer.body["entries"]]
        assert got == [subject], (subject[:40], got[:5])
    # LIKE-style wildcards are not wildcards
    for wildcard in ("%", "_", "pl%", "pl_in%"):
        answer = await call(plane.url, "GET", f"{W}/audit?subject={quote(wildcard, safe='')}", viewer)
        assert answer.status == 200 and answer.body["entries"] == [], (wildcard, answer.body)


@pytest.mark.parametrize("value", [*HOSTILE[:-1], "x" * 1000])
async def test_hostile_ids_in_paths_are_a_404_or_400(plane: Cluster, value: str) -> None:
    viewer, admin = plane.token("viewer"), plane.token("admin")
    segment = quote(value, safe="")
    for method, path, token in (
        ("GET", f"{W}/modules/{segment}", viewer),
        ("GET", f"{W}/modules/{segment}/binary", viewer),
        ("GET", f"{W}/blobs/{segment}", viewer),
        ("DELETE", f"{W}/modules/{segment}", admin),
        ("GET", f"{NODES_PATH}/{segment}", viewer),
        ("GET", f"{NODES_PATH}/{segment}/health", viewer),
        ("GET", f"{W}/deployments/{segment}", viewer),
        ("GET", f"{W}/interfaces/{segment}", viewer),
    ):
        answer = await call(plane.url, method, path, token)
        assert answer.status in (400, 404), (method, path[:80], answer.status, str(answer.body)[:200])
    assert plane.plane.store.audit_log(limit=1) is not None


def test_the_stores_filters_take_hostile_values_as_values(plane: Cluster) -> None:
    """The `Table.matching` readers a filter reaches: each value is a parameter (a quote, a `?` or a
    NUL in SQL text would be a syntax error, or a match of everything)."""
    store = plane.plane.store
    for value in HOSTILE:
        assert store.list_nodes(region=value) == [], value
        assert store.list_interfaces(name=value) == [], value
        assert store.approvals_for(value, value) == [], value
        assert store.list_modules(name=value) == [], value
        assert store.audit_log(subject=value) == [], value


# -- found: a node token's numbers on its own long-poll ------------------------------------------------


@pytest.mark.parametrize("after", ["nan", "inf", "1e400", "NaN", "-nan"])
async def test_a_non_finite_after_on_the_assignment_long_poll_is_a_400(plane: Cluster, after: str) -> None:
    await _register(plane, "edge-own", "us-east")
    token = plane.token("node", "edge-own")
    answer = await call(plane.url, "GET", f"{NODES_PATH}/edge-own/assignment?after={after}&wait=0", token)
    assert answer.status == 400 and answer.body["field"] == "after", answer


async def test_a_nan_wait_on_the_assignment_long_poll_is_refused_not_held_forever(plane: Cluster) -> None:
    node = asyncio.create_task(_play_node(plane, "edge-own", "us-east"))  # healthy: its table settles
    try:
        token = plane.token("node", "edge-own")
        settled: list[int] = []

        async def unchanged() -> bool:
            table = plane.plane.hub.table("edge-own")
            after = table.generation if table is not None else 0
            answer = await call(plane.url, "GET", f"{NODES_PATH}/edge-own/assignment?after={after}&wait=1", token)
            settled[:] = [after]
            return answer.status == 204

        for _ in range(5):  # a table that changed meanwhile answers the poll at once: settle and ask again
            await poll(unchanged, "the node's table to settle")
            path = f"{NODES_PATH}/edge-own/assignment?after={settled[0]}&wait=nan"
            try:
                answer = await asyncio.wait_for(call(plane.url, "GET", path, token), 5)
            except TimeoutError:
                raise AssertionError("wait=nan held the long-poll past every cap") from None
            if answer.status != 200:
                break
        assert answer.status == 400 and answer.body["field"] == "wait", answer
    finally:
        node.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await node


# -- found: an interface approval the Git source will never count --------------------------------------


async def test_an_interface_approval_of_no_package_version_commits_nothing(
    signed: tuple[Cluster, People], tmp_path: Path
) -> None:
    cluster, _ = signed
    head = _head(tmp_path)
    admin = cluster.token("admin", "alice@example.com")
    answer = await call(cluster.url, "POST", f"{W}/interfaces/example:greeter@2.0.0,calc@1.1.0/approve", admin)
    assert answer.status == 400, answer
    assert _head(tmp_path) == head


async def test_an_interface_approval_cannot_smuggle_a_trailer(signed: tuple[Cluster, People], tmp_path: Path) -> None:
    cluster, _ = signed
    head = _head(tmp_path)
    admin = cluster.token("admin", "alice@example.com")
    for ident in ("example:greeter@2.0.0%0A", "example:greeter@x%0AHotswap-Adopt:%20y", "example:greeter@2.0.0%0D"):
        answer = await call(cluster.url, "POST", f"{W}/interfaces/{ident}/approve", admin)
        assert answer.status in (400, 409), (ident, answer)
    assert _head(tmp_path) == head
    assert _approvals_audited(cluster) == []


# -- a local shell without a token ---------------------------------------------------------------------


def test_the_keys_a_token_is_made_with_are_for_the_plane_s_user_only(plane: Cluster) -> None:
    auth = plane.plane.options.data_dir / "auth"
    for name in ("hs256.secret", "signing-key.pem"):
        assert (auth / name).stat().st_mode & 0o077 == 0, name
    secret = (auth / "hs256.secret").read_text().strip().encode()
    for path in plane.plane.options.data_dir.rglob("*"):
        if path.is_file() and path.parent != auth and path.stat().st_mode & 0o044:
            assert secret not in path.read_bytes(), path  # no readable copy of the HMAC secret


# -- rate limits still find the routes by their names ----------------------------------------------------


async def test_every_rate_limited_route_name_is_a_route_the_app_serves(plane: Cluster) -> None:
    """The buckets are looked up by the route's canonical path: a route renamed or registered under
    another spelling would fall to `other`, which has no limit."""
    assert set(BUCKETS) <= set(_served(plane)), sorted(set(BUCKETS) - set(_served(plane)))


@pytest.mark.parametrize(
    "path", [f"{W}/deployments/nope-v1.0.0/execute", f"{W}/interfaces/nope/approve", f"{W}/deployments"]
)
async def test_approvals_and_requests_are_still_rate_limited(plane: Cluster, path: str) -> None:
    admin = plane.token("admin", "flooder")
    limit = plane.plane.options.rate_limits.deployment
    assert limit is not None
    body = {"module": "nope", "version": "1.0.0"} if path.endswith("deployments") else None
    statuses = [(await call(plane.url, "POST", path, admin, json=body)).status for _ in range(limit + 1)]
    assert 429 not in statuses[:limit] and statuses[-1] == 429, statuses
    other = await call(plane.url, "POST", path, plane.token("admin", "someone-else"), json=body)
    assert other.status != 429  # per user
