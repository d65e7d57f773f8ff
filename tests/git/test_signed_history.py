"""requireSignedCommits: which heads the Git source takes, which it holds, and what it reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.gitsource.status import Reason
from reconciler.gitsource.verify import SignatureStatus
from tests.git.conftest import Keys, seeded_repo, source_for, standard_trust
from tests.git.gitutil import Workspace, key_entry, module_yaml, trust_yaml


def test_signed_head_is_taken_and_verified(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    status = source.sync()
    assert status.ready and status.verified
    assert status.last_applied_revision == repo.head()
    latest = source.latest
    assert latest is not None and latest.fleet is not None
    assert set(latest.fleet.modules) == {"greeter"}
    assert [c.principal for c in latest.verification.checks] == ["alice@example.com"]


def test_unsigned_head_is_refused_under_policy(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    good = repo.head()
    source.sync()
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.1.0"))
    bad = repo.commit("unsigned bump")
    status = source.sync()
    assert status.observed_revision == bad
    assert status.last_applied_revision == good
    stalled = status.stalled
    assert stalled is not None and stalled.reason == Reason.UNVERIFIED_COMMIT
    assert bad[:12] in stalled.message and "not signed" in stalled.message
    assert not status.ready


def test_signed_head_over_unsigned_middle_commit_is_refused(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    good = repo.head()
    source.sync()
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.1.0"))
    middle = repo.commit("sneaky unsigned change")
    repo.write("README.md", "signed on top\n")
    repo.commit("signed on top", key=keys.alice)
    status = source.sync()
    assert status.last_applied_revision == good
    assert status.stalled is not None
    assert f"unverified commit {middle[:12]}" in status.stalled.message


def test_commit_signed_by_unknown_key_is_refused(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    repo.write("README.md", "mallory was here\n")
    bad = repo.commit("by mallory", key=keys.mallory)
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.UNVERIFIED_COMMIT
    assert "no principal in the trust root holds" in status.stalled.message
    check = source.verifier.cached(bad)
    assert check is not None and check.status is SignatureStatus.UNKNOWN_KEY


def test_commit_signed_by_expired_key_is_refused_and_earlier_commits_still_verify(ws: Workspace, keys: Keys) -> None:
    rotated = datetime.now(UTC) - timedelta(days=30)
    trust = trust_yaml(
        ("alice@example.com", ["admin"], key_entry(keys.alice, valid_before=rotated) + key_entry(keys.carol)),
        require_signed=True,
    )
    repo = ws.repo()
    repo.write("fleet/fleet.yaml", seeded_fleet_text())
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.0.0"))
    old = repo.commit("before rotation", key=keys.alice, date=rotated - timedelta(days=1))
    source = source_for(ws, repo.path, trust)
    assert source.sync().ready
    repo.write("README.md", "after rotation, old key\n")
    late = repo.commit("after rotation with the old key", key=keys.alice)
    status = source.sync()
    assert status.last_applied_revision == old
    assert status.stalled is not None
    assert late[:12] in status.stalled.message and "not valid then" in status.stalled.message
    check = source.verifier.cached(late)
    assert check is not None and check.status is SignatureStatus.KEY_NOT_VALID
    assert check.principal == "alice@example.com"


def test_key_not_yet_valid_is_refused(ws: Workspace, keys: Keys) -> None:
    future = datetime.now(UTC) + timedelta(days=1)
    trust = trust_yaml(("alice@example.com", ["admin"], key_entry(keys.alice, valid_after=future)))
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, trust)
    status = source.sync()
    assert status.last_applied_revision is None
    assert status.stalled is not None and "valid after" in status.stalled.message


def test_trust_root_requires_signing_even_when_the_fleet_does_not(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, require_signed=False)
    source = source_for(ws, repo.path, standard_trust(keys, require_signed=True))
    source.sync()
    repo.write("README.md", "unsigned\n")
    repo.commit("unsigned")
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.UNVERIFIED_COMMIT


def test_a_commit_cannot_switch_signing_off_for_itself(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, require_signed=True)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    repo.write("fleet/fleet.yaml", seeded_fleet_text(require_signed=False))
    repo.commit("turn signing off, unsigned")
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.UNVERIFIED_COMMIT


def test_without_policy_unsigned_commits_are_taken(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, require_signed=False)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.1.0"))
    head = repo.commit("unsigned bump")
    status = source.sync()
    assert status.ready and status.last_applied_revision == head
    assert not status.verified
    latest = source.latest
    assert latest is not None and latest.fleet is not None
    assert latest.fleet.modules["greeter"].spec.version == "1.1.0"


def test_resuming_from_last_applied_verifies_every_commit_since(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    applied = repo.head()
    repo.write("README.md", "unsigned while the reconciler was down\n")
    unsigned = repo.commit("unsigned")
    repo.write("README.md", "signed\n")
    repo.commit("signed", key=keys.alice)
    source = source_for(ws, repo.path, standard_trust(keys), last_applied=applied)
    status = source.sync()
    assert status.stalled is not None and unsigned[:12] in status.stalled.message
    # still so at the next head: the range starts at the revision applied before the restart
    repo.write("README.md", "signed again\n")
    repo.commit("signed again", key=keys.alice)
    status = source.sync()
    assert status.stalled is not None and unsigned[:12] in status.stalled.message


def seeded_fleet_text(require_signed: bool = True) -> str:
    from tests.git.gitutil import fleet_yaml

    return fleet_yaml(require_signed=require_signed, merges_approve=True)


def test_long_ranges_are_verified_by_parallel_git_processes(
    ws: Workspace, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.gitsource import verify

    monkeypatch.setattr(verify, "_MIN_PER_WORKER", 2)
    monkeypatch.setattr(verify.os, "cpu_count", lambda: 2)
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    source.sync()
    shas = []
    for n in range(5):
        repo.write("README.md", f"{n}\n")
        shas.append(repo.commit(f"c{n}", key=keys.bob if n % 2 else keys.carol))
    repo.write("README.md", "unsigned\n")
    unsigned = repo.commit("unsigned")
    status = source.sync()
    assert status.stalled is not None and unsigned[:12] in status.stalled.message
    checks = [source.verifier.cached(s) for s in shas]
    assert [c.principal for c in checks if c is not None] == [
        "carol@example.com",
        "bob@example.com",
        "carol@example.com",
        "bob@example.com",
        "carol@example.com",
    ]
