"""Two control-plane replicas on one PostgreSQL spend one rate-limit budget: a user's requests,
spread over both and sent at once, are accepted exactly as many times as the budget allows."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from reconciler.api.base import DEPS
from reconciler.api.security import RateLimits, SharedRateLimiter
from reconciler.server import ControlPlane
from tests.api.conftest import call
from tests.e2e.cluster import FleetRepo
from tests.ha.replicas import replica_options, shared_key

BUDGET = 15
# A day's window: over the test's seconds the bucket refills a negligible fraction of one token.
LIMITS = RateLimits(deployment=BUDGET, window_seconds=86_400.0)


async def test_two_replicas_enforce_one_rate_limit_between_them(tmp_path: Path, database_url: str) -> None:
    repo = FleetRepo(tmp_path / "repo")
    key = shared_key(tmp_path)
    blobs = str(tmp_path / "blobs")
    planes = []
    try:
        for name in ("a", "b"):
            options = replica_options(repo, tmp_path / name, database_url, blobs, key)
            plane = ControlPlane(replace(options, rate_limits=LIMITS))
            planes.append(plane)
            await plane.start()
        assert all(isinstance(p.app[DEPS].limiter, SharedRateLimiter) for p in planes)
        token = planes[0].mint("olga", "operator")
        path = "/api/v1/wasm/deployments/nope/rollback"
        answers = await asyncio.gather(*(call(planes[i % 2].url, "POST", path, token) for i in range(2 * BUDGET)))
        statuses = [a.status for a in answers]
        assert statuses.count(404) == BUDGET and statuses.count(429) == BUDGET
        other = await call(planes[1].url, "POST", path, planes[1].mint("otto", "operator"))
        assert other.status == 404  # per user
    finally:
        for plane in planes:
            await plane.stop()
