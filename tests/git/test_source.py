"""The Git source following a branch: bad revisions held, remotes over real transports, force-pushes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.gitsource.source import GitSource, Revision
from reconciler.gitsource.status import Reason
from tests.git.conftest import Keys, seeded_repo, source_for, standard_trust
from tests.git.gitutil import Repo, Workspace, git_daemon, module_yaml


async def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_broken_yaml_commit_keeps_the_last_good_revision(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys))
    good = repo.head()
    source.sync()
    repo.write("fleet/modules/greeter.yaml", "kind: Module\nmetadata: {name: greeter\nspec: [\n")
    broken = repo.commit("broken yaml", key=keys.alice)
    status = source.sync()
    assert status.last_applied_revision == good
    assert status.observed_revision == broken
    assert status.stalled is not None and status.stalled.reason == Reason.INVALID_FLEET
    assert f"commit {broken[:12]}" in status.stalled.message
    assert "modules/greeter.yaml:" in status.stalled.message
    latest = source.latest
    assert latest is not None and latest.sha == good
    failure = source.failure
    assert failure is not None and failure.commit == broken
    assert [p.path for p in failure.problems] == ["modules/greeter.yaml"]
    # fixing it moves on
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.2.0"))
    fixed = repo.commit("fixed", key=keys.alice)
    status = source.sync()
    assert status.ready and status.last_applied_revision == fixed
    assert status.stalled is None


def test_invalid_field_is_reported_with_file_and_line(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.2"))
    repo.commit("bad version", key=keys.alice)
    status = source_for(ws, repo.path, standard_trust(keys)).sync()
    assert status.stalled is not None
    assert "modules/greeter.yaml:5: spec.version" in status.stalled.message
    assert status.last_applied_revision is None
    assert "no revision applied yet" in status.stalled.message


def test_missing_sub_path_is_an_invalid_fleet(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    status = source_for(ws, repo.path, standard_trust(keys), path="nowhere").sync()
    assert status.stalled is not None and status.stalled.reason == Reason.INVALID_FLEET
    assert "'nowhere' does not exist" in status.stalled.message


def test_unreachable_remote_is_a_transient_fetch_failure(ws: Workspace, keys: Keys) -> None:
    status = source_for(ws, ws.root / "no-such-repo", standard_trust(keys)).sync()
    assert not status.ready and status.stalled is None
    ready = status.condition("Ready")
    assert ready is not None and ready.reason == Reason.FETCH_FAILED


def test_same_head_and_unchanged_fleet_are_not_parsed_again(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    calls: list[Path] = []

    def counting(root: Path):  # type: ignore[no-untyped-def]
        from reconciler.spec.loader import load_fleet

        calls.append(root)
        return load_fleet(root)

    source = source_for(ws, repo.path, standard_trust(keys), parse=counting)
    source.sync()
    source.sync()
    assert len(calls) == 1 and source.fetches == 2
    # a commit that changes nothing under the fleet root reuses the parsed fleet
    approval = repo.approve("greeter@1.1.0", keys.alice)
    status = source.sync()
    assert status.last_applied_revision == approval and len(calls) == 1
    latest = source.latest
    assert latest is not None and [a.commit for a in latest.approvals] == [approval]
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.1.0"))
    repo.commit("bump", key=keys.alice)
    source.sync()
    assert len(calls) == 2


def test_bare_remote_by_path_is_followed_including_a_force_push(ws: Workspace, keys: Keys) -> None:
    remote = ws.remote()
    repo = seeded_repo(ws, keys, require_signed=False)
    repo.git("remote", "add", "origin", str(remote))
    repo.push("origin")
    first = repo.head()
    source = source_for(ws, remote, standard_trust(keys))
    assert source.sync().last_applied_revision == first
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.1.0"))
    second = repo.commit("bump")
    repo.push("origin")
    assert source.sync().last_applied_revision == second
    # rewrite: drop `second`, push a different commit in its place
    repo.reset_hard(first)
    repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "1.0.1"))
    rewritten = repo.commit("rewritten")
    repo.push("origin", force=True)
    status = source.sync()
    assert status.last_applied_revision == rewritten
    assert any("history rewritten" in e and second[:12] in e for e in status.events)


def test_force_push_under_signing_policy_is_held_until_accepted(ws: Workspace, keys: Keys) -> None:
    remote = ws.remote()
    repo = seeded_repo(ws, keys)
    repo.git("remote", "add", "origin", str(remote))
    first = repo.head()
    repo.write("README.md", "two\n")
    second = repo.commit("two", key=keys.alice)
    repo.push("origin")
    source = source_for(ws, remote, standard_trust(keys))
    assert source.sync().last_applied_revision == second
    repo.reset_hard(first)
    repo.write("README.md", "other two\n")
    other = repo.commit("other two", key=keys.alice)
    repo.push("origin", force=True)
    status = source.sync()
    assert status.last_applied_revision == second
    assert status.stalled is not None and status.stalled.reason == Reason.HISTORY_REWRITTEN
    assert second[:12] in status.stalled.message and other[:12] in status.stalled.message
    source.accept_history_rewrite(other)
    status = source.sync()
    assert status.ready and status.last_applied_revision == other and status.verified


def test_git_daemon_remote_is_followed_including_a_force_push(ws: Workspace, keys: Keys) -> None:
    served = ws.root / "served"
    served.mkdir()
    remote = ws.remote("served/fleet.git")
    repo = seeded_repo(ws, keys, require_signed=False)
    with git_daemon(served) as base_url:
        repo.git("remote", "add", "origin", f"{base_url}/fleet.git")
        repo.push("origin")
        first = repo.head()
        source = source_for(ws, f"{base_url}/fleet.git", standard_trust(keys))
        assert source.sync().last_applied_revision == first
        repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "2.0.0"))
        repo.commit("bump")
        repo.reset_hard(first)
        repo.write("fleet/modules/greeter.yaml", module_yaml("greeter", "3.0.0"))
        forced = repo.commit("forced")
        repo.push("origin", force=True)
        status = source.sync()
        assert status.last_applied_revision == forced
        latest = source.latest
        assert latest is not None and latest.fleet is not None
        assert latest.fleet.modules["greeter"].spec.version == "3.0.0"
    assert remote.exists()


async def follow_through_the_watcher(ws: Workspace, keys: Keys, change: Callable[[Repo, int], None]) -> Repo:
    """A seeded repository followed by a source that only its file watcher wakes: commit
    `change(repo, attempt)` until the run loop hands a revision of that commit on (the watcher may not
    be watching yet when the first commit lands; bounded). The repository."""
    repo = seeded_repo(ws, keys)
    source = source_for(ws, repo.path, standard_trust(keys), interval=3600.0)  # only the watcher wakes it
    seen: list[Revision] = []

    async def on_revision(revision: Revision) -> None:
        seen.append(revision)

    task = asyncio.create_task(source.run(on_revision))
    try:
        await eventually(lambda: len(seen) == 1)
        for attempt in range(20):
            change(repo, attempt)
            head = await asyncio.to_thread(repo.commit, f"watched {attempt}", key=keys.alice)
            try:
                await eventually(lambda head=head: seen[-1].sha == head, timeout=1.0)  # type: ignore[misc]
                break
            except AssertionError:
                continue
        assert seen[-1].sha == head
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return repo


async def test_run_loop_follows_local_commits_through_the_file_watcher(ws: Workspace, keys: Keys) -> None:
    await follow_through_the_watcher(ws, keys, lambda repo, attempt: repo.write("README.md", f"watched {attempt}\n"))


async def test_the_file_watcher_hands_the_event_loop_no_object_paths(
    ws: Workspace, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """watchfiles filters what it saw on the event loop, a path at a time: a commit writes far more
    objects than refs (thousands for a large fleet), so only refs/ and the git dir's own files are
    watched. Every path the watcher gives the loop is recorded here (watchfiles' own step)."""
    import watchfiles.main

    handed: list[str] = []
    prep = watchfiles.main._prep_changes

    def recording(raw: set[tuple[int, str]], watch_filter: object) -> object:
        handed.extend(path for _, path in raw)
        return prep(raw, watch_filter)  # type: ignore[arg-type]

    monkeypatch.setattr(watchfiles.main, "_prep_changes", recording)

    def notes(repo: Repo, attempt: int) -> None:  # fifty new files: fifty-odd objects a commit
        for n in range(50):
            repo.write(f"fleet/notes/{attempt}-{n}.txt", f"note {attempt} {n}\n")

    repo = await follow_through_the_watcher(ws, keys, notes)
    git_dir = str(repo.path / ".git")
    assert handed, "the watcher handed the loop nothing: the commit was seen some other way"
    stray = [p for p in handed if not p.startswith(f"{git_dir}/refs/") and "/" in p.removeprefix(git_dir + "/")]
    assert not stray, stray[:5]
    assert not any("/objects/" in p for p in handed)


def test_source_status_json_has_flux_like_fields(ws: Workspace, keys: Keys) -> None:
    repo = seeded_repo(ws, keys)
    source: GitSource = source_for(ws, repo.path, standard_trust(keys))
    body = source.sync().to_json()
    assert body["lastAppliedRevision"] == repo.head() == body["observedRevision"]
    assert body["verified"] is True
    assert body["conditions"][0] == {
        "type": "Ready",
        "status": "True",
        "reason": "Succeeded",
        "message": f"stored revision main@sha1:{repo.head()}",
    }
