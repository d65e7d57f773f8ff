"""A revision's binaries, ready for the planner: pulled (OCI sources) and in the registry.

Where it sits: the controller's `register` step calls `Binaries.prepare(fleet)` in a worker thread
before it plans. A `source.oci` artifact is pulled once (by the digest written, or a dev fleet's tag
resolved once), checked against the manifest's and the layer's digests and a `sha256` pin; every
binary goes to the registry once per digest; a digest committed without its binary must already be in
the blob store. What cannot be done stalls the pass (`StalledError`: a human must act) and the nodes
keep serving the last good revision's tables.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edge import wasm
from reconciler.apply.registry import Registry
from reconciler.spec.fleet import Binary, DesiredFleet
from reconciler.store.errors import ModuleConflictError

if TYPE_CHECKING:
    from reconciler.gitsource.oci import OciClient


class StalledError(Exception):
    """A pass cannot go on until a human acts; the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Binaries:
    """What the controller keeps between passes about binaries: pulls, registrations, and the last
    revision's fleet with its pulls added (the same object every pass: the planner's caches hold)."""

    def __init__(self, registry: Registry, oci: OciClient | None = None) -> None:
        self.registry = registry
        self.oci = oci  # pulls `source.oci` artifacts (None: a client from the environment, made on first use)
        self._pulled: dict[str, Binary] = {}  # OCI reference as written -> its binary, pulled once
        self._registered: set[tuple[str, str, str]] = set()
        self._with_artifacts: tuple[DesiredFleet, DesiredFleet] | None = None  # (as written, with pulls)

    def prepare(self, desired: DesiredFleet) -> tuple[DesiredFleet, list[tuple[str, str]]]:
        """`desired` with its pulled binaries, every binary registered; and (module, what was pulled)
        for each pull made now. Blocking: run it in a worker thread. Raises StalledError."""
        pulled: list[tuple[str, str]] = []
        if self._with_artifacts is not None and self._with_artifacts[0] is desired:
            ready = self._with_artifacts[1]
        elif any(source.oci for m in desired.modules.values() for _, source, _ in m.spec.all_sources()):
            ready, pulled = self._pull(desired)
            self._with_artifacts = (desired, ready)
        else:
            ready = desired
        self._register(ready)
        return ready, pulled

    def _pull(self, desired: DesiredFleet) -> tuple[DesiredFleet, list[tuple[str, str]]]:
        """The revision with the binary of every `source.oci` added, each pulled once (by the digest
        written, or a dev fleet's tag resolved once), verified against the manifest's and the layer's
        digests and a `sha256` pin; a pull that fails stalls the pass, and the nodes keep serving the
        last good revision's tables."""
        from reconciler.gitsource.oci import OciClient, OciError
        from reconciler.spec.ocireference import Reference

        binaries = dict(desired.binaries)
        pulled_now: list[tuple[str, str]] = []  # (module, what was pulled): events, sent from the loop
        for name, module in desired.modules.items():
            for version, source, pin in module.spec.all_sources():
                if source.oci is None:
                    continue
                binary = self._pulled.get(source.oci)
                if binary is None:
                    if self.oci is None:
                        self.oci = OciClient()
                    limit = self.registry.limits.max_module_bytes
                    try:
                        pulled = self.oci.pull(Reference.parse(source.oci), max_bytes=limit)
                        info = wasm.inspect(pulled.wasm)
                    except (OciError, wasm.WasmError) as exc:
                        raise StalledError("ArtifactPullFailed", f"{name}@{version}: {exc}") from None
                    binary = Binary(pulled.wasm_digest, pulled.wasm, str(pulled.reference), info)
                    self._pulled[source.oci] = binary
                    pulled_now.append((name, f"{name}@{version}: pulled {pulled.reference}, module {binary.digest}"))
                if pin is not None and "sha256:" + pin.removeprefix("sha256:") != binary.digest:
                    raise StalledError(
                        "ArtifactPullFailed", f"{name}@{version}: {source.oci} holds {binary.digest}, pinned {pin}"
                    )
                binaries[(name, version)] = binary
        named = {source.oci for m in desired.modules.values() for _, source, _ in m.spec.all_sources()}
        for gone in [ref for ref in self._pulled if ref not in named]:  # only what this revision names
            del self._pulled[gone]
        return dataclasses.replace(desired, binaries=binaries), pulled_now

    def _register(self, desired: DesiredFleet) -> None:
        """Every binary the revision names is in the registry (once per digest), or the pass stalls."""
        for (name, version), binary in desired.binaries.items():
            key = (name, version, binary.digest)
            if key in self._registered:
                continue
            try:
                limit = desired.modules[name].spec.limits.memory_mb * 1024 * 1024
                self.registry.register(name, version, binary.data, memory_limit_bytes=limit, actor="git")
            except ModuleConflictError as exc:
                raise StalledError(
                    "ImmutableVersion",
                    f"{name}@{version}: {exc.message}; a released version never changes its bytes: "
                    "give the new binary a new version",
                ) from None
            self._registered.add(key)
        for name, module in desired.modules.items():
            for version in module.spec.all_versions():
                if (name, version) in desired.binaries:
                    continue
                digest = desired.digest_of(name, version)
                if digest is None or not self.registry.blobs.exists(digest):
                    raise StalledError(
                        "MissingBinary",
                        f"{name}@{version}: the registry has no binary {digest}; upload it with "
                        "POST /api/v1/wasm/modules before committing its digest",
                    )
