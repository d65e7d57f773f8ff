"""`GET /api/v1/wasm/diff?ref=` on a real control plane with nodes: a branch that moves calc to 1.1.0
lists a rollout and the tables it would change (the same lines as `hotswap diff`), the followed
branch's head changes nothing, a tag and an abbreviated SHA resolve, an unknown ref is 404, a broken
fleet is 422 naming the file, and nothing is applied."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll
from tests.git.gitutil import git


async def diff(cluster: Cluster, ref: str | None = None, role: str = "viewer") -> tuple[int, Any]:
    path = "/api/v1/wasm/diff" + (f"?ref={ref}" if ref is not None else "")
    answer = await call(cluster.url, "GET", path, cluster.token(role))
    return answer.status, answer.body


async def test_a_branch_that_moves_a_version_lists_a_rollout(plane_with_nodes: Cluster) -> None:
    cluster = plane_with_nodes
    await cluster.wait_all_serving("calc", "1.0.0", ["edge-us-east-1", "edge-eu-central-1"])
    repo = cluster.repo
    git(repo.root, "checkout", "-q", "-b", "calc-next")
    sha = repo.set_module("calc", "1.1.0", "calc-1.1.0.wat")
    git(repo.root, "checkout", "-q", "main")
    status, body = await diff(cluster, "calc-next")
    assert status == 200, body
    assert body["ref"] == "calc-next" and body["sha"] == sha
    assert body["message"] == "calc 1.1.0" and body["author"]
    assert body["verified"] is False and body["reason"]  # no trust root signs these commits
    assert body["signer"] is None
    starts = [a for a in body["actions"] if a["kind"] == "startRollout"]
    assert [(a["module"], a["from"], a["to"]) for a in starts] == [("calc", "1.0.0", "1.1.0")]
    assert starts[0]["strategy"] and starts[0]["text"]
    assert body["lines"] and any(line.startswith("rollout calc:") for line in body["lines"])
    assert body["changes"] == len(body["actions"]) + sum(len(t["changes"]) for t in body["tables"])
    for table in body["tables"]:
        for change in table["changes"]:
            assert set(change) == {"module", "version", "from", "to"}
    # nothing was applied: calc's rollout has not started and main is still followed
    assert cluster.latest("calc") is None or cluster.latest("calc").target.version == "1.0.0"
    short = await diff(cluster, sha[:10])
    assert short[0] == 200 and short[1]["sha"] == sha
    git(repo.root, "tag", "v-next", sha)
    tagged = await diff(cluster, "v-next")
    assert tagged[0] == 200 and tagged[1]["sha"] == sha


async def test_the_followed_head_changes_nothing(plane_with_nodes: Cluster) -> None:
    cluster = plane_with_nodes
    await cluster.wait_all_serving("calc", "1.0.0", ["edge-us-east-1", "edge-eu-central-1"])
    await poll(lambda: cluster.plane.controller.state.applied_revision is not None, "an applied revision")

    async def settled() -> bool:
        status, body = await diff(cluster)
        return status == 200 and body["changes"] == 0

    await poll(settled, "the head's diff to be empty once the plane runs it")
    status, body = await diff(cluster)
    assert status == 200 and body["ref"] == "main" and body["lines"] == [] and body["actions"] == []


async def test_an_unknown_ref_is_404(plane: Cluster) -> None:
    for ref in ("no-such-branch", "deadbeefdeadbeef", "0" * 40):
        status, body = await diff(plane, ref)
        assert status == 404, (ref, body)
        assert ref in body["message"]


async def test_a_broken_fleet_is_422_naming_the_file(plane: Cluster) -> None:
    repo = plane.repo
    git(repo.root, "checkout", "-q", "-b", "broken")
    repo.edit("modules/calc.yaml", "  version: 1.0.0", "  version: not-a-version")
    repo.commit("break calc")
    git(repo.root, "checkout", "-q", "main")
    status, body = await diff(plane, "broken")
    assert status == 422, body
    assert body["error"] == "invalid_fleet"
    files = [p["file"] for p in body["problems"]]
    assert "modules/calc.yaml" in files, body
    first = next(p for p in body["problems"] if p["file"] == "modules/calc.yaml")
    assert first["line"] > 0 and first["field"]
    assert "modules/calc.yaml" in body["message"]
