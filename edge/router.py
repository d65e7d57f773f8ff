"""The version router: which loaded version of a module serves a request.

Where it sits: between the server and the runtime. The control-plane agent (or, for a standalone
node, the folder scanner) hands the router the node's full module table through `apply_table`;
the server asks `pick` for each request and gives the version back with `release`.

* Per module, a `Route` holds the loaded versions with their weights. A request goes to the version
  named in `X-Hotswap-Version` if given (even at weight 0, for smoke tests), else to the bucket
  of a stable hash of its sticky key (the value of the entry's `sticky` header, by default
  `X-Hotswap-Sticky`: A/B tests and affinity), else to a weighted random choice. A route whose
  traffic all goes to one version knows it (`Route.sole`) and skips both.
* `apply_table` loads what is new (off the event loop), reuses what is unchanged, then replaces
  the whole routing table in one assignment. A version that left the table is retired: it takes
  no new requests and is unloaded when its last in-flight request has finished. No request fails
  because of a swap.
* A version whose table entry lists smoke calls runs them once loaded, before the swap (`edge.smoke`);
  one that failed them takes weight 0 here whatever its entry says (`VersionSlot.weight`).
* Each version counts requests, module failures by kind and a latency histogram; `metrics_delta`
  returns what changed since the previous call (for heartbeats), `metrics_total` everything (for
  `/metrics`). Counters are only touched on the event loop thread.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from edge.counters import Counters
from edge.errors import EdgeError, LoadError, NotFoundError, UnavailableError
from edge.health import health_check, start_checks
from edge.limits import Clock, CpuShare
from edge.loaded import Loaded
from edge.onepiece import header_lines
from edge.protocol import (
    STICKY_HEADER,
    VERSION_HEADER,
    ModuleEntry,
    VersionMetrics,
)
from edge.runtime import Runtime, Sandbox
from edge.smoke import SmokeOutcome, run_smoke
from edge.telemetry import NodeStats, load_span

log = logging.getLogger("hotswap.edge.router")


class BlobSource(Protocol):
    """Where module binaries come from, by digest (the control plane, S3, or a local folder).

    `fetch` returns only bytes whose SHA-256 is `digest` (it checks what it downloads), so the
    router loads them without hashing them again."""

    async def fetch(self, digest: str) -> bytes: ...


class VersionSlot:
    """One loaded version of one module: its entry, runtime module, counters and in-flight count."""

    def __init__(self, entry: ModuleEntry, loaded: Loaded, clock: Clock, load_ms: float) -> None:
        self.entry = entry
        self.loaded = loaded
        self.module = entry.module
        self.version = entry.version
        self.counters = Counters()
        self.shipped = Counters()
        self.cpu = CpuShare(entry.limits.cpu_percent, clock=clock)
        self.inflight = 0
        self.retired = False
        self.load_ms = load_ms
        self.smoke: SmokeOutcome | None = None  # None: the entry lists no smoke calls
        self.checks: asyncio.Task[None] | None = None  # its periodic health checks (edge.health)
        # The headers of its 200 execute answers, built once: as a mapping (for an answer aiohttp
        # writes) and as the bytes `edge.execute.PlainAnswer` writes (None for a version that cannot
        # be a header value, which aiohttp refuses as it always did).
        headers = CIMultiDict({"Content-Type": "application/json", VERSION_HEADER: self.version})
        self.answer_headers = CIMultiDictProxy(headers)
        self.answer_head = header_lines(headers)

    @property
    def weight(self) -> int:
        """The share of the module's requests this version takes here: its entry's weight, or 0 while
        its smoke check has not passed (`edge.smoke`)."""
        if self.smoke is not None and not self.smoke.passed:
            return 0
        return self.entry.weight

    def record(self, outcome: str, duration_ms: float, violations: int = 0, message: str | None = None) -> None:
        self.counters.record(outcome, duration_ms, violations, message)

    def served(self, cpu_ns: int, duration_ms: float, violations: int = 0) -> None:
        """A call that succeeded: its CPU charged to the version's share, counted as "ok"."""
        self.cpu.charge(cpu_ns)
        self.counters.ok(duration_ms, violations)

    def enter(self) -> None:
        """A request is routed here."""
        self.inflight += 1

    def leave(self) -> bool:
        """A request routed here is done; True when the version is retired and now idle (to unload)."""
        self.inflight -= 1
        return self.retired and self.inflight == 0

    def retire(self) -> bool:
        """Out of the table; True when nothing runs on it (unload now), False while requests finish."""
        self.retired = True
        self.stop_checks()
        return self.inflight == 0

    def renew(self, entry: ModuleEntry) -> None:
        """Kept under a new table whose entry has the same identity (its weight, health check may differ)."""
        changed = entry.health_check != self.entry.health_check
        self.entry = entry
        if changed:
            self.stop_checks()
            self.check_health()

    def check_health(self) -> None:
        """From now on, its entry's health check every `intervalSeconds` (`edge.health`), until retired."""
        self.checks = start_checks(self.loaded, self.entry, self.counters.checked)

    def stop_checks(self) -> asyncio.Task[None] | None:
        """Cancel the periodic health checks; the task, to wait for, if there was one."""
        task, self.checks = self.checks, None
        if task is not None:
            task.cancel()
        return task

    def smoked(self, outcome: SmokeOutcome) -> None:
        self.smoke = outcome

    def ship(self) -> Counters:
        """The counts since the previous call (for a heartbeat), from now on counted as shipped."""
        now = self.counters.copy()
        delta = now.minus(self.shipped)
        self.shipped = now
        return delta

    def metrics(self, counters: Counters) -> VersionMetrics:
        return VersionMetrics(
            module=self.module,
            version=self.version,
            requests=counters.requests,
            errors=counters.errors,
            traps=counters.traps,
            timeouts=counters.timeouts,
            memory=counters.memory,
            cpu=counters.cpu,
            latency_buckets=tuple(counters.buckets),
            latency_sum_ms=counters.latency_sum_ms,
            violations=counters.violations,
            last_error=counters.last_error if counters.errors or counters.health_failures else None,
            health_checks=counters.health_checks,
            health_failures=counters.health_failures,
        )


@dataclass(frozen=True)
class Route:
    """The versions of one module and how traffic splits between them (immutable)."""

    module: str
    slots: tuple[VersionSlot, ...]
    cumulative: tuple[int, ...]
    sticky_header: str = STICKY_HEADER
    sole: VersionSlot | None = None  # the one version with weight, when only one has any

    @classmethod
    def of(cls, module: str, slots: Sequence[VersionSlot]) -> Route:
        total = 0
        cumulative = []
        for slot in slots:
            total += slot.weight
            cumulative.append(total)
        header = next((s.entry.sticky for s in slots if s.entry.sticky), STICKY_HEADER)
        weighted = [s for s in slots if s.weight > 0]
        sole = weighted[0] if len(weighted) == 1 else None
        return cls(module, tuple(slots), tuple(cumulative), header, sole)

    @property
    def total(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0

    def by_version(self, version: str) -> VersionSlot | None:
        return next((s for s in self.slots if s.version == version), None)

    def choose(self, point: int) -> VersionSlot:
        return self.slots[bisect.bisect_right(self.cumulative, point)]


@dataclass(frozen=True)
class ApplyReport:
    generation: int
    loaded: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)


def sticky_point(module: str, key: str, total: int) -> int:
    """A stable position in [0, total) for a sticky key: the same on every node and restart."""
    digest = hashlib.blake2b(f"{module}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % total


class TableApplier:
    """What takes a node's full module table, one table at a time: one process's `Router`, or the
    worker processes of a multi-process node (`edge.supervisor.WorkerPool`). The agent and the
    folder scanner call `apply_table` on either; each says in `_apply` how it applies a table."""

    _lock: asyncio.Lock

    async def apply_table(
        self,
        entries: Sequence[ModuleEntry],
        generation: int | None = None,
        traceparents: Mapping[str, str] | None = None,
    ) -> ApplyReport:
        """Make the node serve exactly `entries`: load new versions, swap, retire the rest.

        `traceparents` (module -> W3C traceparent) makes each module's load span part of the
        deployment step that assigned it."""
        started = time.perf_counter()
        async with self._lock:
            report = await self._apply(entries, generation, traceparents or {})
        self._applied(report, time.perf_counter() - started)
        return report

    async def _apply(
        self, entries: Sequence[ModuleEntry], generation: int | None, traceparents: Mapping[str, str]
    ) -> ApplyReport:
        raise NotImplementedError

    def _applied(self, report: ApplyReport, seconds: float) -> None:
        """A table applied in `seconds` (waiting for the one before it included)."""


class Router(TableApplier):
    def __init__(self, runtime: Runtime, source: BlobSource, *, clock: Clock = time.monotonic) -> None:
        self.runtime = runtime
        self.source = source
        self.clock = clock
        self.routes: dict[str, Route] = {}
        self.generation = 0
        self._retiring: list[VersionSlot] = []
        self._drained: list[VersionSlot] = []
        self._lock = asyncio.Lock()
        self._random = random.Random()
        self.stats = NodeStats()  # loads and applied tables, for /metrics (edge.telemetry)

    # -- requests -------------------------------------------------------------------------------

    def pick(self, module: str, version: str | None = None, sticky: str | None = None) -> VersionSlot:
        """The version to serve a request; the caller must `release` it when done."""
        route = self.routes.get(module)
        if route is None:
            raise NotFoundError(f"module {module!r} is not loaded on this node")
        return self._pick(route, module, version, sticky)

    def pick_request(self, module: str, version: str | None, headers: Mapping[str, str]) -> VersionSlot:
        """`pick` for an execute request: the version asked in the body, else in `X-Hotswap-Version`,
        and the sticky key from the route's sticky header."""
        route = self.routes.get(module)
        if route is None:
            raise NotFoundError(f"module {module!r} is not loaded on this node")
        version = version or headers.get(VERSION_HEADER)
        sole = route.sole
        if sole is not None and not version:  # where any sticky key or draw would land
            sole.enter()
            return sole
        return self._pick(route, module, version, headers.get(route.sticky_header))

    def _pick(self, route: Route, module: str, version: str | None, sticky: str | None) -> VersionSlot:
        if version:
            slot = route.by_version(version)
            if slot is None:
                versions = ", ".join(s.version for s in route.slots)
                raise NotFoundError(f"version {version!r} of module {module!r} is not loaded (loaded: {versions})")
        elif route.sole is not None:  # where any key or draw would land
            slot = route.sole
        else:
            total = route.total
            if total <= 0:
                raise UnavailableError(f"no version of module {module!r} takes traffic (all weights are 0)")
            point = sticky_point(module, sticky, total) if sticky else int(self._random.random() * total)
            slot = route.choose(point)
        slot.enter()
        return slot

    def sticky_header(self, module: str) -> str:
        """The request header whose value pins a client to a version of `module`."""
        route = self.routes.get(module)
        return route.sticky_header if route is not None else STICKY_HEADER

    def release(self, slot: VersionSlot) -> None:
        if slot.leave():
            self._unload(slot)

    # -- the module table -----------------------------------------------------------------------

    def slots(self) -> list[VersionSlot]:
        return [slot for route in self.routes.values() for slot in route.slots]

    def _applied(self, report: ApplyReport, seconds: float) -> None:
        self.stats.applied(seconds * 1000, bool(report.failed))

    async def _apply(
        self, entries: Sequence[ModuleEntry], generation: int | None, traceparents: Mapping[str, str]
    ) -> ApplyReport:
        current = {(s.module, s.version): s for s in self.slots()}
        seen: set[tuple[str, str]] = set()
        chosen: dict[str, list[VersionSlot]] = {}
        loaded: list[str] = []
        kept: list[str] = []
        failed: dict[str, str] = {}
        for entry in entries:
            key = (entry.module, entry.version)
            name = f"{entry.module}@{entry.version}"
            if key in seen:
                failed[name] = "listed twice in the table"
                continue
            seen.add(key)
            old = current.get(key)
            if old is not None and old.entry.identity() == entry.identity():
                slot = old
                slot.renew(entry)  # the weight may have changed; weights are read via Route
                kept.append(name)
            else:
                try:
                    slot = await self._load(entry, traceparents.get(entry.module))
                    loaded.append(name)
                except EdgeError as exc:
                    failed[name] = exc.message
                    log.warning("cannot load %s: %s", name, exc.message)
                    if old is None:
                        continue
                    slot = old  # keep serving the version already loaded under that name
            chosen.setdefault(entry.module, []).append(slot)
        for module in {e.module for e in entries} - set(chosen):
            # None of the module's new versions loaded: it keeps serving what it serves now
            # (the agent retries the table), rather than going dark until the load succeeds.
            if previous := [s for (m, _), s in current.items() if m == module]:
                chosen[module] = previous
        # Weights live on the entries; a kept slot gets its new weight with the new route.
        self.routes = {module: Route.of(module, slots) for module, slots in chosen.items()}
        if generation is not None:
            self.generation = generation
        in_use = {id(s) for slots in chosen.values() for s in slots}
        retired = [s for s in current.values() if id(s) not in in_use]
        for slot in retired:
            if slot.retire():
                self._unload(slot)
            else:
                self._retiring.append(slot)
        return ApplyReport(
            self.generation,
            tuple(loaded),
            tuple(kept),
            tuple(f"{s.module}@{s.version}" for s in retired),
            failed,
        )

    async def _load(self, entry: ModuleEntry, traceparent: str | None = None) -> VersionSlot:
        """Fetch, compile and instantiate a version, traced as `wasm.module.load`; its health check,
        if it has one, runs once after (`wasm.function.invoke`, counted, not stopping the load), then
        its smoke calls (`edge.smoke`), before the new routes give it any weight. The health check then
        runs every `intervalSeconds` until the version is retired (`edge.health`)."""
        with load_span(entry, traceparent):
            slot = await self._load_slot(entry)
            self.stats.loaded(slot.load_ms, slot.loaded.info.size)
            if (check := entry.health_check) is not None:
                slot.counters.checked(check.function, await health_check(slot.loaded, entry, check))
            if entry.smoke:
                slot.smoked(await run_smoke(slot.loaded, entry))
        slot.check_health()
        return slot

    async def _load_slot(self, entry: ModuleEntry) -> VersionSlot:
        try:
            data = await self.source.fetch(entry.digest)
        except EdgeError:
            raise
        except Exception as exc:
            raise LoadError(f"cannot fetch {entry.digest}: {exc}") from None
        sandbox = Sandbox.from_entry(entry.limits, entry.capabilities, entry.argv, entry.module)
        started = time.perf_counter()
        # Off the event loop: compiling a big module takes seconds, and the node goes on serving.
        loaded = await asyncio.to_thread(self.runtime.load_any, data, sandbox, digest=entry.digest, verified=True)
        load_ms = (time.perf_counter() - started) * 1000
        log.info(
            "loaded %s@%s (%.1f MB) in %.0f ms, %s",
            entry.module,
            entry.version,
            len(data) / 1e6,
            load_ms,
            "from the precompiled cache" if loaded.from_cache else "compiled",
        )
        if entry.health_check is not None and entry.health_check.function not in loaded.functions:
            raise LoadError(f"healthCheck.function {entry.health_check.function!r} is not a callable export")
        return VersionSlot(entry, loaded, self.clock, load_ms)

    def _unload(self, slot: VersionSlot) -> None:
        slot.loaded.close()
        if slot in self._retiring:
            self._retiring.remove(slot)
        self._drained.append(slot)  # its last counts still go out with the next delta
        log.info("unloaded %s@%s", slot.module, slot.version)

    async def close(self) -> None:
        """Stop every version's periodic health checks (the node shuts down)."""
        tasks = [t for slot in [*self.slots(), *self._retiring] if (t := slot.stop_checks()) is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def retiring(self) -> tuple[VersionSlot, ...]:
        """Versions out of the table that still finish in-flight requests."""
        return tuple(self._retiring)

    # -- metrics --------------------------------------------------------------------------------

    def metrics_delta(self) -> list[VersionMetrics]:
        """Per version, what changed since the previous call (retiring versions included)."""
        out = []
        drained, self._drained = self._drained, []
        for slot in [*self.slots(), *self._retiring, *drained]:
            delta = slot.ship()
            if delta.requests or delta.health_checks:
                out.append(slot.metrics(delta))
        return out

    def metrics_total(self) -> list[tuple[VersionSlot, VersionMetrics]]:
        return [(slot, slot.metrics(slot.counters)) for slot in [*self.slots(), *self._retiring]]
