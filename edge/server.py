"""The node's HTTP server (aiohttp on uvloop): execute, health, metrics, the loaded modules.

Where it sits: in front of the router and the runtime. `build_app(node)` makes the application;
`serve(node, host, port)` runs it until cancelled. The execute handler is `edge.execute`'s.

    POST /api/v1/wasm/execute      {"module", "function", "args", "version"?}; a command (`_start`)
                                   may take "argv" and "stdin" (or "stdinBase64") instead of args
                                   200 {"result", "module", "version", "durationMs"} (commands: also
                                   "exitCode" 0 and the tail of "stderr"; another status is a 500
                                   {"error": "exit", "exitCode", "stderr", ...}) and the header
                                   X-Hotswap-Version; a client mistake is a 4xx, a module failure a
                                   5xx (429 for cpu), both JSON {"error", "message", ...}
    GET  /health                   {"status": "ok", ...}
    GET  /metrics                  Prometheus text
    GET  /api/v1/wasm/modules      what is loaded: versions, weights, functions and conventions (env names,
                                   not values; with a key, for token holders only)
    PUT  /api/v1/wasm/admin/table  (loopback only, when enabled) apply a full ModuleTable: the same
                                   `Router.apply_table` path the control-plane agent uses; a node
                                   with a key also needs a token with role admin (401, 403)

Where a call runs: a call to a numeric or json export first runs on the event loop thread with a
budget of a couple of epoch ticks (about 2 ms). Most calls finish far sooner, and skip the ~40 µs
round trip through a thread pool. A call that runs out of that budget loses its instance, is run
again on a worker thread with the rest of its timeout, and that function goes to the workers from
then on, unless the rerun used less than half the budget in thread CPU time: the budget is wall
time, so a loop held up by the machine (another process on its core) was the cause, not the
call, and the function stays inline. Commands, modules with file grants and modules that can
sleep (the epoch deadline does not interrupt a host call) always run on workers. wasmtime calls
release the GIL, so a module spinning on a worker does not hold up the loop, and worker threads run
at a lower priority (nice 10) so that on a busy machine the loop and its short calls get the CPU
first.

Worker threads are shared fairly (`edge.lanes`): a module version runs at most half of them
(`NodeConfig.thread_share`, default `max(1, threads // 2)`); its calls beyond that wait in its own
bounded queue and are answered 429 `{"error": "busy"}` when the queue is full or the wait too
long. A module whose calls all run into their timeout cannot hold up another module's calls.

Execute bodies: `args` nest at most `MAX_ARGS_DEPTH` (64) levels of arrays and objects; deeper is
a 400 naming the limit, as is a body too deep for the JSON parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from aiohttp import hdrs, web
from pydantic import ValidationError

from edge.auth import READ_ROLES, Authenticator
from edge.errors import BadRequestError, NotFoundError
from edge.execute import execute_handler, failure_response, validation_message
from edge.lanes import ThreadShares
from edge.limits import lower_priority
from edge.loaded import BudgetExceededError, Call, CallResult
from edge.metrics import prometheus_lines
from edge.protocol import ModuleTable, VersionMetrics
from edge.router import ApplyReport, Router, VersionSlot
from edge.runtime import Runtime
from edge.telemetry import Serving, node_reading

log = logging.getLogger("hotswap.edge.server")
MIB = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class NodeConfig:
    max_body: int = 4 * MIB
    threads: int = 4
    inline_budget_ticks: int = 2
    cpu_max_wait: float = 1.0
    admin: bool = False
    node_id: str = "standalone"
    worker_nice: int = 10
    thread_share: int = 0  # worker threads one module version may hold at once; 0: max(1, threads // 2)
    thread_queue: int = 64  # calls of one version that may wait for its share; more are 429 busy
    thread_max_wait: float = 10.0  # seconds a call waits for its version's share before a 429 busy


class WholeNode(Protocol):
    """A multi-process node's supervisor as one of its workers sees it (`edge.ipc.SupervisorLink`):
    admin tables go to every worker through it, and /metrics shows the whole node's counts."""

    async def forward_table(self, table: ModuleTable) -> ApplyReport: ...
    async def node_metrics(self) -> list[VersionMetrics]: ...


class Node:
    """The runtime, the router and the worker threads of one edge node."""

    def __init__(
        self,
        runtime: Runtime,
        router: Router,
        config: NodeConfig,
        auth: Authenticator | None = None,
        whole: WholeNode | None = None,  # a worker of a multi-process node (edge.worker): its supervisor
    ) -> None:
        self.runtime = runtime
        self.router = router
        self.config = config
        self.auth = auth
        self.whole = whole
        self.pool = ThreadPoolExecutor(
            max_workers=config.threads,
            thread_name_prefix="wasm",
            initializer=lower_priority,
            initargs=(config.worker_nice,),
        )
        self.shares = ThreadShares(
            config.thread_share or max(1, config.threads // 2), config.thread_queue, config.thread_max_wait
        )
        self.started = time.time()
        self._inline_budget = config.inline_budget_ticks  # read on every call

    def trust(self, auth: Authenticator) -> None:
        """Execute calls need a token `auth` verifies from now on (a managed node learns its
        control plane's key at registration, after the node is built)."""
        self.auth = auth

    def start(self, slot: VersionSlot, call: Call) -> CallResult | Coroutine[Any, Any, CallResult]:
        """Run `call`: a short call runs here, on the event loop, and its result is returned as it
        is (the execute path's common case, with no coroutine in between); any other call returns
        the coroutine that runs it on a worker, to await (`run` does both)."""
        loaded = slot.loaded
        if not loaded.may_run_inline(call.function):
            return self._on_worker(slot, call, loaded.sandbox.timeout_seconds)
        started = time.perf_counter()
        try:
            return loaded.invoke(call, budget=self._inline_budget, cpu_clock=time.perf_counter_ns)
        except BudgetExceededError:
            loaded.mark_slow(call.function)
            log.info("%s@%s %s: long call, moved to workers", slot.module, slot.version, call.function)
            timeout = max(loaded.sandbox.timeout_seconds - (time.perf_counter() - started), self.runtime.tick)
            return self._rerun(slot, call, timeout)

    async def run(self, slot: VersionSlot, call: Call) -> CallResult:
        result = self.start(slot, call)
        return result if isinstance(result, CallResult) else await result

    async def _rerun(self, slot: VersionSlot, call: Call, timeout: float) -> CallResult:
        """A call that ran out of its inline budget, again on a worker with the rest of its timeout."""
        result = await self._on_worker(slot, call, timeout)
        # The budget is wall time: a loop held up by the machine (another process on its core)
        # runs a short call out of it too. The rerun's thread CPU time says which it was.
        if result.cpu_ns * 2 < self.config.inline_budget_ticks * self.runtime.tick * 1e9:
            slot.loaded.mark_fast(call.function)
            log.info("%s@%s %s: a short call after all, back inline", slot.module, slot.version, call.function)
        return result

    async def _on_worker(self, slot: VersionSlot, call: Call, timeout: float) -> CallResult:
        loaded = slot.loaded
        shares = self.shares
        await shares.take(loaded, f"{slot.module}@{slot.version}")
        future = self.pool.submit(partial(loaded.invoke, call, timeout=timeout))
        try:
            return await asyncio.wrap_future(future)
        finally:
            if future.done():
                shares.give_back(loaded)
            else:  # the request was cancelled; the call still holds its thread until it stops
                future.add_done_callback(partial(_give_back_later, asyncio.get_running_loop(), shares, loaded))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _give_back_later(loop: asyncio.AbstractEventLoop, shares: ThreadShares, key: object, _: object) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to give back to
        loop.call_soon_threadsafe(shares.give_back, key)


NODE = web.AppKey("node", Node)
EXECUTE_PATH = "/api/v1/wasm/execute"
_EXECUTE_ROUTE = web.AppKey("execute_route", web.ResourceRoute)  # `take_execute_shortcut` takes it
# What a node says about itself beyond serving (a managed node: `ServingCachedTable`), for /health.
CONDITIONS: web.AppKey[Callable[[], Iterable[str]]] = web.AppKey("conditions")
_ADMIN = frozenset({"admin"})  # who may replace a standalone node's table when it checks tokens


def answers_json(handler: Handler) -> Handler:
    """`handler` with every failure answered as JSON (`edge.execute.failure_response`); nothing a
    client sends takes the server down. The execute route's handler does this itself.

    Per route rather than an application middleware: an application with middlewares runs every
    request through two more coroutines (its own and aiohttp's `_fix_request_current_app`) and a
    partial built per request, which the execute path measured at ~2-3 µs (bench/RESULTS.md)."""

    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            return failure_response(exc, request)

    return answer


async def _no_route(request: web.Request) -> web.Response:
    """What the router answers outside the routes: 404 for a path it does not know, 405 for a
    method a known path does not take (as aiohttp's own answers, in JSON)."""
    raise web.HTTPNotFound()


async def _no_method(request: web.Request) -> web.Response:
    raise web.HTTPMethodNotAllowed(request.method, ())


async def health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    slots = node.router.slots()
    return web.json_response(
        {
            "status": "ok",
            "node": node.config.node_id,
            "generation": node.router.generation,
            "modules": len(node.router.routes),
            "versions": len(slots),
            "retiring": len(node.router.retiring),
            "uptimeSeconds": round(time.time() - node.started, 3),
            **({"conditions": list(said())} if (said := request.app.get(CONDITIONS)) is not None else {}),
        }
    )


async def modules(request: web.Request) -> web.Response:
    """What is loaded. A node with a key shows it only to token holders (any role), and never shows
    env values, only their names: env is how fleets hand modules their configuration."""
    node = request.app[NODE]
    if node.auth is not None:
        node.auth.check(request.headers.get("Authorization"), roles=READ_ROLES)
    items = []
    for slot in node.router.slots():
        entry = slot.entry
        items.append(
            {
                "module": slot.module,
                "version": slot.version,
                "digest": entry.digest,
                "weight": entry.weight,
                "inflight": slot.inflight,
                "fromCache": slot.loaded.from_cache,
                "loadMs": round(slot.load_ms, 3),
                "size": slot.loaded.info.size,
                "limits": entry.limits.model_dump(by_alias=True),
                "capabilities": {
                    **entry.capabilities.model_dump(by_alias=True),
                    "env": sorted(entry.capabilities.env),
                },
                "functions": [
                    {"name": name, "signature": str(e.sig), "convention": e.convention}
                    for name, e in sorted(slot.loaded.functions.items())
                ],
            }
        )
    return web.json_response({"generation": node.router.generation, "modules": items})


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    totals = await node.whole.node_metrics() if node.whole is not None else None
    return web.Response(text=render_metrics(node, totals), content_type="text/plain", charset="utf-8")


def render_metrics(node: Node, totals: list[VersionMetrics] | None = None) -> str:
    """Prometheus text exposition of the node's families (edge.telemetry declares them).

    `totals` (a multi-process node) replaces this process's counts with the whole node's."""
    rows = node.router.metrics_total()
    if totals is not None:
        whole = {(m.module, m.version): m for m in totals}
        rows = [(slot, whole.get((slot.module, slot.version), m)) for slot, m in rows]
    serving = [Serving(m, 0 if slot.retired else slot.entry.weight, slot.inflight) for slot, m in rows]
    router, node_id = node.router, node.config.node_id
    reading = node_reading(
        router.stats, serving, node_id=node_id, modules=len(router.routes), generation=router.generation
    )
    return "\n".join(prometheus_lines(reading)) + "\n"


async def admin_table(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if not node.config.admin or not _is_loopback(request.remote):
        raise NotFoundError("no admin endpoint on this node")
    if node.auth is not None:  # the same key as execute, and the admin role
        node.auth.check(request.headers.get("Authorization"), roles=_ADMIN)
    try:
        table = ModuleTable.model_validate_json(await request.read())
    except ValidationError as exc:
        raise BadRequestError(validation_message(exc)) from None
    if node.whole is not None:
        report = await node.whole.forward_table(table)
    else:
        report = await node.router.apply_table(table.modules, table.generation)
    return web.json_response(
        {
            "generation": report.generation,
            "loaded": report.loaded,
            "kept": report.kept,
            "retired": report.retired,
            "failed": report.failed,
        }
    )


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def build_app(node: Node, conditions: Callable[[], Iterable[str]] | None = None) -> web.Application:
    app = web.Application(client_max_size=node.config.max_body)  # no middlewares: see `answers_json`
    app[NODE] = node
    if conditions is not None:
        app[CONDITIONS] = conditions
    routes: tuple[tuple[str, str, Handler], ...] = (
        ("POST", EXECUTE_PATH, execute_handler(node, app.on_response_prepare)),  # answers its failures as JSON itself
        ("GET", "/health", answers_json(health)),
        ("GET", "/metrics", answers_json(metrics)),
        ("GET", "/api/v1/wasm/modules", answers_json(modules)),
        ("PUT", "/api/v1/wasm/admin/table", answers_json(admin_table)),
    )
    for method, path, answered in routes:
        resource = app.router.add_resource(path)
        if method == "GET":  # as add_get: HEAD too
            resource.add_route("HEAD", answered)
        route = resource.add_route(method, answered)
        if path == EXECUTE_PATH:
            app[_EXECUTE_ROUTE] = route
        resource.add_route("*", answers_json(_no_method))  # after the route: only other methods reach it
    app.router.add_route("*", "/{path:.*}", answers_json(_no_route))

    async def stop_calls(app: web.Application) -> None:
        await node.router.close()  # no health check starts against a runtime being closed
        node.runtime.interrupt()  # running calls end now, so shutdown does not wait for timeouts

    async def close_node(app: web.Application) -> None:
        node.close()

    app.on_shutdown.append(stop_calls)
    app.on_cleanup.append(close_node)
    return app


def take_execute_shortcut(runner: web.AppRunner) -> bool:
    """Send `POST /api/v1/wasm/execute` from the server straight to its route's handler, past the
    application's router; whether it could (the runner is set up, and its application is
    `build_app`'s, with no middlewares). Call it after `runner.setup()`, before a site starts.

    The application's `_handle` resolves every request through the router (two coroutines, a set of
    allowed methods, a match info made and frozen per request) and looks for an `Expect` header:
    4-6 µs of the execute path's ~65 (bench/RESULTS.md). The shortcut takes only a request whose
    raw target is exactly the execute path, with method POST and no `Expect` (100-continue stays
    with aiohttp's expect handler). It gives the request the match info the router would have
    given it, made and frozen once, so `request.app`, `request.match_info` and the application's
    `on_response_prepare` signal (a worker's header) work as before. Every other request, the
    path with a query string or an escape included, goes to the application as it did."""
    app, server = runner.app, runner.server
    route = app.get(_EXECUTE_ROUTE)
    if server is None or route is None or len(app.middlewares) > 0:
        return False
    match = web.UrlMappingMatchInfo({}, route)
    match.add_app(app)
    match.freeze()
    execute = route.handler
    general = server.request_handler

    def dispatch(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        """The handler's coroutine, for the server to await (no coroutine of its own in between)."""
        if request.raw_path == EXECUTE_PATH and request.method == "POST" and hdrs.EXPECT not in request.headers:
            assert isinstance(request, web.Request)  # made by the application's request factory
            request._match_info = match
            return execute(request)
        return general(request)

    server.request_handler = dispatch
    return True


async def start(node: Node, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (to clean up) and the port bound (useful with port 0)."""
    runner = web.AppRunner(build_app(node), access_log=None, handle_signals=False)
    await runner.setup()
    take_execute_shortcut(runner)
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
