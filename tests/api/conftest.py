"""Fixtures for the API tests: a real control plane (in the test's loop) on a copy of fleet-example,
and a client that calls it with a token for a role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.cluster import Cluster, start_cluster, stop_cluster


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


async def call(url: str, method: str, path: str, token: str | None = None, **kwargs: Any) -> Answer:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session, session.request(method, url + path, headers=headers, **kwargs) as r:
        raw = await r.read()
        try:
            body = await r.json(content_type=None) if raw else None
        except ValueError:
            body = raw
        return Answer(r.status, body, dict(r.headers))


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Cluster]:
    """The control plane alone (no edge nodes), following a fleet repository with fleet-example."""
    cluster = await start_cluster(tmp_path, [])
    try:
        yield cluster
    finally:
        await stop_cluster(cluster)
