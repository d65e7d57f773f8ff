"""Input limits of a fleet: YAML without anchors or aliases, and caps on file and revision sizes.

Where it sits: under everything that reads fleet input. The loader (reconciler.spec.loader) reads
YAML with `yaml_reader()` and refuses YAML files over `InputLimits.yaml_bytes`; the Git source
(reconciler.gitsource) checks the sizes of a revision's files with `size_problems()` from
`git ls-tree` before it exports or parses anything; the approval scanner and the trust-root reader
use the same YAML reader.

- Fleet YAML has no anchors or aliases (`&name`, `*name`, `<<: *name`). Nothing in a fleet needs
  them, and an alias bomb of a few hundred bytes expands to billions of nodes once walked, so the
  reader refuses the first one, naming its line. Nesting deeper than MAX_DEPTH is refused too.
- Sizes: a fleet YAML file at most `yaml_bytes`; a module binary at most the module limit
  (reconciler.spec.models.MAX_MODULE_BYTES, four times that for `.wat` text); all files of a
  revision together at most `revision_bytes`; at most `files` files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.events import AliasEvent

from reconciler.spec.fleet import Problem
from reconciler.spec.models import MAX_MODULE_BYTES

__all__ = ["MAX_DEPTH", "InputLimits", "is_fleet_yaml", "size_problems", "yaml_reader"]

MAX_DEPTH = 100  # nested mappings and sequences in one document
MiB = 1024 * 1024


@dataclass(frozen=True)
class InputLimits:
    """Caps on what one revision of a fleet may hold (`hotswap serve --max-yaml-bytes ...`)."""

    yaml_bytes: int = 1 * MiB  # one fleet YAML file
    revision_bytes: int = 64 * MiB  # every file under the fleet root, together
    files: int = 10_000  # files under the fleet root

    def __post_init__(self) -> None:
        for name in ("yaml_bytes", "revision_bytes", "files"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


def _size(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def is_fleet_yaml(rel: str) -> bool:
    """A path (relative to the fleet root) the loader reads as YAML: `.yaml`/`.yml`, nothing hidden."""
    parts = [part for part in rel.split("/") if part and part != "."]  # as PurePosixPath reads it, cheaper
    return bool(parts) and parts[-1].endswith((".yaml", ".yml")) and not any(p.startswith(".") for p in parts)


def size_problems(files: Iterable[tuple[str, int]], limits: InputLimits) -> list[Problem]:
    """Every file over its cap, and the revision over its total or file count; `files` as (path, bytes)."""
    problems: list[Problem] = []
    listed = list(files)
    for rel, size in listed:
        if is_fleet_yaml(rel) and size > limits.yaml_bytes:
            problems.append(
                Problem(rel, 0, "size", f"{size} bytes, over the {_size(limits.yaml_bytes)} limit of a fleet YAML file")
            )
        cap = MAX_MODULE_BYTES * (4 if rel.endswith(".wat") else 1)
        if rel.endswith((".wasm", ".wat")) and size > cap:
            problems.append(Problem(rel, 0, "size", f"{size} bytes, over the {_size(cap)} module limit"))
    if len(listed) > limits.files:
        problems.append(Problem("", 0, "size", f"{len(listed)} files, over the limit of {limits.files}"))
    total = sum(size for _, size in listed)
    if total > limits.revision_bytes:
        largest = sorted(listed, key=lambda item: -item[1])[:3]
        named = ", ".join(f"{rel} ({size} bytes)" for rel, size in largest)
        problems.append(
            Problem(
                "",
                0,
                "size",
                f"the files total {total} bytes, over the {_size(limits.revision_bytes)} limit of a revision; "
                f"largest: {named}",
            )
        )
    return problems


class _NoAliasComposer(Composer):
    """ruamel's composer, refusing anchors and aliases where it meets them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            what = f"alias *{event.anchor}"
        elif getattr(event, "anchor", None) is not None:
            what = f"anchor &{event.anchor}"
        else:
            return super().compose_node(parent, index)
        raise ComposerError(
            None,
            None,
            f"found {what}: anchors and aliases are not allowed in hotswap YAML (write the value out)",
            event.start_mark,
        )


def yaml_reader(typ: Literal["rt", "safe"] = "rt") -> YAML:
    """A ruamel reader for fleet input: pure Python, no anchors or aliases, depth at most MAX_DEPTH."""
    reader = YAML(typ=typ, pure=True)
    reader.Composer = _NoAliasComposer
    reader.max_depth = MAX_DEPTH
    reader.allow_duplicate_keys = False
    return reader
