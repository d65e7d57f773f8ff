"""`hotswap validate [FLEET_DIR]`: the check a fleet repository runs on every pull request.

Prints every problem as `path:line: field: message` and exits 1, or a one-line summary and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when the verb runs, so `--help` loads none of it
    from reconciler.gitsource.gitrepo import GitRepo
    from reconciler.spec.loader import LoadResult


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("fleet_dir", nargs="?", default=".", help="the fleet root (default: .)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    parser.add_argument(
        "--base",
        metavar="REV",
        help="compare with the fleet at this Git revision (a pull request's target): breaking "
        "interface changes and what the change would roll out",
    )
    parser.add_argument(
        "--resolve",
        action="store_true",
        help="check that every OCI artifact the fleet names exists in its registry (network; credentials "
        "from a Docker config file or HOTSWAP_OCI_USERNAME/PASSWORD for HOTSWAP_OCI_REGISTRY)",
    )


def summary(result: LoadResult) -> str:
    fleet = result.fleet
    assert fleet is not None
    versions = sum(len(m.spec.all_versions()) for m in fleet.modules.values())

    def count(n: int, word: str) -> str:
        return f"{n} {word}{'' if n == 1 else 's'}"

    return (
        f"fleet {fleet.name!r} ({fleet.spec.environment}): {count(len(fleet.modules), 'module')} "
        f"({count(versions, 'version')}), {count(len(fleet.strategies), 'strategy').replace('ys', 'ies')}, "
        f"{count(len(fleet.interfaces), 'interface')}, {count(len(fleet.spec.regions), 'region')} "
        f"in {count(result.files, 'file')}"
    )


def base_commit(repo: GitRepo, rev: str) -> str:
    """The commit `rev` names: a SHA, a branch or any revision; else `origin/REV` (a CI checkout has
    only remote branches); else fetched from origin (a shallow clone lacks it), shallow if the
    clone is. ValueError saying what was tried."""
    from reconciler.gitsource.errors import GitCommandError

    for candidate in (rev, f"refs/remotes/origin/{rev}"):
        sha = repo.resolve(candidate)
        if sha is not None:
            return sha
    shallow = repo.run(["rev-parse", "--is-shallow-repository"]).strip() == "true"
    try:
        depth = ["--depth=1"] if shallow else []
        repo.run(["fetch", "--quiet", "--no-tags", *depth, "origin", rev.removeprefix("origin/")], timeout=120)
    except GitCommandError as exc:
        raise ValueError(
            f"--base: {rev!r} is not a revision of {repo.path} (nor origin/{rev}), and fetching it from "
            f"origin failed: {exc.stderr or exc}"
        ) from None
    sha = repo.resolve("FETCH_HEAD")
    if sha is None:
        raise ValueError(f"--base: fetching {rev!r} from origin gave no commit")
    return sha


def load_at(fleet_dir: Path, rev: str) -> LoadResult | None:
    """The fleet in `fleet_dir` as it was at Git revision `rev`; None when it was not there yet (a
    pull request that adds the fleet)."""
    import tempfile

    import git

    from reconciler.gitsource.errors import GitSourceError
    from reconciler.gitsource.gitrepo import GitRepo
    from reconciler.spec.limits import InputLimits
    from reconciler.spec.loader import load_fleet

    fleet_dir = fleet_dir.resolve()
    try:
        top = str(git.Repo(fleet_dir, search_parent_directories=True).working_tree_dir)
        repo = GitRepo(Path(top))
        sha = base_commit(repo, rev)
        inside = fleet_dir.relative_to(Path(top).resolve()).as_posix()
        inside = "" if inside == "." else inside  # "": the fleet is the repository's root
        if not repo.has_path(sha, inside):
            return None
        with tempfile.TemporaryDirectory(prefix="hotswap-base-") as tmp:
            limits = InputLimits()  # the base is read like the control plane reads a revision
            repo.export(sha, inside, Path(tmp), limits)
            return load_fleet(Path(tmp), limits)
    except ValueError:
        raise
    except (GitSourceError, OSError) as exc:
        raise ValueError(f"--base: {exc}") from None
    except Exception as exc:  # GitPython's InvalidGitRepositoryError and friends
        raise ValueError(f"--base: {fleet_dir} is not in a Git repository ({type(exc).__name__})") from None


def compare_with_base(result: LoadResult, fleet_dir: Path, rev: str, prefix: str) -> tuple[list[str], int]:
    """Lines that say what the change does, and how many of them are errors."""
    from reconciler.apply.changes import fleet_changes

    assert result.fleet is not None
    base = load_at(fleet_dir, rev)
    changes = fleet_changes(base.fleet if base is not None else None, result.fleet)
    lines = [str(p.under(prefix)) for p in changes.problems]
    policy = result.fleet.policy.approvals.breaking_interface_changes
    for change in changes.interfaces:
        for item in change.evolution.changes:
            lines.append(f"interface {change.interface}: {item}")
        if change.needs_approval:
            who = f"{policy.count} of {', '.join(policy.roles)}" if policy else "1 of admin"
            lines.append(
                f"interface {change.interface}: {change.evolution.old} -> {change.evolution.new} is breaking; "
                f"{', '.join(change.implementers) or 'no module'} will wait for approval ({who})"
            )
    lines += [f"rollout: {m}" for m in changes.modules]
    if not changes.modules and not changes.interfaces:
        lines.append(f"no change against {rev}")
    return lines, len(changes.problems)


def _line_of(result: LoadResult, root: Path, module: str, oci: str) -> int:
    """The line of the Module's file that names `oci` (the document's first line if none does)."""
    assert result.fleet is not None
    where = result.fleet.locations.get(("Module", module))
    if where is None:
        return 0
    try:
        lines = (root / where.path).read_text().splitlines()
    except OSError:
        lines = []
    return next((i for i, line in enumerate(lines, 1) if oci in line), where.line)


def unresolved(result: LoadResult, root: Path, prefix: str) -> list[str]:
    """`path:line: field: message` for each `source.oci` its registry does not have (or cannot say)."""
    from reconciler.gitsource.oci import OciClient, OciError
    from reconciler.spec.ocireference import Reference

    assert result.fleet is not None
    client = OciClient()
    lines = []
    for name, module in sorted(result.fleet.modules.items()):
        where = result.fleet.locations.get(("Module", name))
        path = f"{prefix.rstrip('/')}/{where.path}" if prefix and where else where.path if where else name
        for version, source, _ in module.spec.all_sources():
            if source.oci is None:
                continue
            try:
                digest = client.resolve(Reference.parse(source.oci))
            except OciError as exc:
                lines.append(f"{path}:{_line_of(result, root, name, source.oci)}: spec.source.oci: {version}: {exc}")
                continue
            if "@" not in source.oci:
                print(f"{name}@{version}: {source.oci} is {digest} now")
    return lines


def run(args: argparse.Namespace) -> int:
    from reconciler.spec.loader import load_fleet

    started = time.perf_counter()
    shown = str(args.fleet_dir)
    prefix = "" if shown in (".", "./") else shown
    result = load_fleet(Path(args.fleet_dir))
    for problem in result.problems:
        print(problem.under(prefix))
    if result.ok and args.resolve:
        missing = unresolved(result, Path(args.fleet_dir), prefix)
        if missing:
            print("\n".join(missing))
            count = f"{len(missing)} artifact{'s' if len(missing) != 1 else ''}"
            print(f"invalid: {count} could not be resolved", file=sys.stderr)
            return 1
    if result.ok and args.base:
        try:
            lines, errors = compare_with_base(result, Path(args.fleet_dir), args.base, prefix)
        except ValueError as exc:
            print(f"hotswap validate: {exc}", file=sys.stderr)
            return 2
        print("\n".join(lines))
        if errors:
            print(
                f"invalid: {errors} breaking interface change{'s' if errors != 1 else ''} need a major version bump",
                file=sys.stderr,
            )
            return 1
    elapsed = time.perf_counter() - started
    if not result.ok:
        errors = len(result.errors)
        files = len({p.path for p in result.errors})
        print(
            f"invalid: {errors} problem{'s' if errors != 1 else ''} in {files} file{'s' if files != 1 else ''}",
            file=sys.stderr,
        )
        return 1
    if not args.quiet:
        print(f"valid: {summary(result)} ({elapsed * 1000:.0f} ms)")
    return 0
