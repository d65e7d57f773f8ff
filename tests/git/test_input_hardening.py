"""Git input is verified before it is read, bounded in size, and read without YAML aliases; a
revision that cannot be read stalls and the next commit is tried; rewrites are accepted once.

Real repositories, real ed25519 signatures; the fleet parser is the real loader, wrapped to count
its calls where a test proves it was never reached.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.gitsource.errors import RewriteNotPendingError, TrustRootError
from reconciler.gitsource.source import GitSource, SourceConfig
from reconciler.gitsource.status import Reason
from reconciler.gitsource.trust import RolePolicy, parse_trust
from reconciler.spec.limits import InputLimits
from reconciler.spec.loader import LoadResult, load_fleet
from tests.git.conftest import Keys, seeded_repo, source_for, standard_trust
from tests.git.gitutil import Workspace, key_entry, module_yaml, trust_yaml

# 9 levels of 9 aliases: about 387 million strings once walked (a few hundred bytes of YAML).
BOMB = "# a fleet file\nkind: Module\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)
)


class CountingParser:
    """The real loader, counting how often the Git source reached it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, root: Path) -> LoadResult:
        self.calls += 1
        return load_fleet(root)


def _source(ws: Workspace, repo: Path, trust: str, parser: CountingParser, limits: InputLimits) -> GitSource:
    config = SourceConfig(url=str(repo), branch="main", path="fleet", interval=0.2, limits=limits)
    return GitSource(config, parse_trust(trust), ws.root / "cache", parse=parser)


@pytest.mark.parametrize("required_by", ["trust root", "last good revision"])
def test_an_unsigned_alias_bomb_is_refused_before_any_yaml_is_read(ws: Workspace, keys: Keys, required_by: str) -> None:
    repo = seeded_repo(ws, keys, require_signed=required_by == "last good revision")
    parser = CountingParser()
    trust = standard_trust(keys, require_signed=required_by == "trust root")
    source = _source(ws, repo.path, trust, parser, InputLimits())
    good = repo.head()
    assert source.sync().last_applied_revision == good
    calls = parser.calls
    repo.write("fleet/modules/bomb.yaml", BOMB)
    bomb = repo.commit("unsigned bomb")
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.UNVERIFIED_COMMIT
    assert f"commit {bomb[:12]} is not signed" in status.stalled.message
    assert status.last_applied_revision == good
    assert parser.calls == calls  # the bomb was never exported nor parsed


def test_an_alias_bomb_without_signing_policy_is_refused_by_the_yaml_reader_at_its_line(
    ws: Workspace, keys: Keys
) -> None:
    repo = seeded_repo(ws, keys, require_signed=False)
    source = source_for(ws, repo.path, standard_trust(keys))
    good = repo.head()
    source.sync()
    repo.write("fleet/modules/bomb.yaml", BOMB)
    bomb = repo.commit("bomb")
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.INVALID_FLEET
    assert f"commit {bomb[:12]}" in status.stalled.message
    assert "modules/bomb.yaml:3: yaml: found anchor &l0" in status.stalled.message
    assert status.last_applied_revision == good


def test_an_alias_alone_is_refused_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text("kind: Fleet\nmetadata: {name: x}\nspec:\n  regions: *elsewhere\n")
    result = load_fleet(tmp_path)
    assert not result.ok
    assert any(str(p).startswith("fleet.yaml:4: yaml: found alias *elsewhere") for p in result.problems), [
        str(p) for p in result.problems
    ]


def test_a_yaml_file_over_the_cap_is_refused_unread_naming_it(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys, require_signed=False)
    parser = CountingParser()
    source = _source(ws, repo.path, standard_trust(keys), parser, InputLimits(yaml_bytes=2048))
    good = repo.head()
    source.sync()
    calls = parser.calls
    repo.write("fleet/modules/big.yaml", "# padding\n" * 300)
    big = repo.commit("a big file")
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.TOO_LARGE
    assert f"commit {big[:12]} is too large: modules/big.yaml: size: 3000 bytes, over the 2 KiB limit" in (
        status.stalled.message
    )
    assert status.last_applied_revision == good and parser.calls == calls
    repo.remove("fleet/modules/big.yaml")
    fixed = repo.commit("smaller")
    assert source.sync().last_applied_revision == fixed


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (InputLimits(revision_bytes=8192), "the files total"),
        (InputLimits(files=3), "4 files, over the limit of 3"),
    ],
)
def test_a_revision_over_its_total_or_file_count_is_refused_before_export(
    ws: Workspace, keys: Keys, limits: InputLimits, expected: str
) -> None:
    repo = seeded_repo(ws, keys, require_signed=False)
    parser = CountingParser()
    source = _source(ws, repo.path, standard_trust(keys), parser, limits)
    good = repo.head()
    source.sync()
    calls = parser.calls
    repo.write("fleet/data/blob.txt", "x" * 9000)
    repo.write("fleet/data/other.txt", "y")
    repo.commit("a large blob")
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.TOO_LARGE
    assert expected in status.stalled.message
    if limits.revision_bytes == 8192:
        assert "largest: data/blob.txt (9000 bytes)" in status.stalled.message
    assert status.last_applied_revision == good and parser.calls == calls


def _viewer_trust(keys: Keys, roles: str = "") -> str:
    return roles + trust_yaml(
        ("alice@example.com", ["admin"], key_entry(keys.alice)),
        ("bob@example.com", ["developer"], key_entry(keys.bob)),
        ("carol@example.com", ["operator"], key_entry(keys.carol)),
        ("mallory@example.com", ["viewer"], key_entry(keys.mallory)),
        ("forge", ["merger"], key_entry(keys.forge)),
        require_signed=True,
    )


def test_a_commit_signed_by_a_viewer_stalls_unread(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    parser = CountingParser()
    source = _source(ws, repo.path, _viewer_trust(keys), parser, InputLimits())
    good = repo.head()
    source.sync()
    calls = parser.calls
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "6.6.6"))
    viewer = repo.commit("a viewer deploys", key=keys.mallory)
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.UNVERIFIED_COMMIT
    assert (
        f"commit {viewer[:12]} is signed by mallory@example.com (viewer), who may not author fleet changes "
        "(author roles: admin, developer)"
    ) in status.stalled.message
    assert status.last_applied_revision == good and parser.calls == calls


def test_an_approver_signs_empty_approvals_but_not_changes(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, _viewer_trust(keys))
    source.sync()
    approval = repo.approve("greeter@1.0.0", keys.carol)  # operator: may approve
    status = source.sync()
    assert status.ready and status.last_applied_revision == approval
    latest = source.latest
    assert latest is not None
    assert [(a.target, a.principal) for a in latest.approvals] == [("greeter@1.0.0", "carol@example.com")]
    repo.write("README.md", "an operator's edit\n")
    edit = repo.commit("operator edits", key=keys.carol)
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.UNVERIFIED_COMMIT
    assert f"commit {edit[:12]} is signed by carol@example.com (operator), who may not author" in (
        status.stalled.message
    )
    assert status.last_applied_revision == approval


def test_a_viewers_empty_approval_is_refused_and_counts_for_nothing(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, _viewer_trust(keys))
    source.sync()
    repo.approve("greeter@1.0.0", keys.mallory)
    status = source.sync()
    assert status.stalled is not None
    assert "mallory@example.com (viewer), who may not approve (approve roles: admin, developer, operator)" in (
        status.stalled.message
    )


def test_the_trust_roots_roles_decide_who_authors(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, _viewer_trust(keys, "roles: {author: [admin]}\n"))
    source.sync()
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.1.0"))
    repo.commit("a developer's change", key=keys.bob)
    status = source.sync()
    assert status.stalled is not None
    assert "bob@example.com (developer), who may not author fleet changes (author roles: admin)" in (
        status.stalled.message
    )


def test_a_merge_signed_by_the_forges_merger_key_is_taken(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, _viewer_trust(keys))
    source.sync()
    repo.checkout("feature", new=True)
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.1.0"))
    repo.commit("bump", key=keys.bob)
    repo.checkout("main")
    merge = repo.merge("feature", key=keys.forge, trailers=[("Approved-by", "carol@example.com")])
    status = source.sync()
    assert status.ready and status.last_applied_revision == merge


def test_roles_in_the_trust_root_default_and_are_checked() -> None:
    root = parse_trust("principals: []\n")
    assert root.roles == RolePolicy()
    assert root.roles.author == {"admin", "developer"} and root.roles.adopt == {"admin"}
    chosen = parse_trust("roles: {adopt: [admin, operator]}\nprincipals: []\n").roles
    assert chosen.adopt == {"admin", "operator"} and chosen.author == RolePolicy().author
    with pytest.raises(TrustRootError) as caught:
        parse_trust("roles:\n  author: [admin, root]\n  deploy: [admin]\nprincipals: []\n", "t.yaml")
    assert caught.value.problems == (
        "t.yaml:2: roles.author[1]: 'root' is not one of admin, developer, operator, viewer, merger",
        "t.yaml:3: roles.deploy: unknown field; expected author, approve, adopt",
    )
    with pytest.raises(TrustRootError, match=r"t.yaml:1: yaml: found anchor &k: anchors and aliases are not allowed"):
        parse_trust("k: &k 1\nprincipals: *k\n", "t.yaml")


def test_a_symlink_leaving_the_repository_stalls_and_a_later_good_commit_is_taken(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    good = repo.head()
    source.sync()
    (repo.path / "fleet" / "modules" / "escape").symlink_to("../../../../../../etc")
    escape = repo.commit("a symlink out", key=keys.alice)
    status = source.sync()
    assert not status.ready
    assert status.stalled is not None and status.stalled.reason == Reason.INVALID_FLEET
    assert f"invalid fleet at commit {escape[:12]}: modules/escape: file: cannot be exported" in status.stalled.message
    assert status.last_applied_revision == good
    assert source.sync().stalled is not None  # the same head is not taken on a second look
    repo.remove("fleet/modules/escape")
    fixed = repo.commit("no symlink", key=keys.alice)
    status = source.sync()
    assert status.ready and status.last_applied_revision == fixed


def test_a_loader_failure_stalls_and_only_a_new_commit_is_read_again(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    calls: list[str] = []

    def parser(root: Path) -> LoadResult:
        calls.append(root.name)
        if (root / "boom.txt").exists():
            raise RuntimeError("a bug in the loader")
        return load_fleet(root)

    source = source_for(ws, repo.path, standard_trust(keys), parse=parser)
    source.sync()
    repo.write("fleet/boom.txt", "boom\n")
    boom = repo.commit("boom", key=keys.alice)
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.SYNC_FAILED
    assert f"reading commit {boom[:12]} failed: RuntimeError: a bug in the loader" in status.stalled.message
    assert len(calls) == 2
    assert source.sync().stalled is not None and len(calls) == 2
    repo.remove("fleet/boom.txt")
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.1.0"))
    fixed = repo.commit("no boom", key=keys.alice)
    assert source.sync().last_applied_revision == fixed and len(calls) == 3


def test_accept_rewrite_takes_only_the_held_head_and_only_once(ws: Workspace, keys: Keys) -> None:
    remote = ws.remote()
    repo = seeded_repo(ws, keys)
    repo.git("remote", "add", "origin", str(remote))
    first = repo.head()
    repo.write("README.md", "two\n")
    second = repo.commit("two", key=keys.alice)
    repo.push("origin")
    source = source_for(ws, remote, standard_trust(keys))
    assert source.sync().last_applied_revision == second
    with pytest.raises(RewriteNotPendingError, match="no rewritten history is held"):
        source.accept_history_rewrite(second)

    def rewrite(text: str) -> str:
        repo.reset_hard(first)
        repo.write("README.md", text)
        sha = repo.commit(text, key=keys.alice)
        repo.push("origin", force=True)
        return sha

    other = rewrite("other two\n")
    assert source.sync().stalled is not None
    with pytest.raises(RewriteNotPendingError, match=f"the held rewrite's head is {other}"):
        source.accept_history_rewrite(second)
    source.accept_history_rewrite(other)
    status = source.sync()
    assert status.ready and status.last_applied_revision == other
    third = rewrite("third two\n")
    status = source.sync()
    assert status.stalled is not None and status.stalled.reason == Reason.HISTORY_REWRITTEN
    assert status.last_applied_revision == other
    with pytest.raises(RewriteNotPendingError, match=f"the held rewrite's head is {third}"):
        source.accept_history_rewrite(other)
