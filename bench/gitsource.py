"""Git source benchmark: commit to parsed revision, with and without signature verification.

Builds, in a temporary directory, a fleet of N modules (one YAML file each, registry digests as
sources) and a history of M commits, every one signed with a real ed25519 key, then measures:

- the first sync (clone, parse, verify the head, scan the whole history for approvals);
- commit -> revision, one module changed: a new signed commit lands, `GitSource.sync()` returns
  with it parsed, with verification off and on (requireSignedCommits from the trust root), through
  the checkout that reads only what changed (reconciler.gitsource.checkout), and in the same run
  through the full export of the tree + `load_fleet` (a source given `parse=`), the path before it;
- its parts: export of the tree + loader, and the incremental verification of one new commit;
- verifying the whole history: one `git log --format=%G?` batch vs `git verify-commit` per commit.

    python bench/gitsource.py            # 1,000 modules, 1,000 commits
    python bench/gitsource.py --quick    # 100 modules, 100 commits (what CI runs)
    python bench/gitsource.py --profile  # and cProfile's top lines of the incremental syncs
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# This file is named git.py: drop its own folder from the path so `import git` finds GitPython.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _HERE) and Path(p).resolve() != Path(_HERE)]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.gitsource.gitrepo import GitRepo  # noqa: E402
from reconciler.gitsource.source import FleetParser, GitSource, SourceConfig  # noqa: E402
from reconciler.gitsource.trust import parse_trust  # noqa: E402
from reconciler.gitsource.verify import Verifier  # noqa: E402
from reconciler.spec.limits import InputLimits  # noqa: E402
from reconciler.spec.loader import load_fleet  # noqa: E402
from tests.git.gitutil import Key, Repo, fleet_yaml, key_entry, make_key, module_yaml, trust_yaml  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"median {ms(statistics.median(ordered))}, p99 {ms(p99)} (n={len(ordered)})"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine() -> str:
    git_version = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {git_version}; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average {load}"
    )


def build(root: Path, key: Key, modules: int, commits: int) -> Repo:
    repo = Repo(root / "fleet-repo")
    repo.write("fleet/fleet.yaml", fleet_yaml(require_signed=False, merges_approve=True))
    for i in range(modules):
        repo.write(f"fleet/modules/m{i:04d}.yaml", module_yaml(f"m{i:04d}", "1.0.0"))
    repo.commit("fleet of {modules} modules", key=key)
    started = time.perf_counter()
    for n in range(1, commits):
        i = n % modules
        repo.write(f"fleet/modules/m{i:04d}.yaml", module_yaml(f"m{i:04d}", f"1.0.{n}"))
        repo.commit(f"m{i:04d} 1.0.{n}", key=key)
    print(f"built {commits} signed commits in {time.perf_counter() - started:.1f} s")
    return repo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=1000)
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="100 modules, 100 commits, 5 samples")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top lines of the incremental syncs")
    args = parser.parse_args()
    if args.quick:
        args.modules, args.commits, args.samples = 100, 100, 5
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="hotswap-bench-git-") as tmp:
        root = Path(tmp)
        key = make_key(root / "keys", "alice")
        repo = build(root, key, args.modules, args.commits)
        entry = key_entry(key)

        def source(verify: bool, name: str, parse: FleetParser | None = None) -> GitSource:
            trust = parse_trust(trust_yaml(("alice@example.com", ["admin"], entry), require_signed=verify))
            config = SourceConfig(url=str(repo.path), path="fleet")
            return GitSource(config, trust, root / f"cache-{name}", parse=parse)

        sources = {False: source(False, "off"), True: source(True, "on")}
        export = source(False, "export", parse=functools.partial(load_fleet, limits=InputLimits()))
        print(f"fleet: {args.modules} modules; history: {args.commits} commits (all signed, ed25519)")
        for verify, each in sources.items():
            took = timed(each.sync)
            assert each.status().ready, each.status().conditions
            print(f"first sync, verification {'on ' if verify else 'off'}: {ms(took)}")
        print(f"first sync, full export + load_fleet: {ms(timed(export.sync))}")

        results: dict[bool, list[float]] = {False: [], True: []}
        exported: list[float] = []
        approvals: list[float] = []
        profile = cProfile.Profile() if args.profile else None
        incremental = sources[False].checkout
        assert incremental is not None
        parsed, written = incremental.loader.parsed, incremental.written
        for n in range(args.samples):
            i = n % args.modules
            repo.write(f"fleet/modules/m{i:04d}.yaml", module_yaml(f"m{i:04d}", f"2.0.{n}"))
            head = repo.commit(f"m{i:04d} 2.0.{n}", key=key)
            for verify, each in sources.items():
                results[verify].append(timed(each.sync))
                latest = each.latest
                assert latest is not None and latest.sha == head, each.status().conditions
            exported.append(timed(export.sync))
            assert export.latest is not None and export.latest.sha == head
            head = repo.approve(f"m{i:04d}@2.0.{n}", key)
            approvals.append(timed(sources[True].sync))
            latest = sources[True].latest
            assert latest is not None and latest.sha == head and latest.approvals[-1].commit == head
            sources[False].sync()
            export.sync()
        files_note = f"{(incremental.loader.parsed - parsed) / args.samples:g} parsed, "
        files_note += f"{(incremental.written - written) / args.samples:g} written per commit"
        print(f"commit -> parsed revision, one module of {args.modules} changed (files {files_note}):")
        for verify in (False, True):
            print(f"  verification {'on ' if verify else 'off'}: {summary(results[verify])}")
        print(f"  full export + load_fleet, verification off (before): {summary(exported)}")
        if profile is not None:  # more commits, profiled apart so that the figures above stay unprofiled
            for n in range(args.samples):
                i = (n + args.samples) % args.modules
                repo.write(f"fleet/modules/m{i:04d}.yaml", module_yaml(f"m{i:04d}", f"3.0.{n}"))
                head = repo.commit(f"m{i:04d} 3.0.{n}", key=key)
                profile.runcall(sources[False].sync)
                assert sources[False].latest is not None and sources[False].latest.sha == head
                sources[True].sync()
                export.sync()

        mirror = sources[True].repo
        head = mirror.resolve("refs/remotes/origin/main")
        assert head is not None
        parse_times = []
        for _ in range(max(3, args.samples // 4)):
            with tempfile.TemporaryDirectory(dir=root) as checkout:
                dest = Path(checkout) / "fleet"
                parse_times.append(timed(lambda dest=dest: (mirror.export(head, "fleet", dest), load_fleet(dest))))
        export_times = []
        for _ in range(max(3, args.samples // 4)):
            with tempfile.TemporaryDirectory(dir=root) as checkout:
                dest = Path(checkout) / "fleet"
                export_times.append(timed(lambda dest=dest: mirror.export(head, "fleet", dest)))
        print(f"  of which export + load_fleet: {summary(parse_times)}")
        print(f"    of which git archive | tar extract: {summary(export_times)}")
        print(f"approval commit (fleet unchanged) -> revision, verification on: {summary(approvals)}")

        trust = sources[True].trust
        history = [c.sha for c in GitRepo(repo.path).first_parent_log("HEAD")]
        one = []
        for sha in history[: args.samples]:
            fresh = Verifier(trust, root / "v-one")
            one.append(timed(lambda fresh=fresh, sha=sha: fresh.check(mirror, [sha])))
        print(f"incremental verification of one new commit (git log %G?): {summary(one)}")
        batch = Verifier(trust, root / "v-batch")
        took = timed(lambda: batch.check(mirror, history))
        assert all(c.trusted for c in batch.check(mirror, history).values())
        print(
            f"verify whole history in one batch: {ms(took)} for {len(history)} commits "
            f"= {ms(took / len(history))} per commit"
        )
        per_commit = [timed(lambda sha=sha: batch.verify_commit(mirror, sha)) for sha in history[: args.samples]]
        print(f"git verify-commit, one process per commit: {summary(per_commit)}")
        if profile is not None:
            print(f"cProfile of {args.samples} more incremental syncs (verification off), top by cumulative time:")
            pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
        print(f"load average at the end: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
