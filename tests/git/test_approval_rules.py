"""reconciler.spec.approvals: the pure rule the planner applies to a revision's approvals."""

from __future__ import annotations

import pytest

from reconciler.spec.approvals import Approval, ApprovalRule, RejectedApproval, evaluate, parse_target

ADMIN = frozenset({"admin"})
DEV = frozenset({"developer"})


def approval(principal: str, roles: frozenset[str], version: str = "1.1.0", via: str = "commit") -> Approval:
    return Approval("greeter", version, principal, roles, "c" * 40, via)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rule", "approvals", "satisfied", "by"),
    [
        (ApprovalRule.of(["admin"], 1), [approval("a", ADMIN)], True, ("a",)),
        (ApprovalRule.of(["admin"], 1), [approval("b", DEV)], False, ()),
        (ApprovalRule.of(["admin", "developer"], 2), [approval("a", ADMIN), approval("b", DEV)], True, ("a", "b")),
        (ApprovalRule.of(["admin"], 2), [approval("a", ADMIN), approval("a", ADMIN, via="merge")], False, ("a",)),
        (ApprovalRule.of(["admin"], 1), [approval("a", ADMIN, version="1.0.0")], False, ()),
        (ApprovalRule.of(["admin"], 1), [], False, ()),
    ],
)
def test_rule_table(rule: ApprovalRule, approvals: list[Approval], satisfied: bool, by: tuple[str, ...]) -> None:
    result = evaluate(rule, "greeter", "1.1.0", approvals)
    assert result.satisfied is satisfied
    assert result.approved_by == by
    assert result.missing == max(0, rule.count - len(by))


def test_result_messages_and_ignored_approvals() -> None:
    rule = ApprovalRule.of(["admin"], 2)
    rejected = RejectedApproval("greeter", "1.1.0", "d" * 40, "mallory", "commit is not signed")
    result = evaluate(rule, "greeter", "1.1.0", [approval("a", ADMIN), approval("b", DEV)], [rejected])
    assert result.message == "greeter@1.1.0 needs 1 more approval(s) from 2 of [admin]; approved by a"
    assert [i.claimed for i in result.ignored] == ["mallory", "b"]
    assert str(rejected) == "approval of greeter@1.1.0 by mallory in commit dddddddddddd ignored: commit is not signed"
    ok = evaluate(ApprovalRule.of(["admin"], 1), "greeter", "1.1.0", [approval("a", ADMIN)])
    assert ok.message == "greeter@1.1.0 approved by a (1 of [admin])"
    assert approval("a", ADMIN).target == "greeter@1.1.0"


def test_rule_construction_is_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ApprovalRule.of(["admin"], 0)
    with pytest.raises(ValueError, match="at least one role"):
        ApprovalRule.of([], 1)


@pytest.mark.parametrize("text", ["greeter@1.1.0", " greeter@1.1.0-rc.1 ", "a-b@0.0.1+build.5"])
def test_parse_target_accepts(text: str) -> None:
    module, version = parse_target(text)
    assert f"{module}@{version}" == text.strip()


@pytest.mark.parametrize("text", ["greeter", "Greeter@1.0.0", "greeter@1.0", "greeter@v1.0.0", "@1.0.0"])
def test_parse_target_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not MODULE@VERSION"):
        parse_target(text)
