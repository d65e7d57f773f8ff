"""The loader's cross-document checks: what no single document can say, and the `DesiredFleet`.

Where it sits: the second step of the loader (`reconciler.spec.loader.finish`), over the documents
`reconciler.spec.documents` parsed. `assemble` checks exactly one Fleet, duplicate names per kind,
references between documents (a Module's rollout and interface, a Regional strategy's `perRegion`,
an Alert's or ModuleUpdate's module), regions, approval gates past the last step, pins and
overrides naming unknown versions, OCI references by digest outside dev, and warns about a strategy
that cannot progress. The files documents name go to `reconciler.spec.sources`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reconciler.interfaces import WitPackage
from reconciler.spec.alerts import Alert
from reconciler.spec.documents import Collector, Doc, did_you_mean, field_name
from reconciler.spec.fleet import Binary, DesiredFleet, Location
from reconciler.spec.models import Document, Fleet, Interface, Module, RolloutStrategy, Source, package_of
from reconciler.spec.sources import BinaryReader, check_binary, check_implements, check_path, module_binary, read_wit
from reconciler.spec.strategies import RolloutStrategySpec, StrategyType
from reconciler.spec.updates import ModuleUpdate

__all__ = ["assemble"]


def _by_kind(docs: list[Doc], kind: type[Document], out: Collector) -> dict[str, Doc]:
    """Documents of one kind by name; a second document with the same name is a problem."""
    found: dict[str, Doc] = {}
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


def _cannot_progress(doc: Doc, spec: RolloutStrategySpec, out: Collector) -> None:
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
        field_name(loc),
        f"this strategy cannot progress without preview traffic: the preview runs at 0% (only requests with"
        f" X-Hotswap-Version reach it) and analysis needs {analysis.min_requests} requests with onNoTraffic:"
        " pause; set onNoTraffic: proceed or minRequests: 0, or leave analysis out (BlueGreen then moves on"
        " once the new version is loaded and healthy)",
        "warning",
    )


def assemble(root: Path, docs: list[Doc], out: Collector, read: BinaryReader) -> DesiredFleet | None:
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
            out.add(doc.path, doc.line_of(module_loc), field_name(module_loc), message)
    for doc in alerts.values():
        assert isinstance(doc.model, Alert)
        for i, module in enumerate(doc.model.spec.modules):
            if module not in modules:
                where: list[str | int] = ["spec", "modules", i]
                message = f"no Module named {module!r}{did_you_mean(module, modules)}"
                out.add(doc.path, doc.line_of(where), field_name(where), message)
    if not fleets:
        return None
    fleet_doc = fleets[0]
    assert isinstance(fleet_doc.model, Fleet)
    fleet = fleet_doc.model
    regions = set(fleet.spec.region_names)

    def region_refs(doc: Doc, names: Sequence[str], loc: list[str | int]) -> None:
        for i, name in enumerate(names):
            if name not in regions:
                out.add(
                    doc.path,
                    doc.line_of([*loc, i]),
                    field_name([*loc, i]),
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
                    out.add(doc.path, doc.line_of(loc), field_name(loc), message)
                elif isinstance(target.model, RolloutStrategy) and target.model.spec.type is StrategyType.REGIONAL:
                    out.add(
                        doc.path,
                        doc.line_of(loc),
                        field_name(loc),
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
                    field_name(loc),
                    f"step {gate} does not exist ({steps} steps)",
                )

    packages = {d.model.spec.package: name for name, d in interfaces.items() if isinstance(d.model, Interface)}
    wit_packages: dict[str, WitPackage] = {}
    for name, doc in interfaces.items():
        assert isinstance(doc.model, Interface)
        wit_path = check_path(root, doc, doc.model.spec.wit, ["spec", "wit"], out, must_be_file=False)
        if wit_path is not None:
            parsed = read_wit(root, doc, wit_path, out)
            if parsed is not None:
                wit_packages[name] = parsed

    binaries: dict[tuple[str, str], Binary] = {}
    cache: dict[Path, Binary | str] = {}
    locations = {("Fleet", fleet.metadata.name): Location(fleet_doc.path, fleet_doc.line)}
    for kind, group in (("Module", modules), ("RolloutStrategy", strategies), ("Interface", interfaces)):
        for name, doc in group.items():
            locations[(kind, name)] = Location(doc.path, doc.line)

    pending_checks: list[tuple[Doc, Interface, WitPackage | None]] = []
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
                out.add(doc.path, doc.line_of(loc), field_name(loc), f"version {version} is listed twice")
            seen_versions.add(version)
        for i, override in enumerate(mspec.placement.version_overrides):
            base: list[str | int] = ["spec", "placement", "versionOverrides", i]
            region_refs(doc, override.regions, [*base, "regions"])
            if override.version not in known:
                out.add(
                    doc.path,
                    doc.line_of([*base, "version"]),
                    field_name([*base, "version"]),
                    f"version {override.version} is not one of this module's versions ({', '.join(known)})",
                )
        for node, version in mspec.placement.pins.items():
            if version not in known:
                loc = ["spec", "placement", "pins", node]
                out.add(
                    doc.path,
                    doc.line_of(loc),
                    field_name(loc),
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
                out.add(doc.path, doc.line_of(oci_loc), field_name(oci_loc), message)
            if source.path is None:
                continue
            binary = module_binary(root, doc, source.path, [*loc, "path"], out, cache, read)
            if binary is None:
                continue
            if pin is not None and "sha256:" + pin.removeprefix("sha256:") != binary.digest:
                pin_loc = [*loc[:-1], "sha256"]
                out.add(
                    doc.path,
                    doc.line_of(pin_loc),
                    field_name(pin_loc),
                    f"pinned {pin} but the binary is {binary.digest}",
                )
            check_binary(doc, binary, mspec.limits.memory_mb, loc, out)
            binaries[(name, version)] = binary
        if mspec.health_check is not None and (name, mspec.version) in binaries:
            info = binaries[(name, mspec.version)].info
            if not info.component and info.export(mspec.health_check.function) is None:
                loc = ["spec", "healthCheck", "function"]
                out.add(
                    doc.path,
                    doc.line_of(loc),
                    field_name(loc),
                    f"the binary exports no function {mspec.health_check.function!r}",
                )
        if mspec.smoke and (name, mspec.version) in binaries:
            info = binaries[(name, mspec.version)].info
            for i, smoke in enumerate(mspec.smoke):
                if not info.component and info.export(smoke.function) is None:
                    loc = ["spec", "smoke", i, "function"]
                    message = f"the binary exports no function {smoke.function!r}"
                    out.add(doc.path, doc.line_of(loc), field_name(loc), message)
    for doc, iface, wit in pending_checks:
        if wit is not None:
            check_implements(doc, iface, wit, binaries, out)
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
