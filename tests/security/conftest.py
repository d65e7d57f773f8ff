"""The cluster the attacks run against: a real control plane (in the test's loop) and one real edge
node in us-east that serves calc 1.0.0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster, ready_cluster

NODE = "edge-us-east-1"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with ready_cluster(tmp_path, [(NODE, "us-east")]) as cluster:
        yield cluster
