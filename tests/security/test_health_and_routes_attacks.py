"""Outside attacks on module health checks and on the edge node's routes without middlewares.

Health checks (`edge.health`, reported as `healthChecks`/`healthFailures` in heartbeats and judged
by `reconciler.planner.analysis`):
- as a node token holder: health failures for a version or a module the node was not assigned are
  dropped like its other made-up metrics; counts beyond 2**53, negative, fractional or non-numeric
  are a 400; counts at 2**53, reported twice, no longer overflow the control plane's cumulative
  totals (which made every later heartbeat with that version's metrics, any node's, a 500); one
  heartbeat listing a version 5,000 times adds one event to the hour-long metrics window, not 5,000; a
  `lastError` of 100 KB with terminal escapes, newlines and NUL is cut and loses its control
  characters (it ends up in rollout messages that `hotswap status` prints to a terminal);
- as a developer deploying a hostile module: a health function that loops forever is stopped at its
  timeout, its runs stay within the version's CPU share, and it neither holds the threads that module
  loads use nor makes another module's health check time out (each run used to wait for a thread of
  the event loop's default executor, counting the wait against the other module's timeout, so a few
  looping versions failed an innocent version's checks and so its rollout); a version whose health
  function is not exported does not load (the table's report says why).

Routes (`edge.server.build_app`, each route answering its own failures since the middleware went):
a real keyed standalone node, spoken to with raw HTTP; every route keeps its token rules, odd paths
and methods are JSON 404/405, bodies over the limit are 413, malformed bodies 400, and the node
stays up and never answers a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import wasm
from edge.nodeapi import NODES_PATH, Heartbeat
from edge.protocol import LAST_ERROR_CHARS, ModuleEntry, VersionMetrics
from edge.router import Router, VersionSlot
from edge.runtime import Runtime
from edge.standalone import DirectorySource
from reconciler.api.auth import AuthOptions, TokenAuthority, load_or_create_signing_key
from tests.api.conftest import call
from tests.e2e.cluster import Cluster
from tests.edge.standalone import StandaloneNode, start_standalone
from tests.security.test_attack_node_reports import ROGUE, _registered_rogue_with_calc, _running

EDGE = "hotswap-edge"

# -- as a node token holder: what a heartbeat may claim about health -------------------------------


async def _beat(cluster: Cluster, token: str, table: dict[str, Any], *metrics: dict[str, Any]) -> int:
    beat = {"generation": table["generation"], "running": _running(table), "metrics": list(metrics)}
    return (await call(cluster.url, "POST", f"{NODES_PATH}/{ROGUE}/heartbeat", token, json=beat)).status


async def test_health_failures_for_versions_the_node_was_not_assigned_are_dropped(cluster: Cluster) -> None:
    token, table = await _registered_rogue_with_calc(cluster)
    lies = [
        {"module": "calc", "version": "2.0.0", "healthChecks": 1, "healthFailures": 1, "lastError": "x"},
        {"module": "greeter", "version": "1.0.0", "healthChecks": 1, "healthFailures": 1, "lastError": "x"},
    ]
    assert await _beat(cluster, token, table, *lies) == 200
    window = cluster.plane.hub.metrics
    for lie in lies:
        totals = window.since(lie["module"], lie["version"], "us-east", 0)
        assert (totals.health_checks, totals.health_failures, totals.last_error) == (0, 0, None), lie


@pytest.mark.parametrize(
    "counts",
    [
        {"healthFailures": 2**53 + 1},
        {"healthChecks": 2**64},
        {"healthFailures": -1},
        {"healthChecks": -5, "healthFailures": 1},
        {"healthFailures": 1.5},
        {"healthFailures": "many"},
        {"healthFailures": [1]},
    ],
    ids=["beyond-2**53", "beyond-64-bits", "negative", "negative-checks", "fraction", "string", "list"],
)
async def test_health_counts_out_of_bounds_are_refused(cluster: Cluster, counts: dict[str, Any]) -> None:
    token, table = await _registered_rogue_with_calc(cluster)
    lie = {"module": "calc", "version": "1.0.0", **counts}
    assert await _beat(cluster, token, table, lie) == 400
    totals = cluster.plane.hub.metrics.since("calc", "1.0.0", "us-east", 0)
    assert 0 <= totals.health_failures <= 2**53 and 0 <= totals.health_checks <= 2**53


async def test_counts_at_the_bound_twice_do_not_break_other_heartbeats(cluster: Cluster) -> None:
    """Each report within 2**53, but their sum in the control plane's cumulative totals (its
    /metrics) was beyond what a VersionMetrics may hold: from the second such report on, every
    heartbeat carrying metrics of that version, any node's, was a 500."""
    token, table = await _registered_rogue_with_calc(cluster)
    most = {"module": "calc", "version": "1.0.0", "requests": 2**53, "latencySumMs": 1e18, "latencyBuckets": [2**53]}
    assert await _beat(cluster, token, table, most) == 200
    assert await _beat(cluster, token, table, most) == 200
    honest = {"module": "calc", "version": "1.0.0", "requests": 1, "latencyBuckets": [1]}
    assert await _beat(cluster, token, table, honest) == 200  # as the other nodes' reports of calc
    answer = await call(cluster.url, "GET", "/metrics", cluster.token("admin"))
    assert answer.status == 200


async def test_a_heartbeat_listing_a_version_thousands_of_times_adds_one_event(cluster: Cluster) -> None:
    """15,000 entries of one assigned version fit in a 1 MiB heartbeat; each was kept as an event of
    the hour-long metrics window (40 such heartbeats in 11 s: 600,000 events, +565 MB)."""
    token, table = await _registered_rogue_with_calc(cluster)
    one = {"module": "calc", "version": "1.0.0", "healthChecks": 1, "requests": 2, "latencyBuckets": [2]}
    for _ in range(3):
        assert await _beat(cluster, token, table, *([one] * 5_000)) == 200
    window = cluster.plane.hub.metrics
    assert len(window._events[("calc", "1.0.0", "us-east")]) <= 10  # the honest node's beats too
    totals = window.since("calc", "1.0.0", "us-east", 0)
    assert totals.health_checks >= 15_000 and totals.requests >= 30_000  # summed, not dropped


async def test_a_last_error_with_terminal_escapes_is_cut_and_loses_its_control_characters(cluster: Cluster) -> None:
    token, table = await _registered_rogue_with_calc(cluster)
    hostile = "\x1b[2J\x1b]0;owned\x07\r\nroot# \x00" + "\x1b[31m" * 20_000
    lie = {"module": "calc", "version": "1.0.0", "healthChecks": 1, "healthFailures": 1, "lastError": hostile}
    assert await _beat(cluster, token, table, lie) == 200
    last = cluster.plane.hub.metrics.since("calc", "1.0.0", "us-east", 0).last_error
    assert last is not None and len(last) <= LAST_ERROR_CHARS
    assert last.isprintable(), repr(last[:80])  # no ESC, BEL, CR, LF or NUL reaches status output


def test_a_last_error_keeps_its_printable_text() -> None:
    shown = VersionMetrics(module="m", version="1", lastError="trap: wasm trap: unreachable\n  at f")
    assert shown.last_error is not None and shown.last_error.isprintable()
    assert shown.last_error.startswith("trap: wasm trap: unreachable") and "at f" in shown.last_error


# -- as a developer deploying a hostile module: what its health function can do to the node ------

# Passes on an instance's first call, loops forever on its second: it loads (the check after load
# is a first call) and then every periodic run on that instance spins until its timeout. A timeout
# discards the instance, so the run after it passes again, and the one after that spins.
SPINS = """(module
  (global $calls (mut i32) (i32.const 0))
  (func (export "health") (result i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (if (i32.gt_u (global.get $calls) (i32.const 1)) (then (loop $spin (br $spin))))
    i32.const 0))"""
HEALTHY = """(module (func (export "health") (result i32) i32.const 0))"""
NO_EXPORT = """(module (func (export "version") (result i32) i32.const 1))"""
# asyncio.to_thread's executor: min(32, cpus + 4) threads (concurrent.futures.ThreadPoolExecutor)
DEFAULT_EXECUTOR_THREADS = min(32, (os.cpu_count() or 1) + 4)


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    with Runtime() as rt:
        yield rt


@pytest.fixture
async def router(runtime: Runtime, tmp_path: Path) -> AsyncIterator[Router]:
    router = Router(runtime, DirectorySource(tmp_path))
    yield router
    await router.close()
    runtime.interrupt()  # what a node shutting down does: spinning checks stop now


def _entry(router: Router, wat: str, module: str, *, interval: float = 0.1, **limits: float) -> ModuleEntry:
    source = router.source
    assert isinstance(source, DirectorySource)
    digest = source.add(wasm.compile_wat(wat))
    check = {"function": "health", "intervalSeconds": interval}
    return ModuleEntry.model_validate(
        {"module": module, "version": "1.0.0", "digest": digest, "limits": limits, "healthCheck": check}
    )


def _slot(router: Router, module: str) -> VersionSlot:
    found = router.routes[module].by_version("1.0.0")
    assert found is not None
    return found


async def _until(condition: Any, what: str, timeout: float = 20) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"still waiting for {what}") from None


async def test_a_health_function_that_loops_forever_is_stopped_at_its_timeout(router: Router) -> None:
    await router.apply_table([_entry(router, SPINS, "spinner", timeoutSeconds=0.3)], 1)
    spinner = _slot(router, "spinner")
    await _until(lambda: spinner.counters.health_failures >= 1, "a failed run")
    assert spinner.counters.last_error is not None and "timeout" in spinner.counters.last_error
    assert spinner.counters.last_error.startswith("health check health failed: timeout"), spinner.counters.last_error


async def test_looping_health_functions_cannot_fail_another_modules_checks(router: Router) -> None:
    """As many looping versions as the default executor has threads, and an innocent version with a
    short timeout: the innocent one's checks all pass (they used to wait behind the spinners for a
    thread, and that wait ran out their timeout: a failed check, and so a failed rollout step)."""
    spinners = [_entry(router, SPINS, f"spinner{i}", timeoutSeconds=3) for i in range(DEFAULT_EXECUTOR_THREADS)]
    innocent = _entry(router, HEALTHY, "innocent", timeoutSeconds=0.2)
    await router.apply_table([innocent, *spinners], 1)
    checked = _slot(router, "innocent")
    seen = checked.counters.health_checks
    await _until(lambda: checked.counters.health_checks >= seen + 20, "20 more runs of the innocent check")
    assert checked.counters.health_failures == 0, checked.counters.last_error


async def test_looping_health_functions_do_not_hold_the_threads_module_loads_use(router: Router) -> None:
    spinners = [_entry(router, SPINS, f"spinner{i}", timeoutSeconds=3) for i in range(DEFAULT_EXECUTOR_THREADS)]
    await router.apply_table(spinners, 1)
    await asyncio.sleep(0.5)  # every spinner is in its second run, spinning
    started = time.monotonic()
    await asyncio.to_thread(lambda: None)  # where `Router._load_slot` compiles the next table's modules
    assert time.monotonic() - started < 1.0
    loaded = time.monotonic()
    await router.apply_table([*spinners, _entry(router, HEALTHY, "innocent", timeoutSeconds=0.2)], 2)
    assert time.monotonic() - loaded < 2.0  # not one spinner's timeout (3 s) behind them


async def test_a_looping_health_function_stays_within_its_versions_cpu_share(router: Router) -> None:
    """cpuPercent 10 and intervalSeconds 0.1: a run that spins for its 0.5 s timeout may not start
    again 0.1 s later (it did: ~80% of a core for a version allowed 10%)."""
    await router.apply_table([_entry(router, SPINS, "spinner", timeoutSeconds=0.5, cpuPercent=10)], 1)
    spinner = _slot(router, "spinner")
    await _until(lambda: spinner.counters.health_failures >= 1, "a first spinning run")
    runs, window = spinner.counters.health_checks, 4.0
    await asyncio.sleep(window)
    spinning = (spinner.counters.health_checks - runs) / 2 * 0.5  # every other run spins 0.5 s
    assert spinning <= 0.25 * window, f"{spinner.counters.health_checks - runs} runs in {window} s"


async def test_a_version_whose_health_function_is_not_exported_does_not_load(router: Router) -> None:
    report = await router.apply_table([_entry(router, NO_EXPORT, "silent", interval=0.1)], 1)
    assert "is not a callable export" in report.failed["silent@1.0.0"], report.failed
    assert "silent" not in router.routes
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("health silent")]


# -- the node's routes without middlewares: a keyed standalone node over raw HTTP ---------------


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> TokenAuthority:
    key = load_or_create_signing_key(tmp_path_factory.mktemp("auth") / "signing-key.pem")
    return TokenAuthority(AuthOptions(), key)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, authority: TokenAuthority) -> Iterator[StandaloneNode]:
    """`hotswap edge --standalone` with `--key` (the admin table on, loopback only), serving arith."""
    base = tmp_path_factory.mktemp("keyed")
    folder = base / "modules"
    folder.mkdir()
    arith = Path(__file__).resolve().parents[1] / "edge" / "modules" / "arith.wat"
    (folder / "arith.wat").write_text(arith.read_text())
    (base / "public.pem").write_text(authority.public_key_pem)
    node = start_standalone(folder, base / "cache", "--key", str(base / "public.pem"))
    yield node
    node.stop()


def _raw(node: StandaloneNode, method: str, target: str, body: bytes = b"", token: str | None = None) -> Any:
    """(status, content type, body) of one request written byte for byte (no client normalises it)."""
    host, port = node.url.removeprefix("http://").rsplit(":", 1)
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    lines, _, content = answer.partition(b"\r\n\r\n")
    status = int(lines.split(b" ", 2)[1])
    types = [
        line.split(b":", 1)[1].strip().decode()
        for line in lines.split(b"\r\n")
        if line.lower().startswith(b"content-type:")
    ]
    return status, (types[0] if types else ""), content


EXECUTE = json.dumps({"module": "arith", "function": "add", "args": [1, 2]}).encode()


def _tokens(authority: TokenAuthority) -> dict[str, str | None]:
    return {
        "none": None,
        "viewer": authority.mint("v", ["viewer"], audience=EDGE),
        "developer": authority.mint("d", ["developer"], audience=EDGE),
        "admin": authority.mint("a", ["admin"], audience=EDGE),
        "api-admin": authority.mint("a", ["admin"], audience="hotswap-api"),
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/api/v1/wasm/execute", EXECUTE, {"none": 401, "viewer": 403, "api-admin": 401, "developer": 200}),
        ("GET", "/api/v1/wasm/modules", b"", {"none": 401, "api-admin": 401, "viewer": 200}),
        ("HEAD", "/api/v1/wasm/modules", b"", {"none": 401, "viewer": 200}),
        ("PUT", "/api/v1/wasm/admin/table", b"{}", {"none": 401, "viewer": 403, "developer": 403, "api-admin": 401}),
        ("GET", "/health", b"", {"none": 200}),
        ("GET", "/metrics", b"", {"none": 200}),
    ],
)
def test_every_route_keeps_its_token_rules(
    keyed: StandaloneNode, authority: TokenAuthority, method: str, path: str, body: bytes, expected: dict[str, int]
) -> None:
    tokens = _tokens(authority)
    for who, status in expected.items():
        got, kind, content = _raw(keyed, method, path, body, tokens[who])
        assert got == status, f"{method} {path} as {who}: {got} {content[:200]!r}"
        if got >= 400 and method != "HEAD":
            assert kind.startswith("application/json") and b"Traceback" not in content, content[:200]


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("POST", "//api/v1/wasm/execute", 404),
        ("POST", "/api/v1/wasm/execute/", 404),
        ("POST", "/api/v1/wasm/x/%2e%2e/execute", 404),
        ("POST", "/api/v1/wasm/x/../execute", 404),
        ("POST", "/API/v1/wasm/execute", 404),
        ("PUT", "//api/v1/wasm/admin/table", 404),
        ("PUT", "/api/v1/wasm/admin/table/", 404),
        ("GET", "/api/v1/wasm/modules/", 404),
        ("GET", "/" + "a" * 7000, 404),
        ("GET", "/api/v1/wasm/execute", 405),
        ("HEAD", "/api/v1/wasm/execute", 405),
        ("OPTIONS", "/api/v1/wasm/execute", 405),
        ("DELETE", "/api/v1/wasm/admin/table", 405),
        ("GET", "/api/v1/wasm/admin/table", 405),
        ("POST", "/health", 405),
        ("PATCH", "/metrics", 405),
    ],
)
def test_odd_paths_and_methods_are_json_404_and_405_without_a_token(
    keyed: StandaloneNode, method: str, target: str, status: int
) -> None:
    got, kind, content = _raw(keyed, method, target, EXECUTE if method in ("POST", "PUT") else b"")
    assert got == status, f"{method} {target[:60]}: {got} {content[:200]!r}"
    assert kind.startswith("application/json"), kind
    if method != "HEAD":
        assert json.loads(content)["error"] in ("not_found", "method_not_allowed")


def test_percent_encoded_execute_still_needs_a_token(keyed: StandaloneNode) -> None:
    assert _raw(keyed, "POST", "/api/v1/wasm/%65xecute", EXECUTE)[0] == 401  # the same route, decoded


@pytest.mark.parametrize(
    ("role", "path", "body", "status"),
    [
        ("developer", "/api/v1/wasm/execute", b"x" * (5 << 20), 413),
        ("none", "/api/v1/wasm/execute", b"x" * (5 << 20), 401),  # refused before a byte is read
        ("admin", "/api/v1/wasm/admin/table", b"x" * (5 << 20), 413),
        ("developer", "/api/v1/wasm/execute", b"{", 400),
        ("developer", "/api/v1/wasm/execute", b"[]", 400),
        ("developer", "/api/v1/wasm/execute", b"\xff\xfe", 400),
        ("developer", "/api/v1/wasm/execute", b"[" * 100_000, 400),
        ("developer", "/api/v1/wasm/execute", b'{"module": "arith", "function": "add", "args": {"a": NaN}}', 400),
        ("admin", "/api/v1/wasm/admin/table", b"{", 400),
        ("admin", "/api/v1/wasm/admin/table", b'{"generation": -1, "modules": 7}', 400),
        ("admin", "/api/v1/wasm/admin/table", b"[" * 100_000, 400),
    ],
    ids=lambda v: v if isinstance(v, str | int) else f"{len(v)}B",
)
def test_bodies_over_the_limit_or_malformed_are_4xx_and_the_node_stays_up(
    keyed: StandaloneNode, authority: TokenAuthority, role: str, path: str, body: bytes, status: int
) -> None:
    method = "PUT" if "admin" in path else "POST"
    got, kind, content = _raw(keyed, method, path, body, _tokens(authority)[role])
    assert got == status, f"{role} {path} {len(body)} B: {got} {content[:200]!r}"
    assert kind.startswith("application/json") and b"Traceback" not in content, content[:200]
    assert _raw(keyed, "GET", "/health")[0] == 200


def test_load_and_smoke_errors_a_node_reports_are_printable_text() -> None:
    """A node's load errors and smoke errors end up in `hotswap status` too: escapes, bells, carriage
    returns and NULs become spaces, as in lastError, and the text itself is kept."""
    hostile = "trap: \x1b[2J\x1b]0;owned\x07\r\nroot# \x00done"
    beat = Heartbeat.model_validate(
        {
            "failed": {"calc@1.2.0": hostile},
            "smoke": [
                {
                    "module": "calc",
                    "version": "1.2.0",
                    "digest": "sha256:" + "a" * 64,
                    "passed": False,
                    "error": hostile,
                }
            ],
        }
    )
    reason = beat.failed["calc@1.2.0"]
    error = beat.smoke[0].error
    assert reason.isprintable() and reason.startswith("trap: ") and reason.endswith("done")
    assert error is not None and error.isprintable() and error.endswith("done")
