"""A control plane in its own process (`python -m hotswap serve`), for tests that kill it.

`RemotePlane` starts `hotswap serve` on a fixed port with a data dir, mints tokens with the keys it
will use (made in the data dir before it starts), reads its state through the HTTP API, and can be
SIGKILLed and started again on the same port and data. The edge nodes of such a test point at its
URL; tests.e2e.cluster's load generator runs against them through `node_urls()` and `edge_headers()`.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from reconciler.api.auth import EDGE_AUDIENCE, AuthOptions, TokenAuthority
from tests.e2e.cluster import EdgeProcess, FleetRepo, kill_process, poll, spawn_edge, stop_process
from tests.services import free_port


@dataclass
class RemotePlane:
    repo: FleetRepo
    data: Path
    heartbeat: float = 0.25
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    nodes: list[EdgeProcess] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)  # node id -> URL, as last read

    def __post_init__(self) -> None:
        self.control = self.data / "control"
        self.authority = TokenAuthority.load(AuthOptions(), self.control)  # the keys serve will load

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.authority.mint(f'test-{role}', (role,))}"}

    def edge_headers(self, role: str = "developer") -> dict[str, str]:
        token = self.authority.mint(f"test-{role}", (role,), audience=EDGE_AUDIENCE)
        return {"Authorization": f"Bearer {token}"}

    def node_urls(self) -> dict[str, str]:
        return dict(self.urls)

    async def start(self) -> None:
        with (self.data / "serve.log").open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "hotswap", "serve", "--repo", str(self.repo.root), "--path", "fleet",
                    "--data-dir", str(self.control), "--port", str(self.port), "--interval", "0.5",
                    "--heartbeat-seconds", str(self.heartbeat), "--log-level", "WARNING",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        await poll(self._answers, f"hotswap serve on port {self.port}", timeout=30)

    async def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"hotswap serve exited: {(self.data / 'serve.log').read_text()[-2000:]}")
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{self.url}/health") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            kill_process(self.process)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.process is not None:
            stop_process(self.process)

    def start_node(self, node_id: str, region: str) -> EdgeProcess:
        node = spawn_edge(self.url, self.authority.mint(node_id, ("node",)), node_id, region, self.data)
        self.nodes.append(node)
        return node

    async def get(self, path: str) -> Any:
        """The JSON at `path` of the API (None for a 404)."""
        async with (
            aiohttp.ClientSession(headers=self.headers()) as session,
            session.get(f"{self.url}{path}") as response,
        ):
            if response.status == 404:
                return None
            assert response.status == 200, f"GET {path}: {response.status} {await response.text()}"
            return await response.json()

    async def nodes_json(self) -> list[dict[str, Any]]:
        body = await self.get("/api/v1/wasm/nodes")
        nodes: list[dict[str, Any]] = body["nodes"]
        self.urls = {n["id"]: n["url"] for n in nodes if n["status"] == "Healthy"}
        return nodes
