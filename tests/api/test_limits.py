"""Rate limits: per user and per endpoint class, with the spec's production numbers by default; a
caller over budget gets 429 with Retry-After and gets in again once the bucket refills (the clock
is injected, so nothing sleeps)."""

from __future__ import annotations

import pytest

from reconciler.api.security import RateLimiter, RateLimits, parse_rate_limit
from tests.api.conftest import call
from tests.e2e.cluster import Cluster


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_defaults_are_the_spec_production_numbers() -> None:
    limits = RateLimits()
    assert (limits.registration, limits.deployment, limits.execution, limits.other) == (10, 20, 1000, None)
    assert RateLimits().scaled(100).deployment == 2000


def test_limit_reached_then_recovered() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(), clock)
    assert all(limiter.take("alice", "registration") is None for _ in range(10))
    wait = limiter.take("alice", "registration")
    assert wait is not None and wait == pytest.approx(6.0)  # one request per 6 s refills
    assert limiter.take("bob", "registration") is None  # per user
    assert limiter.take("alice", "deployment") is None  # per endpoint class
    assert limiter.take("alice", "other") is None  # unlimited by default
    clock.now += 6.0
    assert limiter.take("alice", "registration") is None
    assert limiter.take("alice", "registration") is not None
    clock.now += 60.0
    assert all(limiter.take("alice", "registration") is None for _ in range(10))


def test_rate_limit_flags() -> None:
    assert parse_rate_limit("deployment=50") == ("deployment", 50)
    assert parse_rate_limit("other=off") == ("other", None)
    for bad in ("deployment", "deployment=x", "deployment=0"):
        with pytest.raises(ValueError):
            parse_rate_limit(bad)
    with pytest.raises(ValueError, match="unknown rate limit"):
        RateLimits().with_overrides({"uploads": 3})


async def test_the_api_answers_429_with_retry_after_and_recovers(plane: Cluster) -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimits(deployment=2), clock)
    object.__setattr__(_deps(plane), "limiter", limiter)
    token = plane.token("operator", subject="olga")
    path = "/api/v1/wasm/deployments/nope/rollback"
    assert [(await call(plane.url, "POST", path, token)).status for _ in range(2)] == [404, 404]
    refused = await call(plane.url, "POST", path, token)
    assert refused.status == 429 and refused.headers["Retry-After"] == "30"
    assert "olga" in refused.body["message"]
    other = await call(plane.url, "POST", path, plane.token("operator", subject="otto"))
    assert other.status == 404
    clock.now += 30
    assert (await call(plane.url, "POST", path, token)).status == 404


def _deps(plane: Cluster) -> object:
    from reconciler.api.base import DEPS

    return plane.plane.app[DEPS]
