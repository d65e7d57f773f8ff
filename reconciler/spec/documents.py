"""Fleet documents: YAML files under a fleet root to validated models, each with its file and line.

Where it sits: the first step of the loader (`reconciler.spec.loader`). `fleet_files` finds the
YAML files, `read_file` parses one within its size cap (`reconciler.spec.limits`: no anchors or
aliases, bounded depth) and validates each document against its kind's model
(`reconciler.spec.models`, `alerts`, `updates`); results are cached by content, since a revision
usually changes a few files of many. Problems go to a `Collector` as `path:line: field: message`,
with the line of the deepest YAML node a pydantic error names; `Doc.line_of` is what later steps
(`assemble`, `sources`) use to point at a field too.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.spec.alerts import FLEET_KINDS as KINDS
from reconciler.spec.fleet import Problem
from reconciler.spec.limits import InputLimits, size_problems, yaml_reader
from reconciler.spec.models import (
    API_VERSION,
    FLEET_INPUT,
    Capabilities,
    Document,
    HealthCheck,
    Limits,
    Mount,
    Network,
    SmokeCall,
)

__all__ = [
    "CACHE_ENTRIES",
    "FILE_CACHE",
    "Collector",
    "Doc",
    "Parsed",
    "did_you_mean",
    "field_name",
    "fleet_files",
    "read_file",
    "remember",
]


@dataclass
class Doc:
    """A parsed document with where it came from (path relative to root, its YAML node)."""

    path: str
    file: Path
    node: CommentedMap
    model: Document | None = None

    @property
    def line(self) -> int:
        return _node_line(self.node)

    def line_of(self, loc: Sequence[str | int]) -> int:
        return _deepest_line(self.node, loc)


@dataclass
class Collector:
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str, line: int, where: str, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(path, line, where, message, "warning" if severity == "warning" else "error"))


def field_name(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(document)"


def _node_line(node: Any, default: int = 1) -> int:
    """The 1-based line where a YAML node starts (tagged scalars and the like may not know it)."""
    line = getattr(getattr(node, "lc", None), "line", None)
    return int(line) + 1 if isinstance(line, int) else default


def _deepest_line(node: Any, loc: Sequence[str | int]) -> int:
    """The 1-based line of the deepest node of `loc` that exists in the YAML tree."""
    line = _node_line(node)
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = int(node.lc.key(part)[0]) + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = int(node.lc.item(part)[0]) + 1
            node = node[part]
        else:
            break
    return line


def _plain(node: Any) -> Any:
    """ruamel's round-trip types to plain Python (pydantic should see dict/list/str/int/float)."""
    if isinstance(node, Mapping):
        return {str(k) if not isinstance(k, (int, float, bool)) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return str(node)


def fleet_files(root: Path) -> list[Path]:
    """Every YAML file under `root`, hidden folders and files skipped, in a stable order."""
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.suffix in (".yaml", ".yml") and path.is_file():
            files.append(path)
    return sorted(files)


def _yaml() -> YAML:
    return yaml_reader("rt")  # no anchors or aliases, bounded depth (reconciler.spec.limits)


_T = TypeVar("_T")
Parsed = tuple[tuple[tuple[CommentedMap, Document | None], ...], tuple[Problem, ...]]
FILE_CACHE: OrderedDict[tuple[str, str], Parsed] = OrderedDict()
CACHE_ENTRIES = 8192


def remember(cache: OrderedDict[tuple[str, str], _T], key: tuple[str, str], value: _T) -> _T:
    cache[key] = value
    while len(cache) > CACHE_ENTRIES:
        cache.popitem(last=False)
    return value


def _parse_file(rel: str, text: str) -> Parsed:
    """A file's documents, validated against their kinds, and its problems; cached by content.

    A revision usually changes a few files of many: their parse and schema check is what costs
    (ruamel's round-trip parser is about 2 ms a file), so unchanged files are taken from the cache.
    """
    key = (rel, hashlib.sha256(text.encode()).hexdigest())
    hit = FILE_CACHE.get(key)
    if hit is not None:
        FILE_CACHE.move_to_end(key)
        return hit
    out = Collector()
    parsed: list[tuple[CommentedMap, Document | None]] = []
    try:
        nodes = list(_yaml().load_all(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        message = " ".join(str(x) for x in (exc.context, exc.problem) if x) or "invalid YAML"
        out.add(rel, line, "yaml", message.replace("\n", " "))
        nodes = []
    except (YAMLError, ValueError, RecursionError) as exc:
        out.add(rel, 0, "yaml", str(exc).splitlines()[0] if str(exc) else "invalid YAML")
        nodes = []
    for node in nodes:
        if node is None:
            continue
        if not isinstance(node, CommentedMap):
            out.add(rel, _node_line(node), "(document)", "a document must be a mapping with kind, metadata and spec")
            continue
        doc = Doc(rel, Path(rel), node)
        _validate_document(doc, out)
        parsed.append((node, doc.model))
    return remember(FILE_CACHE, key, (tuple(parsed), tuple(out.problems)))


def read_file(rel: str, file: Path, out: Collector, limits: InputLimits) -> Parsed | None:
    """A YAML file's documents and problems; None when it is over its cap or unreadable (said in `out`)."""
    try:
        oversize = size_problems([(rel, file.stat().st_size)], limits)
        if oversize:
            out.problems.extend(oversize)
            return None
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        out.add(rel, 0, "file", f"cannot be read: {exc}")
        return None
    return _parse_file(rel, text)


_MODEL_KEY = re.compile(r"`(\w+)`")


def _validate_document(doc: Doc, out: Collector) -> None:
    kind = doc.node.get("kind")
    if kind is None:
        out.add(doc.path, doc.line, "kind", f"missing; one of {', '.join(KINDS)}")
        return
    if not isinstance(kind, str) or kind not in KINDS:
        out.add(doc.path, doc.line_of(["kind"]), "kind", f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
        return
    api = doc.node.get("apiVersion", API_VERSION)
    if api != API_VERSION:
        out.add(doc.path, doc.line_of(["apiVersion"]), "apiVersion", f"{api!r} is not {API_VERSION}")
        return
    try:
        doc.model = KINDS[kind].model_validate(_plain(doc.node), context=FLEET_INPUT)
    except ValidationError as exc:
        for error in exc.errors():
            loc = [p for p in error["loc"] if isinstance(p, (str, int))]
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field" + _suggest(doc.node, loc)
            elif error["type"] == "missing":
                message = "required field is missing"
            elif error["type"] == "literal_error" and loc and loc[-1] == "kind":
                continue
            key = _MODEL_KEY.match(message)
            if key:
                loc = [*loc, key.group(1)]
            out.add(doc.path, doc.line_of(loc), field_name(loc), message)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'X'?` when one of `known` is close to `name` (a misspelled reference), else ''."""
    import difflib

    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _suggest(node: Any, loc: Sequence[str | int]) -> str:
    """`; did you mean X?` for an unknown key close to a known one of the same model."""
    import difflib

    from reconciler.spec.fields import Spec

    known: set[str] = set()
    # every Spec model, those of other modules (strategies, alerts) too, and the node protocol's a Module uses
    specs: list[type[BaseModel]] = [Spec, Limits, Capabilities, Mount, Network, HealthCheck, SmokeCall]
    while specs:
        model = specs.pop()
        specs.extend(model.__subclasses__())
        known.update(f.alias or to_camel(name) for name, f in model.model_fields.items())
    if not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], sorted(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""
