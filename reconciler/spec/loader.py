"""The fleet loader: every YAML document under a fleet root to a `DesiredFleet`, or every problem.

Flow: find `*.yaml`/`*.yml` files (hidden folders skipped) -> parse each with ruamel.yaml, keeping
line numbers -> validate each document against its kind's model -> check what no single document
can: duplicate names, references between documents, paths that leave the root, module sources
(a `.wat` is compiled, a binary must be valid WebAssembly), pins and overrides naming unknown
versions, capabilities a binary needs but is not granted. All problems are collected, none stops
the others, so a pull request sees every mistake at once, each as `path:line: field: message`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic.alias_generators import to_camel
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from edge import wasm
from reconciler.interfaces import ToolError, WitError, WitPackage, check_module, parse_wit
from reconciler.spec.alerts import FLEET_KINDS as KINDS
from reconciler.spec.alerts import Alert
from reconciler.spec.fleet import Binary, DesiredFleet, Location, Problem
from reconciler.spec.limits import InputLimits, size_problems, yaml_reader
from reconciler.spec.models import (
    API_VERSION,
    FLEET_INPUT,
    MAX_MODULE_BYTES,
    Document,
    Fleet,
    Interface,
    Module,
    RolloutStrategy,
    RolloutStrategySpec,
    Source,
    StrategyType,
    package_of,
)
from reconciler.spec.updates import ModuleUpdate

__all__ = ["LoadResult", "Problem", "load_documents", "load_fleet"]

DEFAULT_LIMITS = InputLimits()


@dataclass(frozen=True)
class LoadResult:
    fleet: DesiredFleet | None
    problems: tuple[Problem, ...]
    documents: int = 0
    files: int = 0

    @property
    def ok(self) -> bool:
        return self.fleet is not None and not self.errors

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")


@dataclass
class _Doc:
    """A parsed document with where it came from (path relative to root, its YAML node)."""

    path: str
    file: Path
    node: CommentedMap
    model: Document | None = None

    @property
    def line(self) -> int:
        return _node_line(self.node)

    def line_of(self, loc: Sequence[str | int]) -> int:
        return _line_of(self.node, loc)


@dataclass
class _Collector:
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: str, line: int, where: str, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(path, line, where, message, "warning" if severity == "warning" else "error"))


def _field_name(loc: Sequence[str | int]) -> str:
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


def _line_of(node: Any, loc: Sequence[str | int]) -> int:
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
_Parsed = tuple[tuple[tuple[CommentedMap, Document | None], ...], tuple[Problem, ...]]
_FILE_CACHE: OrderedDict[tuple[str, str], _Parsed] = OrderedDict()
_BINARY_CACHE: OrderedDict[tuple[str, str], Binary | str] = OrderedDict()
CACHE_ENTRIES = 8192
BinaryReader = Callable[[Path, Path], Binary | str]  # (root, file) -> the binary, or why it is not one


def _remember(cache: OrderedDict[tuple[str, str], _T], key: tuple[str, str], value: _T) -> _T:
    cache[key] = value
    while len(cache) > CACHE_ENTRIES:
        cache.popitem(last=False)
    return value


def _parse_file(rel: str, text: str) -> _Parsed:
    """A file's documents, validated against their kinds, and its problems; cached by content.

    A revision usually changes a few files of many: their parse and schema check is what costs
    (ruamel's round-trip parser is about 2 ms a file), so unchanged files are taken from the cache.
    """
    key = (rel, hashlib.sha256(text.encode()).hexdigest())
    hit = _FILE_CACHE.get(key)
    if hit is not None:
        _FILE_CACHE.move_to_end(key)
        return hit
    out = _Collector()
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
        doc = _Doc(rel, Path(rel), node)
        _validate_document(doc, out)
        parsed.append((node, doc.model))
    return _remember(_FILE_CACHE, key, (tuple(parsed), tuple(out.problems)))


def load_documents(root: Path, out: _Collector, limits: InputLimits = DEFAULT_LIMITS) -> tuple[list[_Doc], int]:
    """Parse and validate every YAML file; problems go to `out`, documents come back with their nodes."""
    docs: list[_Doc] = []
    files = fleet_files(root)
    for file in files:
        rel = file.relative_to(root).as_posix()
        parsed, problems = read_file(rel, file, out, limits) or ((), ())
        out.problems.extend(problems)
        docs.extend(_Doc(rel, file, node, model) for node, model in parsed)
    return docs, len(files)


def read_file(rel: str, file: Path, out: _Collector, limits: InputLimits) -> _Parsed | None:
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


def _validate_document(doc: _Doc, out: _Collector) -> None:
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
            out.add(doc.path, doc.line_of(loc), _field_name(loc), message)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'X'?` when one of `known` is close to `name` (a misspelled reference), else ''."""
    import difflib

    close = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _suggest(node: Any, loc: Sequence[str | int]) -> str:
    """`; did you mean X?` for an unknown key close to a known one of the same model."""
    import difflib

    from reconciler.spec import models

    known: set[str] = set()
    specs: list[type[models.Spec]] = [models.Spec]
    while specs:  # every Spec model, those of other modules (alerts) too
        model = specs.pop()
        specs.extend(model.__subclasses__())
        known.update(f.alias or to_camel(name) for name, f in model.model_fields.items())
    if not loc or not isinstance(loc[-1], str):
        return ""
    close = difflib.get_close_matches(loc[-1], sorted(known), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def load_fleet(root: Path, limits: InputLimits = DEFAULT_LIMITS) -> LoadResult:
    """Load and check the fleet under `root`. Never raises for bad input: problems say what is wrong.

    YAML files over `limits.yaml_bytes` are refused unread; the caller that exports a revision
    checks the revision's total first (reconciler.spec.limits)."""
    out = _Collector()
    root = root.resolve()
    if not root.is_dir():
        out.add("", 0, "path", f"{root} is not a directory")
        return LoadResult(None, tuple(out.problems))
    docs, files = load_documents(root, out, limits)
    return finish(root, docs, files, out)


def finish(root: Path, docs: list[_Doc], files: int, out: _Collector, read: BinaryReader | None = None) -> LoadResult:
    """The cross-document checks over parsed documents, and the result (reconciler.spec.incremental uses it too)."""
    fleet = _assemble(root, docs, out, read or _read_binary)
    problems = tuple(sorted(out.problems, key=lambda p: (p.path, p.line, p.field)))
    if any(p.severity == "error" for p in problems):
        fleet = None
    elif fleet is not None:
        fleet = dataclasses.replace(fleet, warnings=problems)
    return LoadResult(fleet, problems, documents=len(docs), files=files)


def _by_kind(docs: list[_Doc], kind: type[Document], out: _Collector) -> dict[str, _Doc]:
    """Documents of one kind by name; a second document with the same name is a problem."""
    found: dict[str, _Doc] = {}
    for doc in docs:
        if not isinstance(doc.model, kind):
            continue
        name = doc.model.metadata.name
        if name in found:
            first = found[name]
            out.add(
                doc.path,
                doc.line_of(["metadata", "name"]),
                "metadata.name",
                f"{kind.__name__} {name!r} is already defined at {first.path}:{first.line_of(['metadata', 'name'])}",
            )
            continue
        found[name] = doc
    return found


def _cannot_progress(doc: _Doc, spec: RolloutStrategySpec, out: _Collector) -> None:
    """Warn about a strategy whose analysis waits for traffic in a phase that gets none.

    A BlueGreen preview runs the new version at 0 %: only requests that name it (X-Hotswap-Version)
    reach it. An explicit analysis that needs requests and pauses without them stops every rollout
    there (the rollout says `CannotProgress`). Without a traffic figure for the fleet, whether a
    canary step can collect `minRequests` is not judged here.
    """
    analysis = spec.analysis
    if spec.type is not StrategyType.BLUE_GREEN or analysis is None or not analysis.waits_for_traffic:
        return
    loc: list[str | int] = ["spec", "analysis", "minRequests"]
    out.add(
        doc.path,
        doc.line_of(loc),
        _field_name(loc),
        f"this strategy cannot progress without preview traffic: the preview runs at 0% (only requests with"
        f" X-Hotswap-Version reach it) and analysis needs {analysis.min_requests} requests with onNoTraffic:"
        " pause; set onNoTraffic: proceed or minRequests: 0, or leave analysis out (BlueGreen then moves on"
        " once the new version is loaded and healthy)",
        "warning",
    )


def _assemble(root: Path, docs: list[_Doc], out: _Collector, read: BinaryReader) -> DesiredFleet | None:
    fleets = [d for d in docs if isinstance(d.model, Fleet)]
    if not fleets and not any(d.node.get("kind") == "Fleet" for d in docs):
        out.add("", 0, "kind", "no Fleet document found; a fleet root needs exactly one")
    for extra in fleets[1:]:
        out.add(
            extra.path,
            extra.line_of(["kind"]),
            "kind",
            f"a second Fleet; the first is at {fleets[0].path}:{fleets[0].line}, a fleet root has exactly one",
        )
    modules = _by_kind(docs, Module, out)
    strategies = _by_kind(docs, RolloutStrategy, out)
    interfaces = _by_kind(docs, Interface, out)
    alerts = _by_kind(docs, Alert, out)
    updates = _by_kind(docs, ModuleUpdate, out)
    for doc in updates.values():
        assert isinstance(doc.model, ModuleUpdate)
        if doc.model.spec.module not in modules:
            module_loc: list[str | int] = ["spec", "module"]
            message = f"no Module named {doc.model.spec.module!r}{did_you_mean(doc.model.spec.module, modules)}"
            out.add(doc.path, doc.line_of(module_loc), _field_name(module_loc), message)
    for doc in alerts.values():
        assert isinstance(doc.model, Alert)
        for i, module in enumerate(doc.model.spec.modules):
            if module not in modules:
                where: list[str | int] = ["spec", "modules", i]
                message = f"no Module named {module!r}{did_you_mean(module, modules)}"
                out.add(doc.path, doc.line_of(where), _field_name(where), message)
    if not fleets:
        return None
    fleet_doc = fleets[0]
    assert isinstance(fleet_doc.model, Fleet)
    fleet = fleet_doc.model
    regions = set(fleet.spec.region_names)

    def region_refs(doc: _Doc, names: Sequence[str], loc: list[str | int]) -> None:
        for i, name in enumerate(names):
            if name not in regions:
                out.add(
                    doc.path,
                    doc.line_of([*loc, i]),
                    _field_name([*loc, i]),
                    f"unknown region {name!r} (the Fleet has {', '.join(sorted(regions))})"
                    + did_you_mean(name, regions),
                )

    for doc in strategies.values():
        assert isinstance(doc.model, RolloutStrategy)
        spec = doc.model.spec
        if spec.type is StrategyType.REGIONAL and spec.regional is not None:
            region_refs(doc, spec.regional.order or [], ["spec", "regional", "order"])
            inner = spec.regional.per_region
            if inner is not None:
                target = strategies.get(inner)
                loc: list[str | int] = ["spec", "regional", "perRegion"]
                if target is None:
                    message = f"no RolloutStrategy named {inner!r}{did_you_mean(inner, strategies)}"
                    out.add(doc.path, doc.line_of(loc), _field_name(loc), message)
                elif isinstance(target.model, RolloutStrategy) and target.model.spec.type is StrategyType.REGIONAL:
                    out.add(
                        doc.path,
                        doc.line_of(loc),
                        _field_name(loc),
                        "a Regional strategy cannot nest another",
                    )
        _cannot_progress(doc, spec, out)
        steps = spec.step_count()
        for i, gate in enumerate(spec.approval.gates):
            if gate >= steps:
                loc = ["spec", "approval", "gates", i]
                out.add(
                    doc.path,
                    doc.line_of(loc),
                    _field_name(loc),
                    f"step {gate} does not exist ({steps} steps)",
                )

    packages = {d.model.spec.package: name for name, d in interfaces.items() if isinstance(d.model, Interface)}
    wit_packages: dict[str, WitPackage] = {}
    for name, doc in interfaces.items():
        assert isinstance(doc.model, Interface)
        wit_path = _check_path(root, doc, doc.model.spec.wit, ["spec", "wit"], out, must_be_file=False)
        if wit_path is not None:
            parsed = _parse_wit(root, doc, wit_path, out)
            if parsed is not None:
                wit_packages[name] = parsed

    binaries: dict[tuple[str, str], Binary] = {}
    cache: dict[Path, Binary | str] = {}
    locations = {("Fleet", fleet.metadata.name): Location(fleet_doc.path, fleet_doc.line)}
    for kind, group in (("Module", modules), ("RolloutStrategy", strategies), ("Interface", interfaces)):
        for name, doc in group.items():
            locations[(kind, name)] = Location(doc.path, doc.line)

    pending_checks: list[tuple[_Doc, Interface, WitPackage | None]] = []
    for name, doc in modules.items():
        assert isinstance(doc.model, Module)
        mspec = doc.model.spec
        if mspec.rollout is not None and mspec.rollout not in strategies:
            out.add(
                doc.path,
                doc.line_of(["spec", "rollout"]),
                "spec.rollout",
                f"no RolloutStrategy named {mspec.rollout!r}{did_you_mean(mspec.rollout, strategies)}",
            )
        if mspec.implements is not None:
            package = package_of(mspec.implements)
            if package not in packages:
                out.add(
                    doc.path,
                    doc.line_of(["spec", "implements"]),
                    "spec.implements",
                    f"no Interface declares package {package!r}{did_you_mean(package, packages)}",
                )
            elif interfaces[packages[package]].model is not None:
                iface = interfaces[packages[package]].model
                assert isinstance(iface, Interface)
                pending_checks.append((doc, iface, wit_packages.get(packages[package])))
                if iface.spec.deprecated:
                    out.add(
                        doc.path,
                        doc.line_of(["spec", "implements"]),
                        "spec.implements",
                        f"interface {package} is deprecated"
                        + (f": {iface.spec.deprecation_message}" if iface.spec.deprecation_message else ""),
                        "warning",
                    )
        region_refs(doc, mspec.placement.regions or [], ["spec", "placement", "regions"])
        known = mspec.all_versions()
        seen_versions: set[str] = set()
        for i, version in enumerate(known):
            if version in seen_versions:
                loc = ["spec", "versions", i - 1, "version"]
                out.add(doc.path, doc.line_of(loc), _field_name(loc), f"version {version} is listed twice")
            seen_versions.add(version)
        for i, override in enumerate(mspec.placement.version_overrides):
            base: list[str | int] = ["spec", "placement", "versionOverrides", i]
            region_refs(doc, override.regions, [*base, "regions"])
            if override.version not in known:
                out.add(
                    doc.path,
                    doc.line_of([*base, "version"]),
                    _field_name([*base, "version"]),
                    f"version {override.version} is not one of this module's versions ({', '.join(known)})",
                )
        for node, version in mspec.placement.pins.items():
            if version not in known:
                loc = ["spec", "placement", "pins", node]
                out.add(
                    doc.path,
                    doc.line_of(loc),
                    _field_name(loc),
                    f"pins unknown version {version} ({', '.join(known)} are declared)",
                )
        sources: list[tuple[str, Source, str | None, list[str | int]]] = [
            (mspec.version, mspec.source, mspec.sha256, ["spec", "source"])
        ]
        sources += [
            (v.version, v.source, v.sha256, ["spec", "versions", i, "source"]) for i, v in enumerate(mspec.versions)
        ]
        for version, source, pin, loc in sources:
            if source.oci is not None and fleet.spec.environment != "dev" and "@" not in source.oci:
                oci_loc = [*loc, "oci"]
                message = (
                    f"a {fleet.spec.environment} fleet names the artifact by digest: "
                    f"{source.oci}@sha256:... (`hotswap push` prints it); a tag alone only in a dev fleet"
                )
                out.add(doc.path, doc.line_of(oci_loc), _field_name(oci_loc), message)
            if source.path is None:
                continue
            binary = _binary(root, doc, source.path, [*loc, "path"], out, cache, read)
            if binary is None:
                continue
            if pin is not None and "sha256:" + pin.removeprefix("sha256:") != binary.digest:
                pin_loc = [*loc[:-1], "sha256"]
                out.add(
                    doc.path,
                    doc.line_of(pin_loc),
                    _field_name(pin_loc),
                    f"pinned {pin} but the binary is {binary.digest}",
                )
            _check_binary(doc, binary, mspec.limits.memory_mb, loc, out)
            binaries[(name, version)] = binary
        if mspec.health_check is not None and (name, mspec.version) in binaries:
            info = binaries[(name, mspec.version)].info
            if not info.component and info.export(mspec.health_check.function) is None:
                loc = ["spec", "healthCheck", "function"]
                out.add(
                    doc.path,
                    doc.line_of(loc),
                    _field_name(loc),
                    f"the binary exports no function {mspec.health_check.function!r}",
                )
        if mspec.smoke and (name, mspec.version) in binaries:
            info = binaries[(name, mspec.version)].info
            for i, smoke in enumerate(mspec.smoke):
                if not info.component and info.export(smoke.function) is None:
                    loc = ["spec", "smoke", i, "function"]
                    message = f"the binary exports no function {smoke.function!r}"
                    out.add(doc.path, doc.line_of(loc), _field_name(loc), message)
    for doc, iface, wit in pending_checks:
        if wit is not None:
            _check_implements(doc, iface, wit, binaries, out)
    return DesiredFleet(
        fleet=fleet,
        modules={n: d.model for n, d in modules.items() if isinstance(d.model, Module)},
        strategies={n: d.model for n, d in strategies.items() if isinstance(d.model, RolloutStrategy)},
        interfaces={n: d.model for n, d in interfaces.items() if isinstance(d.model, Interface)},
        binaries=binaries,
        locations=locations,
        wit_packages=wit_packages,
        alerts={n: d.model for n, d in alerts.items() if isinstance(d.model, Alert)},
        updates={n: d.model for n, d in updates.items() if isinstance(d.model, ModuleUpdate)},
    )


def _parse_wit(root: Path, doc: _Doc, target: Path, out: _Collector) -> WitPackage | None:
    """Resolve an Interface's WIT with wasm-tools; its errors name the WIT file's own line."""
    assert isinstance(doc.model, Interface)
    loc: list[str | int] = ["spec", "wit"]
    try:
        package = parse_wit(target)
    except WitError as exc:
        base = target if target.is_file() else target / (exc.file or "")
        where = base.relative_to(root).as_posix() if base.is_relative_to(root) else (exc.file or target.name)
        line = f":{exc.line}" if exc.line else ""
        out.add(doc.path, doc.line_of(loc), _field_name(loc), f"{where}{line}: {exc.message}")
        return None
    except ToolError as exc:
        out.add(doc.path, doc.line_of(loc), _field_name(loc), f"cannot run wasm-tools: {exc}")
        return None
    declared = doc.model.spec.package
    if package.name != declared:
        out.add(
            doc.path,
            doc.line_of(["spec", "package"]),
            "spec.package",
            f"{declared!r} does not match the WIT, which declares {package.name!r}",
        )
    return package


def _check_implements(
    doc: _Doc, iface: Interface, wit: WitPackage, binaries: Mapping[tuple[str, str], Binary], out: _Collector
) -> None:
    """Every version of a module that `implements` an interface must satisfy it."""
    assert isinstance(doc.model, Module)
    spec = doc.model.spec
    assert spec.implements is not None
    ref = spec.implements.split("/", 1)[1].split("@", 1)[0] if "/" in spec.implements else None
    loc: list[str | int] = ["spec", "implements"]
    for version in spec.all_versions():
        binary = binaries.get((doc.model.metadata.name, version))
        if binary is None:
            continue
        problems = check_module(binary.info, wit, ref, spec.capabilities.granted(), iface.spec.wasi, binary=binary.data)
        for problem in problems:
            out.add(doc.path, doc.line_of(loc), _field_name(loc), f"{binary.path} ({version}): {problem}")


def _check_path(
    root: Path, doc: _Doc, relpath: str, loc: list[str | int], out: _Collector, must_be_file: bool = True
) -> Path | None:
    """Resolve `relpath` against the document's folder; it must exist and stay inside the root."""
    target = (doc.file.parent / relpath).resolve()
    where = _field_name(loc)
    if not target.is_relative_to(root):
        out.add(doc.path, doc.line_of(loc), where, f"{relpath!r} leaves the fleet root")
        return None
    if not target.exists():
        out.add(doc.path, doc.line_of(loc), where, f"{relpath!r} does not exist")
        return None
    if must_be_file and not target.is_file():
        out.add(doc.path, doc.line_of(loc), where, f"{relpath!r} is not a file")
        return None
    return target


def _binary(
    root: Path,
    doc: _Doc,
    relpath: str,
    loc: list[str | int],
    out: _Collector,
    cache: dict[Path, Binary | str],
    read: BinaryReader,
) -> Binary | None:
    target = _check_path(root, doc, relpath, loc, out)
    if target is None:
        return None
    if target not in cache:
        cache[target] = read(root, target)
    found = cache[target]
    if isinstance(found, str):
        out.add(doc.path, doc.line_of(loc), _field_name(loc), found)
        return None
    return found


def _read_binary(root: Path, target: Path) -> Binary | str:
    """The binary of a source file, or the message saying why it is not a usable module (cached by content)."""
    rel = target.relative_to(root).as_posix()
    try:
        raw = target.read_bytes()
    except OSError as exc:
        return f"{rel} cannot be read: {exc}"
    key = (rel, hashlib.sha256(raw).hexdigest())
    hit = _BINARY_CACHE.get(key)
    if hit is None:
        hit = _remember(_BINARY_CACHE, key, _compile_binary(rel, target, raw))
    return hit


def _compile_binary(rel: str, target: Path, raw: bytes) -> Binary | str:
    try:
        if len(raw) > MAX_MODULE_BYTES * (4 if target.suffix == ".wat" else 1):
            return f"{rel} is larger than the 50 MB module limit"
        data = wasm.compile_wat(raw.decode("utf-8")) if target.suffix == ".wat" else raw
        if len(data) > MAX_MODULE_BYTES:
            return f"{rel} is {len(data)} bytes, over the 50 MB module limit"
        info = wasm.inspect(data)
    except wasm.WasmError as exc:
        line = f":{exc.line}" if exc.line else ""
        return f"{rel}{line}: {exc.message}"
    except UnicodeDecodeError as exc:
        return f"{rel} cannot be read: {exc}"
    return Binary(digest=info.digest, data=data, path=rel, info=info)


def _check_binary(doc: _Doc, binary: Binary, memory_mb: int, loc: list[str | int], out: _Collector) -> None:
    """What the registry refuses too: unsatisfiable imports and initial memory over the limit.

    WASI env and filesystem imports link against an empty grant (no variables, no preopened
    directories), so toolchains that import them unconditionally still run; sockets and non-WASI
    imports cannot be satisfied and are in `info.problems`.
    """
    where = _field_name([*loc, "path"])
    line = doc.line_of([*loc, "path"])
    info = binary.info
    for problem in info.problems:
        out.add(doc.path, line, where, f"{binary.path}: {problem}")
    declared_mb = info.memory_min_pages * wasm.PAGE_BYTES / (1024 * 1024)
    if declared_mb > memory_mb:
        out.add(
            doc.path,
            line,
            where,
            f"{binary.path} declares {declared_mb:g} MB of initial memory, over its {memory_mb} MB limit",
        )


def iter_problems(result: LoadResult) -> Iterator[str]:
    yield from (str(p) for p in result.problems)
