"""Git trust people can live with, end to end: real edge node processes, real SSH keys, a trust file
with `requireSignedCommits: true`, and a control plane that follows a bare repository people push to.

- an unsigned commit is held; the README runbook's signed `git revert` moves past it and the next
  signed change rolls out;
- an approval commit signed by an unknown key is held; an admin's `Hotswap-Adopt:` commit moves
  past it (the approval still counts for nothing) and the next signed change rolls out;
- an approval through the API is signed by the control plane for the caller: the rollout
  proceeds and the audit names the caller; two admins meet `count: 2`, one admin twice does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.spec.approvals import ApprovalRule, evaluate
from tests.api.conftest import call
from tests.e2e.cluster import Cluster, poll, stop_cluster
from tests.e2e.signed import People, push, start_signed_cluster, use_key
from tests.git.gitutil import git

REGIONS = [("edge-us-east-1", "us-east"), ("edge-eu-central-1", "eu-central")]
NODES = [n for n, _ in REGIONS]


async def source(cluster: Cluster) -> dict[str, Any]:
    answer = await call(cluster.url, "GET", "/api/v1/wasm/source", cluster.token("viewer"))
    assert answer.status == 200, answer.body
    return dict(answer.body)


def stalled(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status["conditions"] if c["type"] == "Stalled" and c["status"] == "True"), None)


async def wait_stalled_on(cluster: Cluster, sha: str) -> dict[str, Any]:
    async def held() -> bool:
        status = await source(cluster)
        return status["observedRevision"] == sha and stalled(status) is not None

    await poll(held, f"the source to hold {sha[:12]}")
    status = await source(cluster)
    condition = stalled(status)
    assert condition is not None and condition["reason"] == "UnverifiedCommit"
    assert f"unverified commit {sha[:12]}" in condition["message"]
    assert status["verified"] is False  # agrees with the conditions
    return status


async def wait_applied(cluster: Cluster, sha: str) -> dict[str, Any]:
    async def taken() -> bool:
        status = await source(cluster)
        return status["lastAppliedRevision"] == sha and cluster.plane.controller.state.revision == sha

    await poll(taken, f"the source to apply {sha[:12]}")
    status = await source(cluster)
    assert status["verified"] is True and stalled(status) is None
    return status


def bump_calc(cluster: Cluster, version: str = "1.1.0") -> None:
    cluster.repo.edit("modules/calc.yaml", "calc-1.0.0.wat", f"calc-{version}.wat")
    cluster.repo.edit("modules/calc.yaml", "version: 1.0.0", f"version: {version}")


async def roll_out_signed_calc(cluster: Cluster, people: People) -> None:
    """The source follows the branch again: bob's signed bump of calc rolls out to every node."""
    bump_calc(cluster)
    cluster.repo.commit("calc 1.1.0", key=people.bob.private)
    push(cluster.repo)
    record = await cluster.wait_phase("calc", "1.1.0", ["Promoted", "RolledBack"])
    assert record.phase.value == "Promoted", record
    await cluster.wait_all_serving("calc", "1.1.0", NODES)


@pytest.fixture
async def signed(tmp_path: Path) -> AsyncIterator[tuple[Cluster, People]]:
    cluster, people = await start_signed_cluster(tmp_path, REGIONS)
    try:
        await cluster.wait_ready(len(REGIONS))
        await cluster.wait_all_serving("calc", "1.0.0", NODES)
        yield cluster, people
    finally:
        await stop_cluster(cluster)


async def test_an_unsigned_commit_then_the_runbooks_signed_revert_applies_again(
    signed: tuple[Cluster, People],
) -> None:
    cluster, people = signed
    repo = cluster.repo
    verified = (await source(cluster))["lastAppliedRevision"]
    bump_calc(cluster, "1.2.0")
    repo.commit("calc 1.2.0, unsigned")
    bad = push(repo)
    await wait_stalled_on(cluster, bad)
    assert cluster.latest("calc").target.version == "1.0.0"  # nothing of it is applied

    # The runbook, as written: git revert --no-edit -S <sha> && git push
    use_key(repo, people.bob)
    git(repo.root, "revert", "--no-edit", "-S", bad)
    revert = push(repo)
    status = await wait_applied(cluster, revert)
    assert any(f"restores the tree of verified commit {verified[:12]}" in e for e in status["events"])
    [line] = [a for a in cluster.plane.store.audit_log(subject=revert) if a.action == "source.revert"]
    assert line.actor == "bob@example.com" and line.detail["covered"] == [bad]
    assert cluster.latest("calc").target.version == "1.0.0"
    await roll_out_signed_calc(cluster, people)


async def test_an_unknown_keys_approval_then_an_admins_adoption_applies(signed: tuple[Cluster, People]) -> None:
    cluster, people = signed
    repo = cluster.repo
    repo.commit("approve calc@1.1.0", key=people.mallory.private, trailers=["Hotswap-Approve: calc@1.1.0"])
    bad = push(repo)
    status = await wait_stalled_on(cluster, bad)
    assert f"Hotswap-Adopt: {bad}" in str(stalled(status))  # the message says what to write

    # The runbook, as written, by an admin:
    # git commit --allow-empty -S -m "adopt <sha>" --trailer "Hotswap-Adopt: <sha>" && git push
    use_key(repo, people.alice)
    git(repo.root, "commit", "--allow-empty", "-S", "-m", f"adopt {bad[:12]}", "--trailer", f"Hotswap-Adopt: {bad}")
    adoption = push(repo)
    status = await wait_applied(cluster, adoption)
    assert any(f"alice@example.com adopted unverified {bad[:12]}" in e for e in status["events"])

    def adopted() -> list[Any]:  # the audit line is written after the revision is taken: wait for it
        return [a for a in cluster.plane.store.audit_log(subject=adoption) if a.action == "source.adopt"]

    await poll(lambda: bool(adopted()), "the adoption's audit line")
    [line] = adopted()
    assert line.actor == "alice@example.com" and line.detail["covered"] == [bad]
    # Adopting the commit does not make mallory's approval count.
    audit = cluster.plane.store.audit_log(subject="calc@1.1.0")
    assert [(a.action, a.detail["commit"]) for a in audit] == [("approval.rejected", bad)]
    await roll_out_signed_calc(cluster, people)


async def approve(cluster: Cluster, version: str, principal: str) -> Any:
    token = cluster.token("admin", principal)
    return await call(cluster.url, "POST", f"/api/v1/wasm/deployments/calc-v{version}/execute", token)


async def test_api_approvals_count_once_per_principal_and_two_admins_meet_count_2(tmp_path: Path) -> None:
    cluster, people = await start_signed_cluster(tmp_path, REGIONS, approvals="{rollouts: {roles: [admin], count: 2}}")
    try:
        await cluster.wait_ready(len(REGIONS))
        await cluster.wait_all_serving("calc", "1.0.0", NODES)
        stable = await approve(cluster, "1.0.0", "alice@example.com")
        assert stable.status == 409 and stable.body["error"] == "not_waiting", stable.body
        assert "calc@1.0.0 is not waiting for approval" in stable.body["message"]

        bump_calc(cluster)
        cluster.repo.commit("calc 1.1.0", key=people.bob.private)
        push(cluster.repo)
        await cluster.wait_phase("calc", "1.1.0", ["WaitingApproval"])

        first = await approve(cluster, "1.1.0", "alice@example.com")
        assert first.status == 202 and first.body["approvedBy"] == "alice@example.com", first.body
        await wait_applied(cluster, first.body["commit"])  # the control plane's commit verifies
        again = await approve(cluster, "1.1.0", "alice@example.com")
        assert again.status == 409 and again.body["error"] == "already_approved", again.body
        controller = cluster.plane.controller
        await controller.wait_for_pass(controller.state.passes, timeout=10)
        assert cluster.latest("calc").phase.value == "WaitingApproval"
        latest = cluster.plane.source.latest
        assert latest is not None
        counted = evaluate(ApprovalRule.of(["admin"], 2), "calc", "1.1.0", latest.approvals)
        assert counted.approved_by == ("alice@example.com",) and counted.missing == 1

        second = await approve(cluster, "1.1.0", "carol@example.com")
        assert second.status == 202, second.body
        record = await cluster.wait_phase("calc", "1.1.0", ["Promoted", "RolledBack"])
        assert record.phase.value == "Promoted", record
        await cluster.wait_all_serving("calc", "1.1.0", NODES)

        # The audit names each caller: the request, and the approval the Git source found.
        audit = cluster.plane.store.audit_log(subject="calc@1.1.0")
        assert sorted((a.actor, a.action) for a in audit) == [
            ("alice@example.com", "approval.found"),
            ("alice@example.com", "deployment.approve"),
            ("carol@example.com", "approval.found"),
            ("carol@example.com", "deployment.approve"),
        ]
        assert {a.detail.get("via") for a in audit if a.action == "approval.found"} == {"api"}
        remote = tmp_path / "fleet.git"  # API writes go there, never into the people's checkout
        message = git(remote, "log", "-1", "--format=%B", second.body["commit"])
        assert "Hotswap-Approve: calc@1.1.0" in message and "Hotswap-Approved-By: carol@example.com" in message
        assert (await source(cluster))["verified"] is True
    finally:
        await stop_cluster(cluster)


async def test_an_api_approval_with_an_untrusted_control_plane_is_refused_before_any_commit(tmp_path: Path) -> None:
    cluster, _ = await start_signed_cluster(tmp_path, [], control_plane_trusted=False)
    try:
        await poll(lambda: cluster.plane.source.latest is not None, "the first revision")
        remote = tmp_path / "fleet.git"
        head = git(remote, "rev-parse", "main").strip()
        answer = await approve(cluster, "1.1.0", "alice@example.com")
        assert answer.status == 409 and answer.body["error"] == "untrusted_writer", answer.body
        assert "actsFor: [admin, developer, operator]" in answer.body["message"]
        assert cluster.plane.writer.public_key.split()[1] in answer.body["message"]  # the line to add
        stranger = await approve(cluster, "1.1.0", "nobody")
        assert stranger.status == 409
        assert git(remote, "rev-parse", "main").strip() == head  # nothing was committed
    finally:
        await stop_cluster(cluster)
