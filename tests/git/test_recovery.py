"""Recovering from unverified commits without rewriting history (reconciler.gitsource.recovery):
a signed revert that restores the last verified fleet, or an adopter's signed `Hotswap-Adopt:`."""

from __future__ import annotations

from reconciler.gitsource.source import GitSource
from reconciler.gitsource.status import Reason, SourceStatus
from tests.git.conftest import Keys, seeded_repo, source_for, standard_trust
from tests.git.gitutil import Repo, Workspace, module_yaml


def stalled_on(status: SourceStatus, sha: str) -> str:
    stalled = status.stalled
    assert stalled is not None and stalled.reason == Reason.UNVERIFIED_COMMIT, status
    assert f"unverified commit {sha[:12]}" in stalled.message
    assert not status.verified  # `verified` agrees with the conditions
    return stalled.message


def greeter_version(source: GitSource) -> str:
    latest = source.latest
    assert latest is not None and latest.fleet is not None
    return latest.fleet.modules["greeter"].spec.version


def unsigned_bump(repo: Repo, version: str = "6.6.6") -> str:
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", version))
    return repo.commit("unsigned bump")


def test_a_signed_revert_moves_past_an_unsigned_commit(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    good = repo.head()
    assert source.sync().verified
    bad = unsigned_bump(repo)
    message = stalled_on(source.sync(), bad)
    assert f"restores the tree of {good[:12]}" in message and f"Hotswap-Adopt: {bad}" in message
    repo.git("-c", f"user.signingkey={keys.bob.private}", "revert", "--no-edit", "-S", bad)
    revert = repo.head()
    status = source.sync()
    assert status.ready and status.verified and status.last_applied_revision == revert
    assert greeter_version(source) == "1.0.0"
    latest = source.latest
    assert latest is not None
    [recovery] = latest.verification.recoveries
    assert (recovery.kind, recovery.principal, recovery.covered) == ("revert", "bob@example.com", (bad,))
    assert any(f"moved past unverified {bad[:12]}" in e for e in status.events)


def test_a_signed_commit_that_keeps_the_unverified_change_does_not_recover(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    bad = unsigned_bump(repo)
    repo.commit("signed, empty", key=keys.alice, allow_empty=True)
    stalled_on(source.sync(), bad)
    assert greeter_version(source) == "1.0.0"


def test_a_revert_under_later_signed_commits_does_not_recover_but_an_adoption_does(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    bad = unsigned_bump(repo)
    repo.write("README.md", "docs, signed\n")
    repo.commit("docs", key=keys.bob)
    repo.git("-c", f"user.signingkey={keys.bob.private}", "revert", "--no-edit", "-S", bad)
    stalled_on(source.sync(), bad)  # the tree is not the verified one: the README changed since
    head = repo.commit("adopt", key=keys.alice, trailers=[("Hotswap-Adopt", bad)], allow_empty=True)
    status = source.sync()
    assert status.ready and status.last_applied_revision == head
    assert greeter_version(source) == "1.0.0"


def test_a_revert_by_a_principal_who_may_not_author_does_not_recover(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    trust = standard_trust(keys).replace("roles: [developer]", "roles: [operator]")  # bob may only approve
    source = source_for(ws, repo.path, trust)
    source.sync()
    bad = repo.commit("unknown key, empty", key=keys.mallory, allow_empty=True)
    repo.commit("signed empty by an operator", key=keys.bob, allow_empty=True)
    stalled_on(source.sync(), bad)
    repo.commit("signed empty by an admin", key=keys.carol, allow_empty=True)
    assert source.sync().ready


def test_an_admin_adopts_an_unknown_key_approval_and_the_approval_still_counts_for_nothing(
    ws: Workspace, keys: Keys
) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    bad = repo.approve("greeter@1.0.0", keys.mallory)
    stalled_on(source.sync(), bad)
    adoption = repo.commit(
        "adopt mallory's commit", key=keys.alice, trailers=[("Hotswap-Adopt", bad)], allow_empty=True
    )
    status = source.sync()
    assert status.ready and status.verified and status.last_applied_revision == adoption
    latest = source.latest
    assert latest is not None
    [recovery] = latest.verification.recoveries
    assert (recovery.kind, recovery.principal, recovery.covered) == ("adopt", "alice@example.com", (bad,))
    assert latest.approvals == ()
    assert [r.commit for r in latest.rejected_approvals] == [bad]


def test_an_adoption_takes_the_unverified_change_it_names(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    bad = unsigned_bump(repo, "1.1.0")
    adoption = repo.commit("adopt", key=keys.carol, trailers=[("Hotswap-Adopt", bad[:12])], allow_empty=True)
    status = source.sync()
    assert status.ready and status.last_applied_revision == adoption
    assert greeter_version(source) == "1.1.0"
    latest = source.latest
    assert latest is not None
    [recovery] = latest.verification.recoveries
    assert (recovery.kind, recovery.principal, recovery.covered) == ("adopt", "carol@example.com", (bad,))
    assert any(f"carol@example.com adopted unverified {bad[:12]}" in e for e in status.events)


def test_an_adoption_covers_only_what_it_names(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    first = unsigned_bump(repo, "1.1.0")
    second = unsigned_bump(repo, "1.2.0")
    repo.commit("adopt one", key=keys.alice, trailers=[("Hotswap-Adopt", first)], allow_empty=True)
    message = stalled_on(source.sync(), second)
    assert first[:12] not in message.split(";")[0]
    assert greeter_version(source) == "1.0.0"
    head = repo.commit(
        "adopt the other", key=keys.alice, trailers=[("Hotswap-Adopt", f"{second} {first}")], allow_empty=True
    )
    status = source.sync()
    assert status.ready and status.last_applied_revision == head
    assert greeter_version(source) == "1.2.0"


def test_an_adoption_by_someone_who_may_not_adopt_or_naming_too_little_is_ignored(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    bad = unsigned_bump(repo)
    repo.commit("adopt", key=keys.bob, trailers=[("Hotswap-Adopt", bad)], allow_empty=True)
    message = stalled_on(source.sync(), bad)
    assert "bob@example.com (developer) may not adopt (adopt roles: admin)" in message
    repo.commit("adopt, too short", key=keys.alice, trailers=[("Hotswap-Adopt", bad[:7])], allow_empty=True)
    message = stalled_on(source.sync(), bad)
    assert f"names {bad[:7]}: not an unverified commit" in message
    assert greeter_version(source) == "1.0.0"


def test_a_restart_before_the_recovery_was_taken_still_sees_it(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    applied = repo.head()
    bad = unsigned_bump(repo)
    repo.git("-c", f"user.signingkey={keys.alice.private}", "revert", "--no-edit", "-S", bad)
    source = source_for(ws, repo.path, standard_trust(keys), last_applied=applied)
    status = source.sync()
    assert status.ready and status.verified and status.last_applied_revision == repo.head()
