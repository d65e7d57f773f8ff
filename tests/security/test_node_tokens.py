"""Attacks with a node token (issue 16, item 1), on a real control plane and real edge nodes.

A process that registers as a node with a node token, and heartbeats whatever it likes, must learn
nothing from the calls the control plane forwards to it that works anywhere else: forwarded tokens
are for that node and that call only, nodes refuse API tokens, and the control plane sends a node
calls only for what it assigned to it, whatever the node claims.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from edge.nodeapi import NODES_PATH
from reconciler.api.auth import EDGE_AUDIENCE
from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll

EXECUTE = "/api/v1/wasm/execute"


class RogueNode:
    """A node of the attacker's: it speaks the node protocol with a real node token, reports what it
    is told to claim, and records every call the control plane forwards to it."""

    def __init__(self, cluster: Cluster, node_id: str, region: str) -> None:
        self.cluster, self.id, self.region = cluster, node_id, region
        self.captured: list[str] = []
        self.claims: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.table: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._headers = {"Authorization": f"Bearer {cluster.plane.mint(node_id, 'node')}"}

    async def _execute(self, request: web.Request) -> web.Response:
        self.captured.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
        body = await request.json()
        return web.json_response({"result": 0, "module": body["module"], "version": "6.6.6", "durationMs": 0})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(EXECUTE, self._execute)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        body = {"id": self.id, "region": self.region, "hostname": "rogue", "url": self.url}
        answer = await call(self.cluster.url, "POST", NODES_PATH, json=body, headers=self._headers)
        assert answer.status in (200, 201), answer.body

    async def heartbeat(self) -> None:
        """Read the table the control plane published for this node, and report it plus the claims."""
        async with aiohttp.ClientSession(headers=self._headers) as session:
            async with session.get(f"{self.cluster.url}{NODES_PATH}/{self.id}/assignment?after=0") as r:
                self.table = (await r.json())["modules"] if r.status == 200 else []
            running = [
                {"module": e["module"], "version": e["version"], "digest": e["digest"], "weight": e["weight"]}
                for e in self.table
            ] + self.claims
            body = {"generation": 1 if self.table else 0, "running": running, "metrics": self.metrics}
            async with session.post(f"{self.cluster.url}{NODES_PATH}/{self.id}/heartbeat", json=body) as r:
                assert r.status == 200, await r.text()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _rogue_serving_calc(cluster: Cluster, region: str) -> RogueNode:
    rogue = RogueNode(cluster, "edge-rogue", region)
    await rogue.start()

    async def assigned() -> bool:
        await rogue.heartbeat()
        return any(e["module"] == "calc" for e in rogue.table)

    await poll(assigned, "calc assigned to the rogue node")
    return rogue


async def test_a_forwarded_call_carries_a_token_for_that_node_only(cluster: Cluster) -> None:
    rogue = await _rogue_serving_calc(cluster, "us-east")
    try:
        admin = cluster.token("admin", "ada")
        body = {"module": "calc", "function": "add", "args": [1, 2]}
        for _ in range(6):  # calls rotate over the candidates: the rogue node gets some
            answer = await call(cluster.url, "POST", EXECUTE, admin, json=body)
            assert answer.status == 200, answer.body
        assert rogue.captured, "the control plane never forwarded a call to the rogue node"
        harvested = rogue.captured[0]
        claims = jwt.decode(harvested, options={"verify_signature": False})
        assert claims["aud"] == "hotswap-node/edge-rogue" and claims["sub"] == "ada"
        assert claims["exp"] - claims["iat"] <= 60
        assert len({jwt.decode(t, options={"verify_signature": False})["jti"] for t in rogue.captured}) == len(
            rogue.captured
        )  # one token per call
        # The harvested token opens nothing: not the API, not another node.
        for method, path in (("GET", "/api/v1/wasm/audit"), ("DELETE", "/api/v1/wasm/nodes/edge-us-east-1")):
            assert (await call(cluster.url, method, path, harvested)).status == 401
        other = cluster.node_urls()["edge-us-east-1"]
        refused = await call(other, "POST", EXECUTE, harvested, json=body)
        assert refused.status == 401 and "audience" in refused.body["message"]
    finally:
        await rogue.stop()


async def test_nodes_refuse_api_tokens_and_the_api_refuses_edge_tokens(cluster: Cluster) -> None:
    node = cluster.node_urls()["edge-us-east-1"]
    body = {"module": "calc", "function": "add", "args": [1, 1]}
    assert (await call(node, "POST", EXECUTE, json=body)).status == 401
    api_token = await call(node, "POST", EXECUTE, cluster.token("admin"), json=body)
    assert api_token.status == 401 and "hotswap token --audience edge" in api_token.body["message"]
    viewer = await call(node, "POST", EXECUTE, cluster.edge_token("viewer"), json=body)
    assert viewer.status == 403 and viewer.body["error"] == "forbidden"
    developer = await call(node, "POST", EXECUTE, cluster.edge_token("developer"), json=body)
    assert developer.status == 200 and developer.body["result"] == 2
    other_node = cluster.plane.mint("dev", "developer", audience="hotswap-node/edge-elsewhere")
    assert (await call(node, "POST", EXECUTE, other_node, json=body)).status == 401
    wrong_issuer = cluster.plane.authority.mint("dev", ["developer"], audience=EDGE_AUDIENCE, issuer="mallory")
    assert (await call(node, "POST", EXECUTE, wrong_issuer, json=body)).status == 401
    # and the API does not take what nodes take
    assert (await call(cluster.url, "GET", "/api/v1/wasm/status", cluster.edge_token("admin"))).status == 401


async def test_a_node_claiming_what_it_was_not_given_gets_no_calls(cluster: Cluster) -> None:
    rogue = RogueNode(cluster, "edge-liar", "nowhere")  # a region the fleet does not use: assigned nothing
    await rogue.start()
    try:
        rogue.claims = [{"module": m, "version": v, "digest": "sha256:" + "0" * 64, "weight": 100}
                        for m, v in (("calc", "1.0.0"), ("greeter", "1.1.0"), ("calc", "6.6.6"))]  # fmt: skip

        async def heard() -> bool:
            await rogue.heartbeat()
            return any(v.id == "edge-liar" and v.running for v in cluster.plane.hub.view())

        rogue.metrics = [{"module": "calc", "version": "1.0.0", "requests": 1000, "errors": 1000}]
        await poll(heard, "the rogue node's claims recorded")
        assert rogue.table == []
        # its made-up traffic of a version it was not given does not count in any analysis
        assert cluster.plane.hub.metrics.since("calc", "1.0.0", "nowhere", 0).requests == 0
        body = {"module": "calc", "function": "add", "args": [1, 2]}
        answers = await asyncio.gather(
            *(call(cluster.url, "POST", EXECUTE, cluster.token(), json=body) for _ in range(6))
        )
        assert all(a.status == 200 and a.headers["X-Hotswap-Node"] == "edge-us-east-1" for a in answers)
        pinned = await call(cluster.url, "POST", EXECUTE, cluster.token(), json={**body, "version": "6.6.6"})
        assert pinned.status == 503 and pinned.body["error"] == "no_node"
        assert rogue.captured == []
    finally:
        await rogue.stop()
