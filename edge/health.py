"""Module health checks: a version's `healthCheck` function, called after load and then periodically.

Where it sits: under the router, beside `edge.smoke`. `Router._load` (`edge.router`) calls
`health_check` once for a new version whose table entry has a `healthCheck`, inside its
`wasm.module.load` span and before the version gets weight (a failure is recorded, it does not stop
the load); then `start_checks` calls it again every `intervalSeconds` while the version stays in
the node's table. The router cancels that task when the version is retired and when it closes.

* A call runs off the event loop, under the version's sandbox, bounded by the smaller of its
  `timeoutSeconds` and `HEALTH_CHECK_TIMEOUT` (the module's epoch deadline, and an `asyncio.timeout` a
  little longer in case the thread does not come back). Each run has a thread of its own, at the
  worker threads' lower priority (nice 10): never the event loop's default executor, which module
  loads use, and never one that another version's check holds, so a health function that spins until
  its timeout neither delays loads nor makes another version's check time out while it waits.
  A version never runs two checks at once: a run whose previous one has not stopped is a failure.
* A version's periodic runs stay within its `cpuPercent`: after a run of t seconds, the next waits
  `intervalSeconds` plus t * (100 / cpuPercent - 1) (a spinning check at 10% runs a tenth of the time).
* Traces: the call is a `wasm.function.invoke` span (`wasm.function.health_check` true); a periodic
  run wraps it in a `wasm.health.check` span of its own trace.
* Results observe, they do not decide: each run is reported to `record` (the version's counters,
  `Counters.checked`), which the heartbeat ships as `healthChecks` / `healthFailures` with the
  failure's message as `lastError`; the control plane's analysis decides what a failure means.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from edge.errors import EdgeError
from edge.limits import lower_priority
from edge.protocol import HealthCheck, ModuleEntry
from edge.telemetry import health_span, invoke_span, mark_failed

log = logging.getLogger("hotswap.edge.health")

HEALTH_CHECK_TIMEOUT = 5.0
GRACE_SECONDS = 1.0  # past the module's own deadline, before the wait for its thread gives up
HEALTH_NICE = 10  # as the node's worker threads (`NodeConfig.worker_nice`): the event loop comes first
# id(loaded) -> the thread of its health check that has not stopped yet (the thread holds `loaded`,
# so the id is not reused while it runs)
_running: dict[int, threading.Thread] = {}


class Invocable(Protocol):
    """What a health or smoke check needs of a loaded module (`edge.coremodule.LoadedModule`)."""

    def prepare(self, function: str, args: Any) -> Any: ...

    def invoke(self, call: Any, *, timeout: float | None = None) -> Any: ...


Record = Callable[[str, str | None], None]  # (function, why it failed or None when it passed)


async def health_check(loaded: Invocable, entry: ModuleEntry, check: HealthCheck) -> str | None:
    """Call the entry's health function once, as a `wasm.function.invoke` span under the current one.
    Returns None when it passed, else why it failed (`trap: ...`); a failure is logged and marked
    on the span, never raised."""
    with invoke_span(entry, check.function) as span:
        timeout = min(entry.limits.timeout_seconds, HEALTH_CHECK_TIMEOUT)
        try:
            call = loaded.prepare(check.function, list(check.args))
            async with asyncio.timeout(timeout + GRACE_SECONDS):
                await _on_own_thread(loaded, lambda: loaded.invoke(call, timeout=timeout))
        except _StillRunningError:
            failure = "timeout: its previous run has not stopped yet"
        except EdgeError as exc:
            failure = f"{exc.code}: {exc.message}"
        except ValueError as exc:  # arguments JSON cannot carry (NaN and the like)
            failure = f"bad_request: {exc}"
        except TimeoutError:
            failure = f"timeout: no answer within {timeout + GRACE_SECONDS:g} s"
        else:
            return None
        mark_failed(span, failure)
        log.warning("%s@%s: health check %s failed: %s", entry.module, entry.version, check.function, failure)
        return failure


async def check_every(loaded: Invocable, entry: ModuleEntry, check: HealthCheck, record: Record) -> None:
    """Every `check.interval_seconds`, a `wasm.health.check` run of `health_check`, reported to
    `record`; runs until cancelled."""
    rest = 0.0  # beyond the interval, so that the runs keep to the version's CPU share
    while True:
        await asyncio.sleep(check.interval_seconds + rest)
        started = time.monotonic()
        with health_span(entry, check.function) as span:
            try:
                failure = await health_check(loaded, entry, check)
            except Exception:  # the node's fault, not the module's: logged, not counted, checks go on
                log.exception("%s@%s: health check %s did not run", entry.module, entry.version, check.function)
                continue
            finally:
                rest = (time.monotonic() - started) * (100 / entry.limits.cpu_percent - 1)
            if failure is not None:
                mark_failed(span, failure)
        record(check.function, failure)


class _StillRunningError(Exception):
    """The version's previous health check has not stopped (its thread is still in the module)."""


async def _on_own_thread(loaded: object, run: Callable[[], object]) -> None:
    """`run()` on a new thread of lower priority; returns when it returns, raises what it raised.
    _StillRunningError, and no thread started, while an earlier run for `loaded` has not stopped."""
    key = id(loaded)
    earlier = _running.get(key)
    if earlier is not None and earlier.is_alive():
        raise _StillRunningError
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    def thread_main() -> None:
        lower_priority(HEALTH_NICE)
        error: BaseException | None = None
        try:
            run()
        except BaseException as exc:  # handed to the waiting coroutine
            error = exc
        finally:
            if _running.get(key) is threading.current_thread():
                del _running[key]
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    thread = threading.Thread(target=thread_main, name="wasm-health", daemon=True)
    _running[key] = thread
    thread.start()
    await done


def start_checks(loaded: Invocable, entry: ModuleEntry, record: Record) -> asyncio.Task[None] | None:
    """The periodic checks of a loaded version whose entry has a `healthCheck` (None when it has none);
    the caller cancels the task when the version leaves the node."""
    if entry.health_check is None:
        return None
    checks = check_every(loaded, entry, entry.health_check, record)
    # A context of its own: not the load's span and log fields, which the task would otherwise keep.
    return asyncio.get_running_loop().create_task(
        checks, name=f"health {entry.module}@{entry.version}", context=contextvars.Context()
    )
