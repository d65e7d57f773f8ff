"""The cluster the attacks run against: a real control plane (in the test's loop) and one real edge
node in us-east that serves calc 1.0.0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster, start_cluster, stop_cluster

NODE = "edge-us-east-1"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path, [(NODE, "us-east")])
    try:
        await cluster.wait_ready(1)
        await cluster.wait_all_serving("calc", "1.0.0", [NODE])
        yield cluster
    finally:
        await stop_cluster(cluster)
