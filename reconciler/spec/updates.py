"""The `ModuleUpdate` kind: watch an OCI repository and bump a Module in Git when a newer tag appears.

Where it sits: one more fleet document, read by the loader with the other kinds; the control plane's
update automation (`reconciler.apply.updates`) acts on it, the way Flux's image-automation controllers do:
it lists the repository's tags every `intervalSeconds`, takes the highest semver tag inside `semver`
that is newer than the Module's `version`, and writes a signed commit (or a branch, for a pull
request) that sets the Module's `version` and `source.oci` (with the digest). From there the commit
is like any other: approvals, interface gates and the rollout strategy apply.

```yaml
apiVersion: hotswap.dev/v1
kind: ModuleUpdate
metadata: {name: greeter}
spec:
  module: greeter                            # a Module of this fleet
  repository: registry.example.com/team/greeter
  semver: ">=1.0.0 <2.0.0"                   # or ^1.2.0, ~1.2.0, 1.x, *
  intervalSeconds: 60
  write: commit                              # or branch: hotswap/update/greeter-1.3.0, for review
  author: ci-bot@example.com                 # signing policy: whom the control plane commits for
```
"""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import Field, field_validator

from reconciler.spec.fields import SEMVER_RE, Name, Spec
from reconciler.spec.models import Document

MAX_TAG: Final = 128

Version = tuple[int, int, int, tuple[int | str, ...]]  # a release sorts after its pre-releases (see key)


def parse_version(text: str) -> Version | None:
    """A semver tag (`1.2.3`, `v1.2.3`, `1.2.3-rc.1`), or None for any other tag: a Module's semver
    (`SEMVER_RE`, no leading zeros, nothing after it), `v`-prefixed or not, without build metadata
    (an OCI tag cannot hold `+`)."""
    bare = text.removeprefix("v")
    match = SEMVER_RE.match(bare) if len(text) <= MAX_TAG and "+" not in bare else None
    if match is None:
        return None
    pre = tuple(int(p) if p.isdigit() else p for p in match.group(4).split(".")) if match.group(4) else ()
    return int(match.group(1)), int(match.group(2)), int(match.group(3)), pre


def version_key(version: Version) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Sorts by semver precedence: 1.2.0-rc.1 < 1.2.0 < 1.2.1."""
    major, minor, patch, pre = version
    parts = tuple((0, p) if isinstance(p, int) else (1, p) for p in pre)
    return major, minor, patch, 0 if pre else 1, parts


class Range:
    """A semver range: comparators joined by spaces (all must hold), alternatives by `||`.

    `>=1.2.0 <2.0.0`, `^1.2.3` (same major; for 0.x the same minor), `~1.2.3` (same minor), `1.x` or
    `1.2` (that prefix), `*` (any). As in node-semver, a pre-release matches only an alternative with
    a comparator that names a pre-release of the same MAJOR.MINOR.PATCH (`>=1.3.0-rc.1` admits
    `1.3.0-rc.2`, never `1.4.0-beta` nor `2.0.0-rc.1`)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.alternatives: list[list[tuple[str, Version]]] = []
        for alternative in text.split("||"):
            words = alternative.split()
            if not words:
                raise ValueError(f"{text!r}: an empty alternative")
            comparators: list[tuple[str, Version]] = []
            for word in words:
                comparators.extend(_comparators(word, text))
            self.alternatives.append(comparators)

    def __contains__(self, version: Version) -> bool:
        key = version_key(version)
        for alternative in self.alternatives:
            if version[3] and not any(bound[3] and bound[:3] == version[:3] for _, bound in alternative):
                continue
            if all(_holds(op, key, version_key(bound)) for op, bound in alternative):
                return True
        return False


def _holds(op: str, key: object, bound: object) -> bool:
    assert isinstance(key, tuple) and isinstance(bound, tuple)
    return {
        ">=": key >= bound,
        ">": key > bound,
        "<=": key <= bound,
        "<": key < bound,
        "=": key == bound,
    }[op]


_WORD: Final = re.compile(r"(>=|<=|>|<|=|\^|~)?(.+)")
_PARTIAL: Final = re.compile(r"v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?\Z")


def _comparators(word: str, text: str) -> list[tuple[str, Version]]:
    def refuse() -> ValueError:
        return ValueError(f"{text!r}: {word!r} is not a semver comparator (>=1.2.0, <2.0.0, ^1.2.0, ~1.2.0, 1.x, *)")

    match = _WORD.fullmatch(word)
    if match is None:
        raise refuse()
    op, rest = match.group(1), match.group(2)
    exact = parse_version(rest)
    if exact is not None:
        major, minor, patch, _ = exact
        if op in (">=", "<=", ">", "<", "="):
            return [(op, exact)]
        if op is None:
            return [("=", exact)]
        if op == "~":
            return [(">=", exact), ("<", (major, minor + 1, 0, ()))]
        upper = (major + 1, 0, 0, ()) if major else (0, minor + 1, 0, ()) if minor else (0, 0, patch + 1, ())
        return [(">=", exact), ("<", upper)]
    partial = _PARTIAL.match(rest)
    if partial is None or op not in (None, "="):
        raise refuse()
    parts = [p for p in partial.groups() if p is not None]
    numbers = []
    for part in parts:
        if part in ("x", "X", "*"):
            break
        numbers.append(int(part))
    if len(numbers) < len(parts) and any(p not in ("x", "X", "*") for p in parts[len(numbers) :]):
        raise refuse()  # a wildcard before a number: 1.x.3
    if len(numbers) == 0:
        return [(">=", (0, 0, 0, ()))]
    if len(numbers) == 1:
        return [(">=", (numbers[0], 0, 0, ())), ("<", (numbers[0] + 1, 0, 0, ()))]
    if len(numbers) == 2:
        return [(">=", (numbers[0], numbers[1], 0, ())), ("<", (numbers[0], numbers[1] + 1, 0, ()))]
    return [("=", (numbers[0], numbers[1], numbers[2], ()))]


class ModuleUpdateSpec(Spec):
    module: Name = Field(description="the Module whose version and source.oci are bumped")
    repository: str = Field(
        min_length=3,
        max_length=512,
        pattern=r"^[A-Za-z0-9.-]+(:\d+)?/[a-z0-9]+(?:[._/-][a-z0-9]+)*$",
        description="REGISTRY/REPO whose semver tags are the module's versions",
    )
    semver: str = Field("*", max_length=256, description="the range of tags to take: >=1.0.0 <2.0.0, ^1.2.0, ~1.2.0")
    interval_seconds: float = Field(60, ge=1, le=86400, description="how often the tags are listed")
    author: str | None = Field(
        None,
        max_length=256,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$",
        description="under a signing policy: the trust file's principal (with the author role) the control"
        " plane signs the bump for (Hotswap-Requested-By), as for an API write; none: the control plane alone",
    )
    write: Literal["commit", "branch"] = Field(
        "commit",
        description="commit: to the tracked branch (approval and the rollout strategy still apply);"
        " branch: to hotswap/update/MODULE-VERSION, for a pull request",
    )

    @field_validator("semver")
    @classmethod
    def _range(cls, value: str) -> str:
        Range(value)
        return value

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        from reconciler.spec.ocireference import Reference

        Reference.parse(f"{value}:latest")  # what the bump will write in source.oci must parse
        return value


class ModuleUpdate(Document):
    kind: Literal["ModuleUpdate"] = "ModuleUpdate"
    spec: ModuleUpdateSpec
