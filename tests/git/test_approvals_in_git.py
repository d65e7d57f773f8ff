"""Approvals found in the tracked branch: signed approval commits and signed merge commits."""

from __future__ import annotations

from reconciler.gitsource.source import GitSource, Revision
from reconciler.spec.approvals import ApprovalRule, evaluate
from tests.git.conftest import Keys, seeded_repo, source_for, standard_trust
from tests.git.gitutil import Repo, Workspace, module_yaml

ADMIN_1 = ApprovalRule.of(["admin"], 1)
ADMIN_2 = ApprovalRule.of(["admin"], 2)


def synced(source: GitSource) -> Revision:
    status = source.sync()
    assert status.ready, status.conditions
    assert source.latest is not None
    return source.latest


def bump_on_branch(repo: Repo, version: str, key: object = None) -> None:
    repo.checkout("bump", new=True)
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", version))
    repo.commit(f"greeter {version}", key=key)  # type: ignore[arg-type]
    repo.checkout("main")


def test_signed_approval_by_admin_satisfies_the_rule(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    repo.approve("greeter@1.1.0", keys.alice)
    revision = synced(source_for(ws, repo.path, standard_trust(keys)))
    result = evaluate(ADMIN_1, "greeter", "1.1.0", revision.approvals, revision.rejected_approvals)
    assert result.satisfied and result.approved_by == ("alice@example.com",)
    assert revision.approvals[0].via == "commit"
    assert not evaluate(ADMIN_1, "greeter", "1.2.0", revision.approvals).satisfied


def test_signed_approval_by_the_wrong_role_counts_for_nothing_and_is_reported(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    repo.approve("greeter@1.1.0", keys.bob)
    revision = synced(source_for(ws, repo.path, standard_trust(keys)))
    result = evaluate(ADMIN_1, "greeter", "1.1.0", revision.approvals, revision.rejected_approvals)
    assert not result.satisfied and result.missing == 1
    assert [r.claimed for r in result.ignored] == ["bob@example.com"]
    assert "developer" in result.ignored[0].reason


def test_approval_by_unknown_key_or_unsigned_counts_for_nothing(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, require_signed=False)
    mallory = repo.approve("greeter@1.1.0", keys.mallory)
    unsigned = repo.approve("greeter@1.1.0", None)
    revision = synced(source_for(ws, repo.path, standard_trust(keys)))
    assert revision.approvals == ()
    rejected = {r.commit: r for r in revision.rejected_approvals}
    assert "no principal in the trust root holds" in rejected[mallory].reason
    assert "not signed" in rejected[unsigned].reason
    result = evaluate(ADMIN_1, "greeter", "1.1.0", revision.approvals, revision.rejected_approvals)
    assert not result.satisfied and len(result.ignored) == 2


def test_two_approvals_required_and_only_one_given(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, count=2)
    repo.approve("greeter@1.1.0", keys.alice)
    repo.approve("greeter@1.1.0", keys.alice)  # the same principal twice is still one
    source = source_for(ws, repo.path, standard_trust(keys))
    revision = synced(source)
    result = evaluate(ADMIN_2, "greeter", "1.1.0", revision.approvals)
    assert not result.satisfied and result.missing == 1
    repo.approve("greeter@1.1.0", keys.carol)
    revision = synced(source)
    result = evaluate(ADMIN_2, "greeter", "1.1.0", revision.approvals)
    assert result.satisfied and result.approved_by == ("alice@example.com", "carol@example.com")


def test_signed_merge_by_admin_approves_the_versions_it_merged(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    bump_on_branch(repo, "1.1.0", keys.bob)
    merge = repo.merge("bump", key=keys.alice)
    source = source_for(ws, repo.path, standard_trust(keys))
    revision = synced(source)
    assert [(a.target, a.principal, a.via, a.commit) for a in revision.approvals] == [
        ("greeter@1.1.0", "alice@example.com", "merge", merge)
    ]
    assert evaluate(ADMIN_1, "greeter", "1.1.0", revision.approvals).satisfied


def test_merger_signed_merge_approves_through_approved_by_trailers(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    bump_on_branch(repo, "1.1.0", keys.bob)
    repo.merge(
        "bump",
        key=keys.forge,
        trailers=[("Approved-by", "Carol <carol@example.com>"), ("Approved-by", "nobody@example.com")],
    )
    revision = synced(source_for(ws, repo.path, standard_trust(keys)))
    assert [(a.principal, a.via) for a in revision.approvals] == [("carol@example.com", "merge")]
    assert [r.claimed for r in revision.rejected_approvals] == ["nobody@example.com"]
    assert "not a principal" in revision.rejected_approvals[0].reason
    assert evaluate(ADMIN_1, "greeter", "1.1.0", revision.approvals).satisfied


def test_forged_approved_by_on_an_unsigned_merge_is_ignored(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, require_signed=False)
    bump_on_branch(repo, "1.1.0")
    merge = repo.merge("bump", trailers=[("Approved-by", "alice@example.com")])
    revision = synced(source_for(ws, repo.path, standard_trust(keys)))
    assert revision.approvals == ()
    assert [(r.commit, r.claimed) for r in revision.rejected_approvals] == [(merge, "alice@example.com")]
    assert "Approved-by trailers count for nothing" in revision.rejected_approvals[0].reason
    assert not evaluate(ADMIN_1, "greeter", "1.1.0", revision.approvals).satisfied


def test_approved_by_on_a_merge_signed_by_a_non_merger_does_not_count(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, require_signed=False)
    bump_on_branch(repo, "1.1.0")
    repo.merge("bump", key=keys.bob, trailers=[("Approved-by", "alice@example.com")])
    revision = synced(source_for(ws, repo.path, standard_trust(keys)))
    assert [a.principal for a in revision.approvals] == ["bob@example.com"]
    assert not evaluate(ADMIN_1, "greeter", "1.1.0", revision.approvals).satisfied
    assert "merger key" in revision.rejected_approvals[0].reason


def test_merges_do_not_approve_without_the_policy(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, merges_approve=False)
    bump_on_branch(repo, "1.1.0", keys.bob)
    repo.merge("bump", key=keys.alice)
    revision = synced(source_for(ws, repo.path, standard_trust(keys)))
    assert revision.approvals == ()


def test_approvals_accumulate_across_revisions(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    first = repo.approve("greeter@1.1.0", keys.alice)
    source = source_for(ws, repo.path, standard_trust(keys))
    assert [a.commit for a in synced(source).approvals] == [first]
    second = repo.approve("greeter@1.2.0", keys.carol)
    revision = synced(source)
    assert sorted(a.commit for a in revision.approvals) == sorted([first, second])


def test_malformed_approval_trailer_is_reported(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    repo.commit("bad", key=keys.alice, trailers=[("Hotswap-Approve", "Greeter 1.1")], allow_empty=True)
    revision = synced(source_for(ws, repo.path, standard_trust(keys)))
    assert revision.approvals == ()
    assert "is not MODULE@VERSION" in revision.rejected_approvals[0].reason
