"""The fleet spec: pydantic models for every YAML kind in a fleet repository (DESIGN.md section 2).


Where it sits: under the loader (`reconciler.spec.loader`), which turns YAML documents into these
models and adds what a model alone cannot check (references between documents, files, binaries).
Built from `reconciler.spec.fields` (the `Spec` base, names, versions); the RolloutStrategy kind's
models are in `reconciler.spec.strategies`. `hotswap schema` writes the JSON Schema of each kind
from them. Field names are camelCase on the wire (as in Kubernetes) and snake_case in Python. Every
model forbids unknown fields: a typo must not pass silently.

A Module's `limits`, `capabilities` (`Mount`, `Network`), `healthCheck` and `smoke` are the node
protocol's own types (`edge.protocol`), named here too: the planner's rows and a node's table carry the
very objects read from Git. What a fleet may ask for, narrower than what a node takes (memoryMB up to
512, grants outside the system directories, small smoke calls), is declared on those types and
checked on what the loader reads (validation context `FLEET_INPUT`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final, Literal, Self

from pydantic import Field, field_validator, model_validator

from edge.protocol import (
    FLEET_INPUT,
    MAX_ARGV,
    MAX_SMOKE_CALLS,
    MAX_SMOKE_JSON,
    Arg,
    Capabilities,
    HealthCheck,
    Limits,
    Mount,
    Network,
    SmokeCall,
    module_id,
)
from reconciler.spec.fields import Digest, Metadata, Name, SemVer, Spec, check_semver
from reconciler.spec.strategies import RolloutStrategySpec

__all__ = [
    "API_VERSION",
    "FLEET_INPUT",
    "KINDS",
    "MAX_MODULE_BYTES",
    "MAX_SMOKE_CALLS",
    "MAX_SMOKE_JSON",
    "WIT_PACKAGE_RE",
    "ApprovalRule",
    "Approvals",
    "Capabilities",
    "Document",
    "ExtraVersion",
    "Fleet",
    "FleetSpec",
    "HealthCheck",
    "Interface",
    "InterfaceSpec",
    "Limits",
    "Module",
    "ModuleSpec",
    "Mount",
    "Network",
    "NodeDefaults",
    "Placement",
    "Policy",
    "Region",
    "Role",
    "RolloutStrategy",
    "SmokeCall",
    "Source",
    "VersionOverride",
    "package_of",
]

API_VERSION: Final = "hotswap.dev/v1"
MAX_MODULE_BYTES = 50 * 1024 * 1024

WIT_PACKAGE_RE = re.compile(r"^[a-z][a-z0-9-]*:[a-z][a-z0-9-]*(/[a-z][a-z0-9-]*)?@(?P<version>\S+)$")


def package_of(implements: str) -> str:
    """The WIT package a module's `implements` names: `ns:pkg/world@1.2.0` -> `ns:pkg@1.2.0`."""
    return re.sub(r"/[a-z][a-z0-9-]*@", "@", implements)


class Role(StrEnum):
    ADMIN = "admin"
    DEVELOPER = "developer"
    OPERATOR = "operator"
    VIEWER = "viewer"
    MERGER = "merger"


# --- Fleet --------------------------------------------------------------------------------------


class Region(Spec):
    name: Name
    max_nodes: int = Field(100, ge=1, le=1000, description="edge nodes the region may hold")


class NodeDefaults(Spec):
    max_modules: int = Field(1000, ge=1, le=10000, description="module versions one node may hold")


class ApprovalRule(Spec):
    roles: list[Role] = Field(default_factory=lambda: [Role.ADMIN], min_length=1)
    count: int = Field(1, ge=1, le=10)


class Approvals(Spec):
    rollouts: ApprovalRule | None = None
    breaking_interface_changes: ApprovalRule | None = None


class Policy(Spec):
    require_signed_commits: bool = False
    approvals: Approvals = Field(default_factory=Approvals)
    merged_pull_requests_approve: bool = False
    api_commits_to_branch: bool = Field(
        False, description="API writes commit to the tracked branch instead of a review branch"
    )


class FleetSpec(Spec):
    environment: Literal["dev", "staging", "production"] = "dev"
    regions: list[Region] = Field(min_length=1)
    node_defaults: NodeDefaults = Field(default_factory=NodeDefaults)
    policy: Policy = Field(default_factory=Policy)

    @field_validator("regions")
    @classmethod
    def _unique_regions(cls, regions: list[Region]) -> list[Region]:
        seen: set[str] = set()
        for region in regions:
            if region.name in seen:
                raise ValueError(f"region {region.name!r} is listed twice")
            seen.add(region.name)
        return regions

    @property
    def region_names(self) -> list[str]:
        return [r.name for r in self.regions]


# --- Module -------------------------------------------------------------------------------------


class Source(Spec):
    """Where a module's binary comes from: a `.wasm`/`.wat` file in the repo, a digest uploaded to the
    control plane's registry, or an OCI artifact (`REGISTRY/REPO:TAG@sha256:DIGEST`, the manifest's
    digest; the control plane pulls it, nodes never talk to the OCI registry)."""

    path: str | None = None
    digest: Digest | None = None
    oci: str | None = Field(
        None,
        max_length=1024,
        description="REGISTRY/REPO:TAG@sha256:DIGEST of a Wasm OCI artifact (the CNCF layout, or one"
        " application/wasm layer); a tag alone only in a dev fleet, resolved once",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if sum(v is not None for v in (self.path, self.digest, self.oci)) != 1:
            raise ValueError("give exactly one of `path`, `digest` or `oci`")
        if self.path is not None and not self.path.endswith((".wasm", ".wat")):
            raise ValueError(f"{self.path!r}: a source path must end in .wasm or .wat")
        if self.oci is not None:
            from reconciler.spec.ocireference import Reference

            Reference.parse(self.oci)  # ValueError names what is wrong
        return self


class VersionOverride(Spec):
    regions: list[Name] = Field(min_length=1)
    version: SemVer


class Placement(Spec):
    regions: list[Name] | None = Field(None, description="default: every fleet region")
    replicas: int | Literal["all"] = Field(1, description="nodes per region: 1..3, or all")
    version_overrides: list[VersionOverride] = Field(default_factory=list)
    pins: dict[str, SemVer] = Field(default_factory=dict, description="node id -> version")

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 3:
            raise ValueError('replicas must be 1, 2, 3 or "all"')
        return value


class ExtraVersion(Spec):
    """Another version this fleet may still serve (region overrides, node pins, switch-back)."""

    version: SemVer
    source: Source
    sha256: str | None = None


class ModuleSpec(Spec):
    version: SemVer
    source: Source
    sha256: str | None = Field(None, description="optional pin of the binary's SHA-256, checked")
    versions: list[ExtraVersion] = Field(default_factory=list)
    implements: str | None = Field(None, description="the WIT interface the module must satisfy")
    limits: Limits = Field(default_factory=Limits)
    capabilities: Capabilities = Field(default_factory=Capabilities)
    placement: Placement = Field(default_factory=Placement)
    health_check: HealthCheck | None = None
    smoke: list[SmokeCall] = Field(
        default_factory=list,
        max_length=MAX_SMOKE_CALLS,
        description="calls every node makes to a new version after loading it and before it gets any weight,"
        " with the version's limits and capabilities. A version whose smoke check fails gets no weight on"
        " that node; a rollout's step (a BlueGreen preview, a Canary step, a Rolling batch) counts as applied"
        " only once every node of the step reports it passed, and a failure rolls the rollout back"
        " (SmokeFailed, with the module's error), or pauses it without autoRollback",
    )
    argv: list[Arg] = Field(
        default_factory=list,
        max_length=MAX_ARGV,
        description="a command module's argv when an execute call gives none; argv[0] is the program name"
        " (default: [module name]). A call's own argv replaces it; env comes from capabilities.env",
    )
    rollout: Name | None = Field(None, description="a RolloutStrategy name; none: replace at once")

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        hexpart = value.removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", hexpart):
            raise ValueError("must be 64 lowercase hex digits, optionally prefixed by sha256:")
        return "sha256:" + hexpart

    @field_validator("implements")
    @classmethod
    def _implements(cls, value: str | None) -> str | None:
        if value is not None and not WIT_PACKAGE_RE.match(value):
            raise ValueError(f"{value!r} is not a WIT reference like example:greeter/greet@1.0.0")
        return value

    def all_versions(self) -> list[str]:
        return [self.version, *(v.version for v in self.versions)]

    def all_sources(self) -> list[tuple[str, Source, str | None]]:
        """(version, source, sha256 pin) of the version and of every other version declared."""
        return [(self.version, self.source, self.sha256), *((v.version, v.source, v.sha256) for v in self.versions)]


# --- Interface ----------------------------------------------------------------------------------


class InterfaceSpec(Spec):
    package: str = Field(description="the WIT package, e.g. example:greeter@1.0.0")
    wit: str = Field(min_length=1, description="path of the .wit file (or folder)")
    wasi: Literal["preview1", "preview2"] = "preview1"
    deprecated: bool = False
    deprecation_message: str | None = None

    @field_validator("package")
    @classmethod
    def _package(cls, value: str) -> str:
        match = WIT_PACKAGE_RE.match(value)
        if not match or "/" in value.split("@", maxsplit=1)[0]:
            raise ValueError(f"{value!r} is not a WIT package like example:greeter@1.0.0")
        check_semver(match.group("version"))
        return value

    @property
    def version(self) -> str:
        return self.package.rsplit("@", 1)[1]


# --- Documents ----------------------------------------------------------------------------------


class Document(Spec):
    api_version: Literal["hotswap.dev/v1"] = API_VERSION
    metadata: Metadata


class Fleet(Document):
    kind: Literal["Fleet"] = "Fleet"
    spec: FleetSpec


class Module(Document):
    kind: Literal["Module"] = "Module"
    spec: ModuleSpec

    @property
    def id(self) -> str:
        return module_id(self.metadata.name, self.spec.version)


class RolloutStrategy(Document):
    kind: Literal["RolloutStrategy"] = "RolloutStrategy"
    spec: RolloutStrategySpec


class Interface(Document):
    kind: Literal["Interface"] = "Interface"
    spec: InterfaceSpec


KINDS: dict[str, type[Document]] = {
    "Fleet": Fleet,
    "Module": Module,
    "RolloutStrategy": RolloutStrategy,
    "Interface": Interface,
}
