"""Breaking-change detection between two revisions of an interface, and what the version must say."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.interfaces import WitPackage, breaking_changes, compare, parse_wit, version_bump_problems
from tests.interfaces.conftest import GREETER

Edit = Callable[[str], str]


@pytest.fixture
def evolve(write_wit: Callable[..., Path], greeter: WitPackage) -> Callable[[Edit], WitPackage]:
    """The greeter package after an edit of its WIT text."""
    count = iter(range(1000))

    def edited(edit: Edit) -> WitPackage:
        return parse_wit(write_wit(edit(GREETER), f"rev{next(count)}/greeter.wit"))

    return edited


def bump(version: str) -> Edit:
    return lambda text: text.replace("@1.0.0;", f"@{version};")


def then(*edits: Edit) -> Edit:
    def run(text: str) -> str:
        for edit in edits:
            text = edit(text)
        return text

    return run


def replace(old: str, new: str) -> Edit:
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new)

    return edit


ADD_FUNCTION = replace("  health: func() -> u32;\n", "  health: func() -> u32;\n  ready: func() -> bool;\n")
REMOVE_FUNCTION = replace("  health: func() -> u32;\n", "")
CHANGE_PARAM = replace("greet: func(name: string) -> string;", "greet: func(name: u32) -> string;")


def test_identical_packages_have_no_changes(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    assert breaking_changes(greeter, evolve(lambda text: text)) == []


def test_added_function_is_compatible(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    changes = breaking_changes(greeter, evolve(ADD_FUNCTION))
    assert [(c.kind, c.item, c.breaking, c.subject) for c in changes] == [("added", "greet.ready", False, "function")]
    assert changes[0].message == "function greet.ready was added"
    evolution = compare(greeter, evolve(then(ADD_FUNCTION, bump("1.1.0"))))
    assert (evolution.problems, evolution.needs_approval, evolution.breaking) == ((), False, ())


def test_removed_function_is_breaking(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    changes = breaking_changes(greeter, evolve(REMOVE_FUNCTION))
    assert [(c.kind, c.item, c.breaking) for c in changes] == [("removed", "greet.health", True)]
    assert str(changes[0]) == "breaking: function greet.health was removed"


def test_changed_parameter_type_is_breaking(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    (change,) = breaking_changes(greeter, evolve(CHANGE_PARAM))
    assert (change.kind, change.item, change.breaking) == ("changed", "greet.greet", True)
    assert change.message == (
        "function greet.greet: parameter `name` changed type from string to u32 "
        "(was func(name: string) -> string, now func(name: u32) -> string)"
    )


@pytest.mark.parametrize(
    ("edit", "detail"),
    [
        (replace("health: func() -> u32;", "health: func() -> u64;"), "result u32 became u64"),
        (replace("health: func() -> u32;", "health: func();"), "result u32 became (none)"),
        (replace("add: func(a: s32, b: s32)", "add: func(a: s32)"), "2 parameters became 1"),
        (replace("add: func(a: s32, b: s32)", "add: func(x: s32, b: s32)"), "parameter `a` was renamed to `x`"),
    ],
)
def test_other_function_changes_are_breaking(
    greeter: WitPackage, evolve: Callable[[Edit], WitPackage], edit: Edit, detail: str
) -> None:
    (change,) = breaking_changes(greeter, evolve(edit))
    assert change.breaking
    assert detail in change.message


def test_type_changes(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    field_added = evolve(replace("    age: u32,\n", "    age: u32,\n    email: string,\n"))
    (change,) = breaking_changes(greeter, field_added)
    assert (change.kind, change.item, change.subject, change.breaking) == ("changed", "greet.person", "type", True)
    assert change.message == (
        "type greet.person: record { name: string, age: u32 } became record { name: string, age: u32, email: string }"
    )
    alias = {c.item: c for c in breaking_changes(greeter, evolve(replace("type score = u64;", "type score = u32;")))}
    assert alias["greet.score"].breaking
    assert "greet.get-score" not in alias  # the function still says `score`: the type carries the change
    added = breaking_changes(
        greeter, evolve(replace("  type score = u64;\n", "  type score = u64;\n  type id = u8;\n"))
    )
    assert [(c.kind, c.item, c.breaking) for c in added] == [("added", "greet.id", False)]


def test_interfaces_and_worlds(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    extra = evolve(
        replace("world greeter {", "interface admin {\n  reset: func();\n}\n\nworld greeter {\n  export admin;")
    )
    assert [(c.kind, c.item, c.breaking) for c in breaking_changes(greeter, extra)] == [
        ("added", "admin", False),
        ("added", "greeter.admin", False),
    ]
    assert [(c.kind, c.item, c.breaking) for c in breaking_changes(extra, greeter)] == [
        ("removed", "admin", True),
        ("removed", "greeter.admin", True),
    ]
    no_world = evolve(replace("world greeter {\n  export greet;\n}\n", ""))
    (change,) = breaking_changes(greeter, no_world)
    assert (change.kind, change.item, change.subject, change.breaking) == ("removed", "greeter", "world", True)
    assert [(c.kind, c.item) for c in breaking_changes(no_world, greeter)] == [("added", "greeter")]


def test_world_function_changes(write_wit: Callable[..., Path]) -> None:
    old = parse_wit(write_wit("package a:w@1.0.0;\nworld w {\n  export run: func() -> u32;\n}\n", "w1/w.wit"))
    new = parse_wit(write_wit("package a:w@2.0.0;\nworld w {\n  export run: func() -> u64;\n}\n", "w2/w.wit"))
    (change,) = breaking_changes(old, new)
    assert (change.kind, change.item, change.breaking) == ("changed", "w.run", True)
    assert change.message == "world w exports run: func() -> u32, now run: func() -> u64"


def test_breaking_without_major_bump_is_refused(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    for version in ("1.0.0", "1.1.0", "1.0.1"):
        evolution = compare(greeter, evolve(then(REMOVE_FUNCTION, CHANGE_PARAM, bump(version))))
        assert len(evolution.breaking) == 2
        assert evolution.problems == (
            f"example:greeter@{version}: breaking change (function greet.greet: parameter `name` changed type "
            "from string to u32 (was func(name: string) -> string, now func(name: u32) -> string) (and 1 more)) "
            "without a major version bump from 1.0.0 (needs 2.0.0)",
        )
        assert not evolution.needs_approval


def test_breaking_with_major_bump_needs_approval(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    evolution = compare(greeter, evolve(then(REMOVE_FUNCTION, bump("2.0.0"))))
    assert (evolution.old, evolution.new) == ("example:greeter@1.0.0", "example:greeter@2.0.0")
    assert evolution.problems == ()
    assert evolution.needs_approval
    assert [c.item for c in evolution.breaking] == ["greet.health"]


@pytest.mark.parametrize(
    ("old", "new", "refused"),
    [
        ("0.1.0", "0.2.0", False),
        ("0.1.0", "0.1.5", True),
        ("0.1.3", "1.0.0", False),
        ("0.0.1", "0.0.2", False),
        ("0.0.1", "0.0.1-rc.1", True),
        ("2.3.4", "3.0.0-rc.1", False),
    ],
)
def test_what_counts_as_a_major_bump(write_wit: Callable[..., Path], old: str, new: str, refused: bool) -> None:
    before = parse_wit(write_wit(GREETER.replace("1.0.0", old), f"{old}/g.wit"))
    after = parse_wit(
        write_wit(GREETER.replace("1.0.0", new).replace("  add: func(a: s32, b: s32) -> s32;\n", ""), f"{new}x/g.wit")
    )
    assert bool(version_bump_problems(before, after, breaking_changes(before, after))) == refused


def test_version_may_not_go_back(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    older = evolve(bump("0.9.0"))
    assert version_bump_problems(greeter, older, []) == [
        "example:greeter@0.9.0: the version went back from 1.0.0 (it must not decrease)"
    ]


def test_unversioned_package_cannot_break(write_wit: Callable[..., Path]) -> None:
    old = parse_wit(write_wit("package a:u;\ninterface i {\n  f: func();\n  g: func();\n}\n", "u1/u.wit"))
    new = parse_wit(write_wit("package a:u;\ninterface i {\n  f: func();\n}\n", "u2/u.wit"))
    (problem,) = version_bump_problems(old, new, breaking_changes(old, new))
    assert problem.startswith("a:u: breaking change (function i.g was removed) in a package without a semver version")


def test_renamed_package_is_breaking(greeter: WitPackage, evolve: Callable[[Edit], WitPackage]) -> None:
    renamed = evolve(replace("example:greeter@1.0.0", "example:welcomer@2.0.0"))
    (change,) = breaking_changes(greeter, renamed)
    assert (change.subject, change.breaking) == ("package", True)
    assert compare(greeter, renamed).needs_approval


def test_wasi_http_evolution(wasi_package: Callable[..., Path]) -> None:
    old = parse_wit(wasi_package("http"))
    edits = then(
        replace("    clone: func() -> fields;\n", ""),
        replace("type status-code = u16;", "type status-code = u32;"),
        replace("  http-error-code:", "  is-retryable: func(code: error-code) -> bool;\n\n  http-error-code:"),
    )
    same_version = parse_wit(wasi_package("http", edits, folder="v1"))
    changes = {c.item: c for c in breaking_changes(old, same_version)}
    assert changes["types.fields.clone"].kind == "removed"
    assert changes["types.status-code"].message == "type types.status-code: type = u16 became type = u32"
    assert not changes["types.is-retryable"].breaking
    assert sorted(i for i, c in changes.items() if c.breaking) == ["types.fields.clone", "types.status-code"]
    assert compare(old, same_version).problems[0].endswith("without a major version bump from 0.2.0 (needs 0.3.0)")
    bumped = parse_wit(wasi_package("http", then(edits, replace("wasi:http@0.2.0;", "wasi:http@0.3.0;")), folder="v2"))
    assert compare(old, bumped).needs_approval


def test_removed_type_and_changed_function_kind(write_wit: Callable[..., Path]) -> None:
    old = parse_wit(
        write_wit(
            "package a:r@1.0.0;\ninterface i {\n  resource r {\n    make: static func() -> r;\n  }\n"
            "  type gone = u8;\n}\n",
            "r1/r.wit",
        )
    )
    new = parse_wit(
        write_wit("package a:r@2.0.0;\ninterface i {\n  resource r {\n    make: func() -> r;\n  }\n}\n", "r2/r.wit")
    )
    changes = {c.item: c for c in breaking_changes(old, new)}
    assert changes["i.gone"].message == "type i.gone was removed"
    assert changes["i.r.make"].kind == "changed"
    assert changes["i.r.make"].message.startswith(
        "function i.r.make: static function became method; 0 parameters became 1"
    )


def _move_wasi_io(root: Path, version: str) -> Path:
    for file in [root / "http.wit", *(root / "deps").glob("*.wit")]:
        text = file.read_text().replace("package wasi:io@0.2.0;", f"package wasi:io@{version};")
        file.write_text(re.sub(r"(wasi:io/[a-z-]+)@0\.2\.0", rf"\1@{version}", text))
    return root


def test_dependency_moving_to_a_compatible_release_is_not_breaking(wasi_package: Callable[..., Path]) -> None:
    old = parse_wit(wasi_package("http"))
    patched = parse_wit(_move_wasi_io(wasi_package("http", folder="io-0.2.3"), "0.2.3"))
    changes = breaking_changes(old, patched)
    assert changes
    assert not [c for c in changes if c.breaking]
    assert "types.input-stream" in {c.item for c in changes}
    assert "proxy.wasi:io/streams@0.2.0" in {c.item for c in changes}
    major = parse_wit(_move_wasi_io(wasi_package("http", folder="io-0.3.0"), "0.3.0"))
    breaking = {c.item for c in breaking_changes(old, major) if c.breaking}
    assert {"types.input-stream", "proxy.wasi:io/streams@0.2.0"} <= breaking
