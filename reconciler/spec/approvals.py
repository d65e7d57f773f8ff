"""Approvals as facts about a fleet revision, and the rule that says whether enough were given.

Where it sits: the Git source (reconciler.gitsource) reads the tracked branch, verifies signatures
and turns signed `Hotswap-Approve:` commits and signed merge commits into `Approval` records (or
`RejectedApproval` records saying why one counts for nothing). The planner reads those records
from the revision and calls `evaluate()` with the policy's rule; it never calls git. Everything
here is pure data and pure functions: no I/O, no clock.

A rule (`roles`, `count`) is satisfied for `module@version` when at least `count` distinct
principals holding at least one of `roles` approved exactly that version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "ADOPT_TRAILER",
    "API_APPROVED_BY_TRAILER",
    "APPROVED_BY_TRAILER",
    "APPROVE_TRAILER",
    "REQUESTED_BY_TRAILER",
    "Approval",
    "ApprovalRule",
    "RejectedApproval",
    "RuleResult",
    "Via",
    "approvals_for",
    "evaluate",
    "parse_target",
]

APPROVE_TRAILER = "Hotswap-Approve"
APPROVED_BY_TRAILER = "Approved-by"  # on a merge signed by the forge's `merger` key
# On a commit the control plane signs for an API caller (reconciler.gitsource.gitwrite): the principal who
# approved (an approval) or asked for the change (a deployment), whose roles the commit counts for.
API_APPROVED_BY_TRAILER = "Hotswap-Approved-By"
REQUESTED_BY_TRAILER = "Hotswap-Requested-By"
# On a signed commit by a principal who may adopt: the unverified commits it takes responsibility for.
ADOPT_TRAILER = "Hotswap-Adopt"

Via = Literal["commit", "merge", "api"]

_NAME = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_SEMVER = (
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
)
# A module (`greeter`), or a WIT package (`example:greeter`) for breaking interface changes.
_TARGET = re.compile(rf"(?P<module>(?:{_NAME}:)?{_NAME})@(?P<version>{_SEMVER})")


def parse_target(text: str) -> tuple[str, str]:
    """`greeter@1.1.0` -> ("greeter", "1.1.0"); `example:greeter@2.0.0` (an interface package) ->
    ("example:greeter", "2.0.0"); ValueError naming what is wrong otherwise."""
    value = text.strip()
    match = _TARGET.fullmatch(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not MODULE@VERSION (a lowercase module name and a semver version, e.g. greeter@1.1.0) "
            "nor an interface PACKAGE@VERSION (e.g. example:greeter@2.0.0)"
        )
    return match["module"], match["version"]


@dataclass(frozen=True, order=True)
class Approval:
    """`principal` (holding `roles` when it signed) approved `module@version` in `commit`; `via`
    "api" when the control plane signed it for that principal (`Hotswap-Approved-By`)."""

    module: str
    version: str
    principal: str
    roles: frozenset[str]
    commit: str
    via: Via = "commit"

    @property
    def target(self) -> str:
        return f"{self.module}@{self.version}"


@dataclass(frozen=True, order=True)
class RejectedApproval:
    """An approval that counts for nothing, and why (unsigned, unknown key, lacks the role...)."""

    module: str
    version: str
    commit: str
    claimed: str  # the principal or key the approval claims to come from; "" when none
    reason: str
    via: Via = "commit"

    @property
    def target(self) -> str:
        return f"{self.module}@{self.version}"

    def __str__(self) -> str:
        who = f" by {self.claimed}" if self.claimed else ""
        return f"approval of {self.target}{who} in commit {self.commit[:12]} ignored: {self.reason}"


@dataclass(frozen=True)
class ApprovalRule:
    """`count` distinct principals, each holding at least one of `roles`."""

    roles: frozenset[str]
    count: int = 1

    @classmethod
    def of(cls, roles: Iterable[str], count: int) -> ApprovalRule:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        role_set = frozenset(str(r) for r in roles)
        if not role_set:
            raise ValueError("an approval rule needs at least one role")
        return cls(role_set, count)

    def __str__(self) -> str:
        return f"{self.count} of [{', '.join(sorted(self.roles))}]"


@dataclass(frozen=True)
class RuleResult:
    """Whether a rule holds for `module@version`, who satisfied it, and what did not count."""

    module: str
    version: str
    rule: ApprovalRule
    approved_by: tuple[str, ...]  # distinct principals with a required role, sorted
    ignored: tuple[RejectedApproval, ...]

    @property
    def satisfied(self) -> bool:
        return len(self.approved_by) >= self.rule.count

    @property
    def missing(self) -> int:
        return max(0, self.rule.count - len(self.approved_by))

    @property
    def message(self) -> str:
        target = f"{self.module}@{self.version}"
        who = ", ".join(self.approved_by) or "nobody"
        if self.satisfied:
            return f"{target} approved by {who} ({self.rule})"
        return f"{target} needs {self.missing} more approval(s) from {self.rule}; approved by {who}"


def approvals_for(module: str, version: str, approvals: Iterable[Approval]) -> tuple[Approval, ...]:
    return tuple(a for a in approvals if a.module == module and a.version == version)


def evaluate(
    rule: ApprovalRule,
    module: str,
    version: str,
    approvals: Sequence[Approval],
    rejected: Sequence[RejectedApproval] = (),
) -> RuleResult:
    """Does `rule` hold for `module@version`? Approvals by principals without a role are ignored."""
    by: set[str] = set()
    ignored: list[RejectedApproval] = [r for r in rejected if r.module == module and r.version == version]
    for approval in approvals_for(module, version, approvals):
        if approval.roles & rule.roles:
            by.add(approval.principal)
        else:
            held = ", ".join(sorted(approval.roles)) or "none"
            ignored.append(
                RejectedApproval(
                    module,
                    version,
                    approval.commit,
                    approval.principal,
                    f"{approval.principal} holds roles [{held}], the rule needs one of "
                    f"[{', '.join(sorted(rule.roles))}]",
                    approval.via,
                )
            )
    return RuleResult(module, version, rule, tuple(sorted(by)), tuple(ignored))
