"""What every loaded version shares: the pool of instances, the two call lanes, and what a call is.

Where it sits: between the runtime and the server. `edge.runtime.Runtime.load_any` returns a
`Loaded` (an `edge.coremodule.LoadedModule` or an `edge.component.LoadedComponent`, both built on
`LoadedVersion` here); the router holds it, and the server calls `prepare` on the event loop
(argument checks, 4xx) to get a `Call`, then `invoke`, inline with a short budget or on a worker
thread with the full timeout, which returns a `CallResult` or raises a `ModuleError` (or
`BudgetExceededError`: run it again on a worker).

* A `Store` belongs to one thread at a time: every call takes an idle instance from the version's
  pool (or instantiates one) and gives it back afterwards. A failed call discards its instance;
  the next call gets a fresh one.
* `CALL` is the state of the call running on a thread: its deadline, which the runtime's
  `poll_oneoff` (`edge.runtime`) waits no longer than, and `expired`, which it sets when it cuts a
  sleep short so that the instance's `failure` reports the timeout.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeAlias, TypeVar

from edge import wasm
from edge.errors import BadRequestError, LoadError, MemoryLimitError, ModuleTimeoutError, NotFoundError, TrapError
from edge.instance import Sandbox

if TYPE_CHECKING:
    from edge.component import LoadedComponent
    from edge.coremodule import LoadedModule
    from edge.runtime import Runtime

MAX_IDLE_INSTANCES = 16

CALL = threading.local()  # `deadline`: when the call running on this thread must stop (time.monotonic)


class BudgetExceededError(Exception):
    """An inline call ran past its short budget; its instance is gone, run it again on a worker."""


class CallResult(NamedTuple):  # a tuple: built on every call, and a frozen dataclass costs more
    value: Any
    cpu_ns: int
    violations: int = 0  # sandbox refusals inside the call (a component's fetch to a host off the list)
    exit_code: int | None = None  # a command's exit status (always 0 here: another one is an ExitError)
    stderr: str | None = None  # the tail of a command's stderr


class Call(NamedTuple):
    """A call checked against the export's signature, ready to run on any thread."""

    function: str
    convention: wasm.Convention
    values: tuple[int | float, ...] = ()
    payload: bytes = b""  # json: the args as JSON; command: stdin
    params: tuple[Any, ...] = ()  # component: the arguments checked against the WIT types
    argv: tuple[str, ...] | None = None  # command: None runs with the sandbox's argv


class _Pooled(Protocol):
    """What a version's pool holds: one instance, used by one thread at a time."""

    def failure(self, exc: BaseException, budget: int | None) -> Exception: ...
    def close(self) -> None: ...


P = TypeVar("P", bound=_Pooled)


class LoadedVersion(Generic[P]):
    """What a loaded module and a loaded component share: the sandbox, the pool of idle instances,
    and the two call lanes (inline on the event loop with a small budget, or on a worker thread
    with the full timeout). The subclasses say how a call is checked and run."""

    def __init__(
        self, runtime: Runtime, info: wasm.ModuleInfo, sandbox: Sandbox, *, inline: frozenset[str], from_cache: bool
    ) -> None:
        self.runtime = runtime
        self.info = info
        self.sandbox = sandbox
        self.from_cache = from_cache
        self._idle: deque[P] = deque()
        self._inline = inline  # the functions whose calls may run on the event loop (never a command)
        self._slow: set[str] = set()
        # The epoch deadline only interrupts wasm code, not a host call: a version that can sleep or
        # touch files never runs on the event loop (`_blocking` says whether it can).
        self._inline_ok = not sandbox.dirs and not self._blocking()

    @property
    def digest(self) -> str:
        return self.info.digest

    def _blocking(self) -> bool:
        raise NotImplementedError

    def _new_instance(self) -> P:
        raise NotImplementedError

    def _keeps_instances(self) -> bool:
        """Whether instances are reused between calls (a command gets a fresh one each time)."""
        return True

    def warm(self) -> None:
        """Instantiate once, so a version that cannot start fails at load and not on a request."""
        CALL.deadline = time.monotonic() + self.sandbox.timeout_seconds  # a start function's sleep too
        self.runtime._enter()  # a start function runs: its deadline needs the ticks
        self.runtime.ticker.started()
        try:
            inst = self._new_instance()
        except MemoryLimitError as exc:
            raise LoadError(exc.message) from None
        except (TrapError, ModuleTimeoutError) as exc:
            raise LoadError(f"cannot instantiate: {exc.message}") from None
        finally:
            self.runtime._leave()
            CALL.deadline = None
            CALL.expired = False
        if self._keeps_instances():
            self._idle.append(inst)
        else:
            inst.close()

    # -- the event loop side --------------------------------------------------------------------

    def prepare(
        self, function: str, args: Any, *, argv: tuple[str, ...] | None = None, stdin: bytes | None = None
    ) -> Call:
        """The checked call, or a 4xx error (unknown function, arguments of the wrong type). `argv`
        and `stdin` are for commands only."""
        raise NotImplementedError

    def may_run_inline(self, function: str) -> bool:
        """Short calls may run on the event loop: never slow before, nothing that blocks in a host
        call, and an idle instance ready (instantiation, with its start function, is left to
        workers)."""
        return bool(self._idle) and self._inline_ok and function not in self._slow and function in self._inline

    def mark_slow(self, function: str) -> None:
        self._slow.add(function)

    def mark_fast(self, function: str) -> None:
        self._slow.discard(function)

    @property
    def slow(self) -> frozenset[str]:
        """Functions that once ran past the inline budget: they run on workers from then on."""
        return frozenset(self._slow)

    # -- any thread: the call itself -------------------------------------------------------------

    def invoke(
        self,
        call: Call,
        *,
        budget: int | None = None,
        timeout: float | None = None,
        cpu_clock: Callable[[], int] = time.thread_time_ns,
    ) -> CallResult:
        """Run `call`; raises a ModuleError, or BudgetExceededError when an inline budget ran out.

        `cpu_clock` measures the CPU the call used: the thread's CPU clock by default; a short call
        on the event loop passes the (much cheaper to read) wall clock, which equals it there."""
        runtime = self.runtime
        runtime._enter()  # busy first, then `started`: a ticker about to park sees one or the other
        runtime.ticker.started()
        if budget is not None:
            try:
                return self._invoke(call, budget, budget, cpu_clock, runtime.tick * budget)
            finally:
                runtime._leave()
        seconds = timeout or self.sandbox.timeout_seconds
        CALL.deadline = time.monotonic() + seconds
        try:
            return self._invoke(call, runtime.ticks(seconds), None, cpu_clock, seconds)
        finally:
            CALL.deadline = None
            CALL.expired = False
            runtime._leave()

    def _invoke(
        self, call: Call, ticks: int, budget: int | None, cpu_clock: Callable[[], int], seconds: float
    ) -> CallResult:
        raise NotImplementedError

    def _take(self) -> P:
        try:
            return self._idle.pop()
        except IndexError:
            return self._new_instance()

    def _give_back(self, inst: P) -> None:
        if len(self._idle) < MAX_IDLE_INSTANCES:
            self._idle.append(inst)
        else:
            inst.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def unknown_function(function: str, exports: Iterable[str]) -> NotFoundError:
    """The 404 for a call to `function` when it is not one of the `exports` that can be called."""
    names = ", ".join(sorted(exports)) or "none"
    return NotFoundError(f"function {function!r} is not an export that can be called (exports: {names})")


def refuse_command_input(function: str, convention: str, argv: tuple[str, ...] | None, stdin: bytes | None) -> None:
    """A 400 for argv or stdin sent to an export that is not a command."""
    if argv is not None or stdin is not None:
        given = " and ".join(n for n, v in (("argv", argv), ("stdin", stdin)) if v is not None)
        raise BadRequestError(
            f"{given}: only a command export (_start) takes them; {function} is a {convention} export, send args"
        )


# What `Runtime.load_any` returns: the router and the server use both through the same methods.
Loaded: TypeAlias = "LoadedModule | LoadedComponent"
