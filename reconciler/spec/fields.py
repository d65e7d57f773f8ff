"""The building blocks of every fleet model: the `Spec` base, names, semver versions, digests.

Where it sits: under the fleet models (`reconciler.spec.models` for Fleet, Module and Interface,
`reconciler.spec.strategies` for RolloutStrategy, and `alerts`, `updates`), which all derive from
`Spec`: camelCase on the wire, snake_case in Python, unknown fields forbidden, immutable. The API
and the registry check names and versions with the same patterns.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

__all__ = [
    "DIGEST_PATTERN",
    "NAME_PATTERN",
    "SEMVER_RE",
    "Digest",
    "Metadata",
    "Name",
    "SemVer",
    "Spec",
    "check_semver",
    "semver_key",
]

SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z"
)
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"


def check_semver(value: str) -> str:
    if not SEMVER_RE.match(value):
        raise ValueError(f"{value!r} is not semver (MAJOR.MINOR.PATCH, e.g. 1.2.0)")
    return value


def semver_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key for semver strings: releases after their pre-releases."""
    match = SEMVER_RE.match(version)
    if not match:
        raise ValueError(f"{version!r} is not semver")
    major, minor, patch, pre = match.group(1), match.group(2), match.group(3), match.group(4)
    return (int(major), int(minor), int(patch), 0 if pre else 1, pre or "")


def _number_to_text(value: Any) -> Any:
    """YAML reads `version: 1.2` as a number; say it is not semver rather than "not a string"."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


SemVer = Annotated[str, BeforeValidator(_number_to_text), AfterValidator(check_semver)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]


class Spec(BaseModel):
    """Base of every model: camelCase aliases, unknown fields forbidden, immutable."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Metadata(Spec):
    name: Name
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
