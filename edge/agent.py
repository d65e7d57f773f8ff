"""The edge agent: keeps a node's module table in step with the control plane.

Flow: register -> (long-poll the assignment -> fetch new binaries by digest, verify them -> apply the
table through the router -> heartbeat at once) forever, with a heartbeat every few seconds carrying
what runs and the metric deltas. When the control plane is unreachable the node keeps serving what
it has and retries with capped exponential backoff; when the control plane has forgotten the node
(404), the agent registers again. Nothing here imports the control plane: the wire shapes are in
`edge.nodeapi`.

A node that keeps its tables (`SavedTables`, `edge.tablecache`) saves each signed table it applies;
after a restart `restore` serves the saved one, once it verifies, before the control plane is
reached, and heartbeats say `ServingCachedTable` until the control plane answers one. With a pinned
key (`--control-plane-key`) a table the control plane sends is checked too, before it is applied: one
that key did not sign is refused, and the node keeps serving what it has. Such a node's registration
carries a nonce, and the control plane answers it with the generation it numbers the node's tables from,
signed (`verify_floor`): a table of this node numbered under it is refused, even with no table yet.

Binaries come by digest from the control plane, or from the S3 URL it redirects to
(`edge.blobfetch`), through the router's disk cache; the agent and the blob source share one
`ControlPlaneLink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from edge.auth import ISSUER
from edge.blobfetch import ControlPlaneLink
from edge.counters import Counters
from edge.nodeapi import (
    NODES_PATH,
    Heartbeat,
    HeartbeatAnswer,
    Registration,
    RegistrationAnswer,
    Running,
    SmokeReport,
)
from edge.protocol import (
    SERVING_CACHED_TABLE,
    TABLE_BINDING_HEADER,
    TABLE_SIGNATURE_HEADER,
    ModuleEntry,
    ModuleTable,
    VersionMetrics,
)
from edge.router import ApplyReport
from edge.smoke import SmokeOutcome
from edge.tablecache import SavedTables, TableRefusedError, TrustedKey, verify_floor, verify_table

log = logging.getLogger("hotswap.edge.agent")
LONG_POLL_SECONDS = 25.0
MAX_BACKOFF_SECONDS = 5.0
FIRST_RETRY_SECONDS = 0.5  # a table entry that failed to load is tried again after this,
MAX_RETRY_SECONDS = 10.0  # doubling up to this
NONCE_BYTES = 24  # a pinned node's registration nonce (edge.nodeapi.NONCE_PATTERN: 32 characters)
ERROR_CHECK_SECONDS = 0.1  # new module failures go out within this, not at the next heartbeat,
ERROR_MIN_INTERVAL = 0.25  # but a node sends at most four such early heartbeats a second
# The largest binary the control plane stores (reconciler.store.blobs.MAX_MODULE_BYTES); brotli
# output for bytes that do not compress is a little larger than its input, hence the slack.


async def answer_json(response: aiohttp.ClientResponse) -> Any:
    """A control plane's answer as JSON, parsed with orjson: nesting past its limit (1,024 levels) is a
    ValueError like any malformed answer (retried), never a RecursionError that ends the agent."""
    return orjson.loads(await response.read())


class ForgottenError(Exception):
    """The control plane does not know this node (it restarted without state, or deleted it)."""


class RunningVersion(Protocol):
    """What a heartbeat says about one version the node runs (a router's `VersionSlot`)."""

    @property
    def module(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def entry(self) -> ModuleEntry: ...
    @property
    def weight(self) -> int: ...
    @property
    def smoke(self) -> SmokeOutcome | None: ...
    @property
    def counters(self) -> Counters: ...
    @property
    def shipped(self) -> Counters: ...


class TableTarget(Protocol):
    """What the agent drives: one process's `Router`, or the workers of a multi-process node."""

    async def apply_table(
        self,
        entries: Sequence[ModuleEntry],
        generation: int | None = None,
        traceparents: Mapping[str, str] | None = None,
    ) -> ApplyReport: ...
    def metrics_delta(self) -> list[VersionMetrics]: ...
    def slots(self) -> Sequence[RunningVersion]: ...


@dataclass
class AgentState:
    registered: bool = False
    applied_generation: int = 0
    floor: int = 0  # pinned: the generation the control plane last signed it numbers this node's tables from
    floor_refused: str | None = None  # pinned: why the last registration answer's floor did not verify
    early_polls: int = 0  # long-polls in a row that came back empty long before their wait
    table: ModuleTable | None = None
    last_report: ApplyReport | None = None
    retry_delay: float = FIRST_RETRY_SECONDS
    unsent: list[VersionMetrics] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    contact: asyncio.Event = field(default_factory=asyncio.Event)
    serving_cached: bool = False  # the table applied came from disk; the control plane has not answered yet

    def conditions(self) -> tuple[str, ...]:
        return (SERVING_CACHED_TABLE,) if self.serving_cached else ()

    # What the agent learns changes here, through these (the node reads `conditions` meanwhile).

    def mark_registered(self, registered: bool) -> None:
        self.registered = registered

    def applied(self, table: ModuleTable, report: ApplyReport) -> None:
        self.applied_generation = table.generation
        self.table = table
        self.last_report = report

    def retry_sooner(self) -> None:
        self.retry_delay = FIRST_RETRY_SECONDS

    def retry_later(self) -> None:
        self.retry_delay = min(self.retry_delay * 2, MAX_RETRY_SECONDS)

    def polled_early(self) -> int:
        """One more long-poll in a row that came back empty long before its wait; how many now."""
        self.early_polls += 1
        return self.early_polls

    def polled_in_time(self) -> None:
        self.early_polls = 0

    def serve_cached(self, cached: bool) -> None:
        self.serving_cached = cached

    def floor_verified(self, floor: int) -> None:
        """A registration answer's floor verified: tables under the highest so far are refused."""
        self.floor, self.floor_refused = max(self.floor, floor), None

    def floor_not_verified(self, why: str) -> None:
        """A registration answer's floor did not verify: every table is refused until one does."""
        self.floor_refused = why


class Agent:
    def __init__(
        self,
        control: str | ControlPlaneLink,  # a URL, or the link `ControlPlaneBlobs` shares
        registration: Registration,
        router: TableTarget,
        *,
        token: str | None = None,  # with a URL: the node token
        heartbeat_seconds: float = 5.0,
        long_poll_seconds: float = LONG_POLL_SECONDS,
        on_public_key: Callable[[str, str], None] | None = None,
        saved: SavedTables | None = None,
        state: AgentState | None = None,  # given when the node reads its conditions before the agent exists
    ) -> None:
        self.link = control if isinstance(control, ControlPlaneLink) else ControlPlaneLink(control, token)
        self.control = self.link.control
        self.registration = registration
        self.router = router
        self.heartbeat_seconds = heartbeat_seconds
        self.long_poll_seconds = long_poll_seconds
        self.on_public_key = on_public_key
        self.saved = saved
        self.state = state if state is not None else AgentState()
        self._heartbeat_now = asyncio.Event()

    @property
    def node_url(self) -> str:
        return f"{self.control}{NODES_PATH}/{self.registration.id}"

    def session(self) -> aiohttp.ClientSession:
        return self.link.session()

    def store_session(self) -> aiohttp.ClientSession:
        return self.link.store_session()

    async def close(self) -> None:
        await self.link.close()

    async def run(self) -> None:
        """Run until cancelled: the assignment loop and the heartbeat loop, each retrying on its own."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._forever(self._assignment_once, "assignment"))
                group.create_task(self._forever(self._heartbeat_loop, "heartbeat"))
        finally:
            await self.close()

    async def _forever(self, step: Callable[[], object], what: str) -> None:
        backoff = 0.1
        while True:
            try:
                await step()  # type: ignore[misc]
                backoff = 0.1
            except ForgottenError:
                log.info("the control plane does not know this node; registering again")
                self.state.mark_registered(False)
            except TableRefusedError as exc:  # keeps serving what it has
                log.error("%s: refusing the table the control plane sent: %s; retrying in %.1fs", what, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)  # not capped by the heartbeat: no storm
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                log.warning("%s: control plane unreachable (%s); retrying in %.1fs", what, exc, backoff)
                self.state.mark_registered(False)
                await asyncio.sleep(backoff)
                backoff = self.next_backoff(backoff)

    def next_backoff(self, backoff: float) -> float:
        """The delay after another failure to reach the control plane: doubling, at most
        MAX_BACKOFF_SECONDS and at most one heartbeat period. A control plane that answers (503
        while its store restarts) counts each attempt as the node speaking
        (`reconciler.apply.nodehealth.NodeHealth.contact`): a node that waited longer would look
        silent for the three heartbeats that make it Unhealthy. (A table refused backs off to
        MAX_BACKOFF_SECONDS: tests/security/test_table_binding_attacks.py.)"""
        return min(backoff * 2, MAX_BACKOFF_SECONDS, max(self.heartbeat_seconds, 0.1))

    async def register(self) -> RegistrationAnswer:
        body = self.registration.model_dump(mode="json", by_alias=True)
        # Where this node's numbering stands: what it applied, or the floor it takes tables from, if
        # higher (a control plane that lost state numbers on past it: reconciler.store.nodes)
        body["generation"] = max(self.state.applied_generation, self.state.floor)
        pinned = self.saved.pinned if self.saved is not None else None
        if pinned is not None:  # the answer says, signed, where this node's numbering stands now
            body["nonce"] = nonce = secrets.token_urlsafe(NONCE_BYTES)
        async with self.session().post(f"{self.control}{NODES_PATH}", json=body) as response:
            if response.status not in (200, 201):
                raise ValueError(f"registration refused: {response.status} {await response.text()}")
            answer = RegistrationAnswer.model_validate(await answer_json(response))
        if pinned is not None:  # one that does not verify: registered, but every table is refused until one does
            try:
                floor = await asyncio.to_thread(verify_floor, self.registration.id, nonce, answer.floor, pinned)
                self.state.floor_verified(floor)
            except TableRefusedError as exc:
                self.state.floor_not_verified(str(exc))
        self.state.mark_registered(True)
        self.heartbeat_seconds = answer.heartbeat_seconds
        key = await self._trusted_key(answer)
        if key is not None and self.on_public_key is not None:
            self.on_public_key(key.pem, key.issuer)
        log.info("registered with %s as %s (%s)", self.control, self.registration.id, self.registration.region)
        return answer

    async def _trusted_key(self, answer: RegistrationAnswer) -> TrustedKey | None:
        """The key execute tokens and tables are checked with after a registration: the pinned one
        whatever the answer says (`SavedTables.remember_key` logs another), else the answer's, kept
        for the next restart when the node keeps its tables."""
        if not answer.public_key:
            return self.saved.pinned if self.saved is not None else None
        if self.saved is None:
            return TrustedKey(answer.public_key, answer.issuer or ISSUER)
        return await asyncio.to_thread(self.saved.remember_key, answer.public_key, answer.issuer or ISSUER)

    async def _ensure_registered(self) -> None:
        if not self.state.registered:
            await self.register()

    async def _assignment_once(self) -> None:
        await self._ensure_registered()
        failed = self.state.table is not None and self.state.last_report is not None and self.state.last_report.failed
        wait = min(self.long_poll_seconds, self.state.retry_delay) if failed else self.long_poll_seconds
        url = f"{self.node_url}/assignment"
        params = {"after": str(self.state.applied_generation), "wait": str(wait)}
        timeout = aiohttp.ClientTimeout(total=wait + 10)
        started = time.monotonic()
        async with self.session().get(url, params=params, timeout=timeout) as response:
            if response.status == 404:
                raise ForgottenError()
            if response.status == 204:
                if failed and self.state.table is not None:
                    # What did not load (a blob store down, say) is tried again, less often each time.
                    await self.apply(self.state.table)
                    self.state.retry_later()
                elif time.monotonic() - started < wait / 2:
                    # Nothing new long before the wait was up: a control plane that is stopping, or a
                    # proxy cutting the poll short. Polling again at once would spin: back off.
                    await asyncio.sleep(min(0.05 * 2 ** self.state.polled_early(), MAX_BACKOFF_SECONDS))
                else:
                    self.state.polled_in_time()
                return
            if response.status != 200:
                raise ValueError(f"assignment: {response.status} {await response.text()}")
            raw = await answer_json(response)
            signature = response.headers.get(TABLE_SIGNATURE_HEADER)
            binding = response.headers.get(TABLE_BINDING_HEADER)
            table = ModuleTable.model_validate(raw)
        modules = raw.get("modules", [])
        pinned = self.saved.pinned if self.saved is not None else None
        if pinned is not None:  # the operator pinned the key: a table it did not give this node is never served
            node_id = self.registration.id
            await asyncio.to_thread(verify_table, node_id, table, modules, signature, binding, pinned)
            if self.state.floor_refused is not None:
                self.state.mark_registered(False)
                raise TableRefusedError(self.state.floor_refused)
            if table.generation < self.state.floor:  # even with no table yet (a new node, a wiped cache)
                self.state.mark_registered(False)
                raise TableRefusedError(
                    f"its generation {table.generation} is under {self.state.floor}, from which the control plane "
                    "numbers this node's tables (an older table of this node, sent again)"
                )
            if self.state.table is not None and table.generation <= self.state.applied_generation:
                # Registering again tells a control plane that lost state where this node's numbering
                # stands: it numbers on past it (reconciler.store.nodes.upsert_node).
                self.state.mark_registered(False)
                raise TableRefusedError(
                    f"its generation {table.generation} is not past the applied {self.state.applied_generation}"
                    " (an older table of this node, sent again)"
                )
        self.state.retry_sooner()
        await self.apply(table)
        if self.saved is not None:
            await asyncio.to_thread(self.saved.save, table, modules, signature, binding)

    async def restore(self) -> bool:
        """Serve the table saved before a restart, if it verifies; True when it is served. A table
        that does not verify is refused loudly and set aside: the node serves nothing until the
        control plane answers, never something unverified."""
        if self.saved is None:
            return False
        try:
            found = await asyncio.to_thread(self.saved.load)
        except TableRefusedError as exc:
            aside = await asyncio.to_thread(self.saved.set_aside)
            log.error(
                "refusing the cached table %s: %s; %s; serving nothing until the control plane answers",
                self.saved.path,
                exc,
                aside,
            )
            return False
        if found is None:
            return False
        table, key = found
        if self.on_public_key is not None:  # execute calls need the control plane's tokens before anything serves
            self.on_public_key(key.pem, key.issuer)
        report = await self.apply(table)
        self.state.serve_cached(True)
        log.warning(
            "%s: serving the cached table (generation %d: %d loaded, %d failed) until the control plane answers",
            SERVING_CACHED_TABLE,
            table.generation,
            len(report.loaded),
            len(report.failed),
        )
        return True

    async def apply(self, table: ModuleTable) -> ApplyReport:
        report = await self.router.apply_table(table.modules, table.generation, table.traceparents)
        self.state.applied(table, report)
        if report.failed:
            log.warning("generation %d: not loaded: %s", table.generation, report.failed)
        self._heartbeat_now.set()  # tell the control plane at once what now runs
        return report

    def heartbeat_body(self) -> Heartbeat:
        delta = self.router.metrics_delta()
        self.state.unsent.extend(delta)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        elapsed = max(time.monotonic() - self.state.started, 1e-6)
        slots = self.router.slots()
        return Heartbeat(
            generation=self.state.applied_generation,
            running=tuple(
                Running(module=s.module, version=s.version, digest=s.entry.digest, weight=s.weight) for s in slots
            ),
            failed=dict(self.state.last_report.failed) if self.state.last_report else {},
            smoke=tuple(
                SmokeReport(
                    module=s.module,
                    version=s.version,
                    digest=s.entry.digest,
                    passed=s.smoke.passed,
                    error=s.smoke.error,
                )
                for s in slots
                if s.smoke is not None
            ),
            metrics=tuple(self.state.unsent),
            cpu_percent=round(100 * (usage.ru_utime + usage.ru_stime) / elapsed / (os.cpu_count() or 1), 2),
            memory_mb=round(usage.ru_maxrss / 1024, 1),
            uptime_seconds=round(elapsed, 1),
            conditions=self.state.conditions(),
        )

    async def heartbeat(self) -> HeartbeatAnswer:
        await self._ensure_registered()
        body = self.heartbeat_body()
        async with self.session().post(
            f"{self.node_url}/heartbeat", json=body.model_dump(mode="json", by_alias=True)
        ) as response:
            if response.status == 404:
                raise ForgottenError()
            if response.status != 200:
                raise ValueError(f"heartbeat: {response.status} {await response.text()}")
            answer = HeartbeatAnswer.model_validate(await answer_json(response))
        self.state.unsent.clear()  # delivered
        self.state.contact.set()
        if body.conditions and self.state.serving_cached:
            self.state.serve_cached(False)
            log.warning("the control plane answered: no longer %s", SERVING_CACHED_TABLE)
        return answer

    def _new_errors(self) -> bool:
        """Module failures since the last heartbeat: the control plane's analysis wants them now."""
        return any(s.counters.errors > s.shipped.errors for s in self.router.slots())

    async def _heartbeat_loop(self) -> None:
        await self.heartbeat()
        self._heartbeat_now.clear()
        sent = time.monotonic()
        deadline = sent + self.heartbeat_seconds
        while (remaining := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, ERROR_CHECK_SECONDS)):  # not wait_for: it can drop a cancel
                    await self._heartbeat_now.wait()
            if self._heartbeat_now.is_set():
                return
            if time.monotonic() - sent >= ERROR_MIN_INTERVAL and self._new_errors():
                return
