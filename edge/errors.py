"""Every failure the edge node reports, and the HTTP answer each one becomes.

The runtime, the router and the server raise these; the server turns them into JSON bodies
`{"error": code, "message": ...}` (plus `module` and `version` for a module's own failure).

    EdgeError                         code, status, message
    ├── RequestError                  4xx: the client's mistake; never counted against a module
    │   ├── BadRequestError           400 bad_request  (malformed JSON, wrong arity, bad types)
    │   ├── UnauthorizedError         401 unauthorized (missing or invalid token)
    │   ├── ForbiddenError            403 forbidden    (a valid token without the role the call needs)
    │   ├── NotFoundError             404 not_found    (unknown module, version or function)
    │   └── TooLargeError             413 too_large    (body over the cap)
    ├── UnavailableError              503 unavailable  (no version of the module takes traffic)
    ├── BusyError                     429 busy         (the version's share of worker threads stays taken)
    ├── LoadError                     a binary could not be fetched, verified, compiled or linked
    └── ModuleError                   the module's own failure; counted, kills that instance only
        ├── TrapError                 500 trap         (unreachable, out of bounds, bad output)
        ├── ExitError                 500 exit         (a command exited with a status other than 0)
        ├── ModuleTimeoutError        504 timeout      (epoch deadline reached)
        ├── MemoryLimitError          507 memory       (memory limit reached)
        └── CpuLimitError             429 cpu          (over its CPU share after queueing)
"""

from __future__ import annotations

from typing import Any, ClassVar


class EdgeError(Exception):
    """Base of every edge error: a stable `code`, an HTTP `status` and a human `message`.

    A subclass names in its header what it changes, `class NotFoundError(RequestError,
    code="not_found", status=404)`, and inherits the rest."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 500

    def __init_subclass__(cls, *, code: str | None = None, status: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if status is not None:
            cls.status = status

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def details(self) -> dict[str, Any]:
        """Fields the JSON answer carries besides `error` and `message`."""
        return {}


class RequestError(EdgeError, status=400): ...


class BadRequestError(RequestError, code="bad_request"): ...


class UnauthorizedError(RequestError, code="unauthorized", status=401): ...


class ForbiddenError(RequestError, code="forbidden", status=403): ...


class NotFoundError(RequestError, code="not_found", status=404): ...


class TooLargeError(RequestError, code="too_large", status=413): ...


class UnavailableError(EdgeError, code="unavailable", status=503): ...


class BusyError(EdgeError, code="busy", status=429):
    """Load shedding, not a module failure: its calls hold their share of the worker threads and
    the queue behind them is full, or a call waited too long in it."""


class LoadError(EdgeError, code="load"): ...


class ModuleError(EdgeError, code="trap"):
    """The module failed while running: the instance that failed is discarded."""


class TrapError(ModuleError): ...


class ExitError(ModuleError, code="exit"):
    """A command (`_start`) that exited with a status other than 0: counted like a trap. The answer
    carries the status, the tail of its stderr and, when it wrote any, its stdout."""

    def __init__(self, exit_code: int, stderr: str, stdout: str | None = None) -> None:
        detail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        super().__init__(f"exited with status {exit_code}" + (f": {detail}" if detail else ""))
        self.exit_code = exit_code
        self.stderr = stderr
        self.stdout = stdout

    @property
    def details(self) -> dict[str, Any]:
        return {"exitCode": self.exit_code, "stderr": self.stderr, "stdout": self.stdout or ""}


class ModuleTimeoutError(ModuleError, code="timeout", status=504): ...


class MemoryLimitError(ModuleError, code="memory", status=507): ...


class CpuLimitError(ModuleError, code="cpu", status=429): ...
