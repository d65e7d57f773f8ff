"""How often a node's agent tries again after a failure: doubling, at most MAX_BACKOFF_SECONDS, and
never longer than one heartbeat period, so a control plane whose store is restarting (it answers 503
and counts each attempt as the node speaking) never sees the node silent long enough to call it
Unhealthy."""

from __future__ import annotations

from pathlib import Path

from edge.agent import MAX_BACKOFF_SECONDS, Agent
from edge.nodeapi import Registration
from edge.router import Router
from edge.runtime import Runtime
from edge.standalone import DirectorySource


def delays(tmp: Path, heartbeat_seconds: float, n: int) -> list[float]:
    registration = Registration(id="edge-1", region="us-east", hostname="localhost", url="http://127.0.0.1:1")
    with Runtime() as runtime:
        router = Router(runtime, DirectorySource(tmp))
        agent = Agent("http://127.0.0.1:1", registration, router, heartbeat_seconds=heartbeat_seconds)
        out, backoff = [], 0.1
        for _ in range(n):
            backoff = agent.next_backoff(backoff)
            out.append(backoff)
        return out


def test_retries_come_at_least_once_a_heartbeat_period(tmp_path: Path) -> None:
    assert delays(tmp_path, 0.25, 5) == [0.2, 0.25, 0.25, 0.25, 0.25]  # three missed heartbeats: never
    assert max(delays(tmp_path, 1.0, 10)) == 1.0


def test_retries_back_off_to_the_cap_with_a_long_heartbeat_period(tmp_path: Path) -> None:
    assert delays(tmp_path, 30.0, 8) == [
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        MAX_BACKOFF_SECONDS,
        MAX_BACKOFF_SECONDS,
        MAX_BACKOFF_SECONDS,
    ]
