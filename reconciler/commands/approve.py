"""`hotswap approve MODULE@VERSION [--repo DIR] [--push]`: record an approval as a signed Git commit.

Where it sits: a person's side of the approval flow (DESIGN.md section 5). It makes an empty commit
on the current branch of a fleet repository checkout, with the trailer `Hotswap-Approve:
MODULE@VERSION`, signed with the user's own git signing setup (`git commit -S`: `gpg.format`,
`user.signingkey`), and optionally pushes it. The Git source of the control plane finds the commit,
verifies the signature against the trust root, and the planner counts it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SIGNING_HINT = (
    "git could not sign the commit; set up signing first, e.g.\n"
    "  git config gpg.format ssh && git config user.signingkey ~/.ssh/id_ed25519.pub"
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODULE@VERSION", help="the module version to approve, e.g. greeter@1.1.0")
    parser.add_argument("--repo", type=Path, default=Path("."), help="a checkout of the fleet repository (default: .)")
    parser.add_argument("--push", action="store_true", help="push the branch after committing (git push)")
    parser.add_argument("-m", "--message", default="", help="a note added to the commit message")


def approve(repo_dir: Path, target: str, *, push: bool = False, note: str = "") -> str:
    """Make (and optionally push) the signed approval commit; its SHA."""
    from reconciler.gitsource.errors import ApproveError, GitCommandError
    from reconciler.gitsource.gitrepo import GitRepo
    from reconciler.spec.approvals import APPROVE_TRAILER, parse_target

    module, version = parse_target(target)
    try:
        repo = GitRepo(repo_dir)
    except Exception as exc:  # GitPython raises several types for "not a repository"
        raise ApproveError(f"{repo_dir} is not a git repository: {exc}") from None
    message = [f"approve {module}@{version}"]
    if note:
        message.append(note)
    message.append(f"{APPROVE_TRAILER}: {module}@{version}")
    try:
        repo.run(["commit", "--allow-empty", "-S", "--quiet", *(x for m in message for x in ("-m", m))])
    except GitCommandError as exc:
        hint = f"\n{SIGNING_HINT}" if "sign" in exc.stderr.lower() or "key" in exc.stderr.lower() else ""
        raise ApproveError(f"git commit failed: {exc.stderr or exc}{hint}") from None
    sha = repo.run(["rev-parse", "HEAD"]).strip()
    raw = repo.run(["cat-file", "commit", sha])
    if "\ngpgsig " not in raw:
        raise ApproveError(f"commit {sha[:12]} was made but is not signed; it will not count as an approval")
    if push:
        try:
            repo.run(["push", "--quiet"], timeout=120)
        except GitCommandError as exc:
            raise ApproveError(f"approval committed as {sha[:12]}, but git push failed: {exc.stderr or exc}") from None
    return sha


def run(args: argparse.Namespace) -> int:
    from reconciler.gitsource.errors import ApproveError

    try:
        sha = approve(args.repo, args.target, push=args.push, note=args.message)
    except (ValueError, ApproveError) as exc:
        print(f"hotswap approve: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ValueError) else 1  # a malformed target; an approval that failed
    pushed = " and pushed" if args.push else ""
    print(f"approved {args.target.strip()} in signed commit {sha[:12]}{pushed}")
    return 0
