"""Control-plane replicas on one PostgreSQL for the high-availability tests: in-process `ControlPlane`s
(their code is measured) and `hotswap serve` processes (to be killed with SIGKILL). They share what
production replicas share: the database, the blob store (S3, or one directory), and the key that
signs tokens, so a node registered with one replica is accepted by the others.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from reconciler.api.auth import AuthOptions, load_or_create_signing_key
from reconciler.apply.controller import Controller
from reconciler.apply.leader import Replicas
from reconciler.apply.nodes import NodeHub
from reconciler.apply.registry import Registry
from reconciler.apply.rollouts import RolloutBook, record_json
from reconciler.server import ControlPlane, ServeOptions
from reconciler.store.blobs import open_blob_store
from reconciler.store.records import RolloutStepRecord
from reconciler.store.state import StateStore, open_state_store
from tests.e2e.cluster import Cluster, FleetRepo, kill_process, poll, stop_process
from tests.services import free_port


class NoRevision:
    """A Git source with nothing in it yet: a controller that only judges and plans nodes."""

    latest = None

    def fleet_at(self, sha: str) -> None:
        return None


def leading_controller(store: StateStore, hub: NodeHub, replicas: Replicas, blobs: Path) -> Controller:
    """A controller over `hub` that leads among `replicas` (as `Replicas.run` sets one up before it
    leads), with an empty source and a registry whose blobs are under `blobs`."""
    controller = Controller(
        store=store,
        registry=Registry(store, open_blob_store(None, blobs)),
        source=NoRevision(),
        hub=hub,
        role=replicas.role,
        before_pass=replicas.before_pass,
    )
    replicas._controller = controller  # what run(controller) does before it leads
    return controller


def shared_key(tmp: Path) -> Path:
    path = tmp / "signing-key.pem"
    load_or_create_signing_key(path)
    return path


def replica_options(repo: FleetRepo, data: Path, database_url: str, blob_url: str, key: Path) -> ServeOptions:
    return ServeOptions(
        repo=str(repo.root),
        path="fleet",
        data_dir=data,
        database_url=database_url,
        blob_url=blob_url,
        port=0,
        interval=0.5,
        heartbeat_seconds=0.25,
        auth=AuthOptions(private_key=key),
    )


async def start_replica(repo: FleetRepo, data: Path, database_url: str, blob_url: str, key: Path) -> ControlPlane:
    plane = ControlPlane(replica_options(repo, data, database_url, blob_url, key))
    await plane.start()
    return plane


@dataclass
class ServeProcess:
    """`hotswap serve` in a process of its own."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        kill_process(self.process)

    def stop(self) -> None:
        stop_process(self.process)


def spawn_replica(repo: FleetRepo, data: Path, database_url: str, blob_url: str, key: Path) -> ServeProcess:
    port = free_port()
    data.mkdir(parents=True, exist_ok=True)
    log = data / "serve.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "hotswap", "serve", "--repo", str(repo.root), "--path", "fleet",
                "--data-dir", str(data), "--database-url", database_url, "--blob-url", blob_url, "--port", str(port),
                "--jwt-private-key", str(key), "--interval", "0.5", "--heartbeat-seconds", "0.25",
                "--log-level", "WARNING",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    return ServeProcess(f"http://127.0.0.1:{port}", process, log)


async def status_of(url: str, token: str) -> dict[str, Any] | None:
    """GET /api/v1/wasm/status, or None while the replica does not answer."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"{url}/api/v1/wasm/status", headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            if response.status != 200:
                return None
            body: dict[str, Any] = await response.json()
            return body
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_leader(url: str, token: str, what: str) -> None:
    async def leads() -> bool:
        status = await status_of(url, token)
        return status is not None and status["leader"] is True

    await poll(leads, what)


def step_history(database_url: str, module: str, version: str) -> tuple[dict[str, Any], list[RolloutStepRecord]]:
    """The stored rollout of `module` to `version` as a fresh rollout book reads it (its record, with
    the history it keeps) and the store's step history."""
    store = open_state_store(database_url=database_url)
    try:
        stored = [r for r in RolloutBook(store).records() if r.module == module and r.target.version == version]
        assert len(stored) == 1, f"one rollout to {module}@{version} expected: {stored}"
        return record_json(stored[0]), store.rollout_steps(stored[0].id)
    finally:
        store.close()


def assert_no_step_twice(record_history: list[dict[str, Any]], steps: list[RolloutStepRecord]) -> None:
    """No step passed twice in the record's history, and the store's step history holds each of the
    record's lines exactly once."""
    passed = [(h["step"], h.get("region")) for h in record_history if h["outcome"] == "Passed"]
    assert len(passed) == len(set(passed)), f"a step passed twice: {record_history}"
    lines = Counter((h["step"], h["outcome"], round(h["at"], 3)) for h in record_history)
    stored = Counter((s.step, s.event, round(s.at.timestamp(), 3)) for s in steps)
    assert stored == lines, f"the store's step history differs from the record's: {stored} != {lines}"


@dataclass
class Pair:
    repo: FleetRepo
    leader: ControlPlane
    follower: ControlPlane
    cluster: Cluster  # nodes registered with the follower


@contextlib.asynccontextmanager
async def replica_pair(tmp_path: Path, database_url: str, node: str) -> AsyncIterator[Pair]:
    """A leader, and a follower with `node` registered to it and serving, on one PostgreSQL."""
    repo = FleetRepo(tmp_path / "repo")
    key = shared_key(tmp_path)
    blobs = str(tmp_path / "blobs")  # one directory stands in for the S3 bucket replicas share
    leader = await start_replica(repo, tmp_path / "a", database_url, blobs, key)
    follower: ControlPlane | None = None
    cluster: Cluster | None = None
    try:
        await poll(lambda: leader.controller.leader, "the first replica to lead")
        follower = await start_replica(repo, tmp_path / "b", database_url, blobs, key)
        data = tmp_path / "data"
        data.mkdir()
        cluster = Cluster(repo, follower, data)
        cluster.start_node(node, "us-east")
        await cluster.wait_ready(1)
        await cluster.wait_all_serving("greeter", "1.1.0", [node])
        yield Pair(repo, leader, follower, cluster)
    finally:
        if cluster is not None:
            for started in cluster.nodes:
                started.stop()
        for plane in (follower, leader):
            if plane is not None:
                await plane.stop()
