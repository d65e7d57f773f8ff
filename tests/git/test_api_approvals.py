"""Approvals the control plane signs for API callers count for the principal they name
(`Hotswap-Approved-By:`), with its roles within the control plane's `actsFor`, and never for the
control plane itself."""

from __future__ import annotations

from reconciler.gitsource.source import GitSource
from tests.git.conftest import Keys, seeded_repo, source_for, standard_trust
from tests.git.gitutil import Repo, Workspace, key_entry


def trust(keys: Keys, acts_for: str) -> str:
    # The forge's key stands in for the control plane's.
    base = standard_trust(keys, require_signed=True).replace(
        f"  - name: forge\n    roles: [merger]\n    keys:\n{key_entry(keys.forge)}", ""
    )
    return base + f'  - {{name: hotswap-control-plane, actsFor: [{acts_for}], keys: ["{keys.forge.public}"]}}\n'


def api_approval(repo: Repo, keys: Keys, *names: str) -> str:
    trailers = [("Hotswap-Approve", "greeter@1.0.0"), *(("Hotswap-Approved-By", n) for n in names)]
    return repo.commit("approve", key=keys.forge, trailers=trailers, allow_empty=True)


def synced(source: GitSource) -> GitSource:
    status = source.sync()
    assert status.ready and status.verified, status
    return source


def test_an_api_approval_counts_for_each_named_principal_within_acts_for(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, trust(keys, "admin, developer"))
    sha = api_approval(repo, keys, "alice@example.com", "Carol@Example.com")
    latest = synced(source).latest
    assert latest is not None
    assert [(a.principal, a.roles, a.via, a.commit) for a in latest.approvals] == [
        ("alice@example.com", frozenset({"admin"}), "api", sha),
        ("carol@example.com", frozenset({"admin"}), "api", sha),
    ]


def test_an_api_approval_counts_for_nobody_outside_acts_for_or_without_a_named_principal(
    ws: Workspace, keys: Keys
) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, trust(keys, "developer"))
    api_approval(repo, keys, "alice@example.com")  # alice is an admin; the control plane acts for developers
    api_approval(repo, keys, "hotswap-control-plane")
    api_approval(repo, keys, "ghost@example.com")
    api_approval(repo, keys)
    api_approval(repo, keys, "bob@example.com")  # a developer, within actsFor: counts
    latest = synced(source).latest
    assert latest is not None
    assert [(a.principal, a.roles) for a in latest.approvals] == [("bob@example.com", frozenset({"developer"}))]
    reasons = sorted(r.reason for r in latest.rejected_approvals)
    assert len(reasons) == 4
    assert any(r.startswith("alice@example.com (none) may not approve") for r in reasons)
    assert sum("is not a principal of the trust root" in r for r in reasons) == 2
    assert any("nobody approved" in r for r in reasons)
