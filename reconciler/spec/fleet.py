"""The desired fleet: every document of one fleet revision, validated and cross-referenced.

Produced by the loader from a directory (a checkout of one Git revision), read by the planner, the
registry and the status views. Pure data: nothing here does I/O, so the planner may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from edge.protocol import module_id
from reconciler.spec.models import (
    Fleet,
    FleetSpec,
    Interface,
    Module,
    Policy,
    RolloutStrategy,
)

if TYPE_CHECKING:
    from edge.wasminfo import ModuleInfo
    from reconciler.interfaces.model import WitPackage
    from reconciler.spec.alerts import Alert
    from reconciler.spec.updates import ModuleUpdate

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Problem:
    """One finding, located in the fleet: `path:line: field: message`."""

    path: str  # relative to the fleet root, with forward slashes; "" for the root itself
    line: int  # 1-based; 0 when no line applies
    field: str  # dotted path inside the document, e.g. spec.limits.memoryMB
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.path and self.line else (self.path or ".")
        label = "" if self.severity == "error" else "warning: "
        return f"{where}: {self.field}: {label}{self.message}"

    def under(self, prefix: str) -> Problem:
        """The same problem with its path shown under `prefix` (the fleet dir as the user typed it)."""
        if not prefix or prefix == ".":
            return self
        path = f"{prefix.rstrip('/')}/{self.path}" if self.path else prefix
        return Problem(path, self.line, self.field, self.message, self.severity)


@dataclass(frozen=True)
class Location:
    path: str
    line: int


@dataclass(frozen=True)
class Binary:
    """A module version's binary resolved from the repository (absent for `source.digest`)."""

    digest: str
    data: bytes = field(repr=False)
    path: str
    info: ModuleInfo = field(repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class DesiredFleet:
    """One valid fleet revision: the documents by name and the binaries by (module, version)."""

    fleet: Fleet
    modules: Mapping[str, Module]
    strategies: Mapping[str, RolloutStrategy]
    interfaces: Mapping[str, Interface]
    binaries: Mapping[tuple[str, str], Binary]
    locations: Mapping[tuple[str, str], Location] = field(default_factory=dict)
    warnings: tuple[Problem, ...] = ()
    wit_packages: Mapping[str, WitPackage] = field(default_factory=dict)  # by Interface name
    alerts: Mapping[str, Alert] = field(default_factory=dict)
    updates: Mapping[str, ModuleUpdate] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.fleet.metadata.name

    @property
    def spec(self) -> FleetSpec:
        return self.fleet.spec

    @property
    def policy(self) -> Policy:
        return self.fleet.spec.policy

    def digest_of(self, module: str, version: str) -> str | None:
        """The digest a module version runs: from its repo binary, or its `source.digest`."""
        binary = self.binaries.get((module, version))
        if binary is not None:
            return binary.digest
        spec = self.modules[module].spec
        if spec.version == version:
            return spec.source.digest or spec.sha256
        for extra in spec.versions:
            if extra.version == version:
                return extra.source.digest or (extra.sha256 and "sha256:" + extra.sha256.removeprefix("sha256:"))
        return None

    def module_ids(self) -> list[str]:
        return sorted(module_id(name, version) for name, m in self.modules.items() for version in m.spec.all_versions())
