"""Finding approvals in the tracked branch: signed approval commits and signed merge commits.

Where it sits: the Git source calls `ApprovalScanner.scan()` on the first-parent commits of each new
revision; the resulting `Approval` / `RejectedApproval` records (reconciler.spec.approvals) travel with
the revision to the planner, which never calls git.

1. A commit with `Hotswap-Approve: module@version` trailers approves those versions when it is
   signed by a principal of the trust root whose roles may approve (the trust root's
   `roles.approve`); whether that principal holds a role the rule requires is the rule's business
   (`reconciler.spec.approvals.evaluate`).
2. A merge commit approves the module versions it merged, when signed by a principal (who
   approves), or by a `merger` key (the forge's), in which case the principals its `Approved-by:`
   trailers name approve. Which versions a merge "changed": the Module documents in the YAML
   files that differ between the first parent and the merge, read on both sides; every
   `module@version` named at the merge (spec.version, spec.versions, placement.versionOverrides and
   placement.pins) and not named in the same files at the first parent. This reads YAML only,
   not the full loader, so it costs one diff and a few blob reads per merge, and a broken file
   on either side just names nothing; so does a file over the YAML cap (it is not read) or one
   with anchors or aliases (reconciler.spec.limits).

3. A commit the control plane signed for an API caller (its principal has `actsFor`) approves
   for the principals its `Hotswap-Approved-By:` trailers name, each with its roles that the
   control plane may act for (`via` "api"); the control plane never approves for itself.

Anything unsigned, signed by an unknown key, or by a key outside its validity window, counts for
nothing and is returned as a `RejectedApproval` with the verifier's reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ruamel.yaml.error import YAMLError

from reconciler.gitsource.gitrepo import CommitInfo, GitRepo
from reconciler.gitsource.trust import Principal, RolePolicy, TrustRoot
from reconciler.gitsource.verify import CommitCheck, Verifier
from reconciler.spec.approvals import API_APPROVED_BY_TRAILER, Approval, RejectedApproval, parse_target
from reconciler.spec.limits import InputLimits, is_fleet_yaml, yaml_reader

__all__ = ["ApprovalScanner", "module_versions"]

MERGER_ROLE = "merger"


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        yield str(value)


def module_versions(text: bytes) -> set[tuple[str, str]]:
    """Every (module, version) a YAML file's Module documents name; nothing if it does not parse."""
    found: set[tuple[str, str]] = set()
    try:
        docs = list(yaml_reader("safe").load_all(text))
    except (YAMLError, ValueError, RecursionError):
        return found
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Module":
            continue
        meta, spec = doc.get("metadata"), doc.get("spec")
        if not isinstance(meta, dict) or not isinstance(spec, dict) or not isinstance(meta.get("name"), str):
            continue
        name = meta["name"]
        versions = list(_strings(spec.get("version")))
        extra = spec.get("versions")
        if isinstance(extra, list):
            versions += [v for item in extra if isinstance(item, dict) for v in _strings(item.get("version"))]
        placement = spec.get("placement")
        if isinstance(placement, dict):
            overrides = placement.get("versionOverrides")
            if isinstance(overrides, list):
                versions += [v for o in overrides if isinstance(o, dict) for v in _strings(o.get("version"))]
            pins = placement.get("pins")
            if isinstance(pins, dict):
                versions += [v for pin in pins.values() for v in _strings(pin)]
        found.update((name, v) for v in versions)
    return found


def _is_fleet_yaml(path: str, root: str) -> bool:
    return is_fleet_yaml(path[len(root) :].lstrip("/") if root else path)


class ApprovalScanner:
    """Turns first-parent commits into approvals; per-commit results are cached by SHA."""

    def __init__(
        self, repo: GitRepo, verifier: Verifier, trust: TrustRoot, path: str = "", limits: InputLimits | None = None
    ) -> None:
        self.repo = repo
        self.verifier = verifier
        self.trust = trust
        self.path = path.strip("/")
        self.limits = limits or InputLimits()
        self._merged: dict[str, tuple[tuple[str, str], ...]] = {}

    def merged_versions(self, merge: CommitInfo) -> tuple[tuple[str, str], ...]:
        """The module versions a merge commit brought in, relative to its first parent."""
        cached = self._merged.get(merge.sha)
        if cached is not None:
            return cached
        first = merge.parents[0]
        files = [f for f in self.repo.changed_files(first, merge.sha, self.path) if _is_fleet_yaml(f, self.path)]
        after: set[tuple[str, str]] = set()
        before: set[tuple[str, str]] = set()
        for file in files:
            new = self._read(merge.sha, file)
            old = self._read(first, file)
            if new is not None:
                after |= module_versions(new)
            if old is not None:
                before |= module_versions(old)
        result = tuple(sorted(after - before))
        self._merged[merge.sha] = result
        return result

    def _read(self, sha: str, path: str) -> bytes | None:
        """A YAML file of a merge or its parent, unless it is missing or over the YAML cap."""
        size = self.repo.blob_size(sha, path)
        if size is None or size > self.limits.yaml_bytes:
            return None
        return self.repo.read_blob(sha, path)

    def _may_approve(self, name: str, roles: frozenset[str]) -> str | None:
        """None when `roles` may approve, else the reason an approval by `name` counts for nothing."""
        allowed = self.trust.roles.approve
        if roles & allowed:
            return None
        return f"{name} ({RolePolicy.spell(roles)}) may not approve (approve roles: {RolePolicy.spell(allowed)})"

    def scan(self, commits: Sequence[CommitInfo]) -> tuple[list[Approval], list[RejectedApproval]]:
        """Approvals found in these first-parent commits (any order), and those that count for nothing."""
        candidates: list[tuple[CommitInfo, list[tuple[str, str]], list[str], tuple[tuple[str, str], ...]]] = []
        for commit in commits:
            targets: list[tuple[str, str]] = []
            invalid: list[str] = []
            for value in commit.approves:
                try:
                    targets.append(parse_target(value))
                except ValueError:
                    invalid.append(value)
            merged = self.merged_versions(commit) if commit.is_merge else ()
            if targets or invalid or merged:
                candidates.append((commit, targets, invalid, merged))
        checks = self.verifier.check(self.repo, [c.sha for c, *_ in candidates])
        approvals: list[Approval] = []
        rejected: list[RejectedApproval] = []
        for commit, targets, invalid, merged in candidates:
            check = checks[commit.sha]
            for value in invalid:
                rejected.append(
                    RejectedApproval(
                        value, "", commit.sha, check.principal or "", f"{value!r} is not MODULE@VERSION", "commit"
                    )
                )
            signer = self.trust.principal(check.principal) if check.trusted and check.principal else None
            if signer is not None and signer.is_control_plane:
                self._api_approvals(commit, signer, targets, approvals, rejected)
            refused = check.reason if not check.trusted else self._may_approve(check.principal or "", check.roles)
            for module, version in targets if signer is None or not signer.is_control_plane else []:
                if refused is None:
                    assert check.principal is not None
                    approvals.append(Approval(module, version, check.principal, check.roles, commit.sha, "commit"))
                else:
                    rejected.append(
                        RejectedApproval(module, version, commit.sha, check.principal or check.key, refused)
                    )
            if merged:
                self._merge_approvals(commit, check, merged, approvals, rejected)
        return approvals, rejected

    def _api_approvals(
        self,
        commit: CommitInfo,
        signer: Principal,
        targets: list[tuple[str, str]],
        approvals: list[Approval],
        rejected: list[RejectedApproval],
    ) -> None:
        """Approvals the control plane signed: one per principal its Hotswap-Approved-By names."""
        if not commit.api_approved_by:
            reason = f"signed by the control plane ({signer.name}) without {API_APPROVED_BY_TRAILER}: nobody approved"
            rejected += [RejectedApproval(m, v, commit.sha, signer.name, reason, "api") for m, v in targets]
            return
        for name in commit.api_approved_by:
            caller = self.trust.principal(name)
            if caller is None or caller.is_control_plane:
                reason = f"{API_APPROVED_BY_TRAILER} names {name!r}, who is not a principal of the trust root"
                rejected += [RejectedApproval(m, v, commit.sha, name, reason, "api") for m, v in targets]
                continue
            roles = caller.roles & signer.acts_for
            refused = self._may_approve(caller.name, roles)
            if refused is not None:
                reason = f"{refused}, as far as the control plane may act for ({RolePolicy.spell(signer.acts_for)})"
                rejected += [RejectedApproval(m, v, commit.sha, caller.name, reason, "api") for m, v in targets]
                continue
            approvals += [Approval(m, v, caller.name, roles, commit.sha, "api") for m, v in targets]

    def _merge_approvals(
        self,
        merge: CommitInfo,
        check: CommitCheck,
        merged: tuple[tuple[str, str], ...],
        approvals: list[Approval],
        rejected: list[RejectedApproval],
    ) -> None:
        if not check.trusted:
            claimed = ", ".join(merge.approved_by) or check.principal or check.key
            reason = check.reason + ("; its Approved-by trailers count for nothing" if merge.approved_by else "")
            rejected += [RejectedApproval(m, v, merge.sha, claimed, reason, "merge") for m, v in merged]
            return
        assert check.principal is not None
        signer_is_merger = MERGER_ROLE in check.roles
        if check.roles - {MERGER_ROLE} and self._may_approve(check.principal, check.roles) is None:
            approvals += [Approval(m, v, check.principal, check.roles, merge.sha, "merge") for m, v in merged]
        for name in merge.approved_by:
            principal = self.trust.principal(name)
            if not signer_is_merger:
                reason = (
                    f"Approved-by trailers count only on a merge signed by a merger key; "
                    f"{merge.short} is signed by {check.principal}"
                )
            elif principal is None:
                reason = f"Approved-by names {name!r}, who is not a principal of the trust root"
            elif (refused := self._may_approve(principal.name, principal.roles)) is not None:
                reason = refused
            else:
                approvals += [Approval(m, v, principal.name, principal.roles, merge.sha, "merge") for m, v in merged]
                continue
            rejected += [RejectedApproval(m, v, merge.sha, name, reason, "merge") for m, v in merged]
