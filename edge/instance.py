"""What a core module's instance and a component's instance share: the sandbox, the store, WASI.

Where it sits: under `edge.coremodule` and `edge.component` (loaded by `edge.runtime`). Each of them
builds a store per instance with `new_store` (memory limit, bounded tables and instances, the first
epoch deadline) and a WASI context with `wasi_config` (listed variables only, listed directories
only, stdout and stderr captured and capped), and turns a failed call into an error with
`is_timeout` and `first_line`.

The sandbox itself (`Sandbox`, `DirGrant`) is read from a table entry (`Sandbox.from_entry`) by the
router, and its directories are checked against the node's allowed roots by `Runtime._admit`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import wasmtime

from edge import _ffi
from edge.errors import TrapError
from edge.protocol import Capabilities, Limits

MIB = 1024 * 1024
LOG_CAP = 64 * 1024
RESULT_CAP = 16 * MIB


@dataclass(frozen=True)
class DirGrant:
    host: Path
    guest: str
    writable: bool = False


@dataclass(frozen=True)
class Sandbox:
    """Limits and WASI capabilities of one module version; nothing outside it is reachable."""

    memory_bytes: int = 128 * MIB
    timeout_seconds: float = 30.0
    env: tuple[tuple[str, str], ...] = ()
    dirs: tuple[DirGrant, ...] = ()
    log_cap: int = LOG_CAP
    result_cap: int = RESULT_CAP
    allow_hosts: tuple[str, ...] = ()  # outgoing HTTP of components (edge.component)
    argv: tuple[str, ...] = ()  # a command's argv when the call gives none (argv[0]: the program name)

    @classmethod
    def from_entry(
        cls, limits: Limits, capabilities: Capabilities, argv: tuple[str, ...] = (), program: str = ""
    ) -> Sandbox:
        return cls(
            memory_bytes=limits.memory_mb * MIB,
            timeout_seconds=limits.timeout_seconds,
            env=tuple(sorted(capabilities.env.items())),
            dirs=tuple(DirGrant(Path(g.host), g.guest, g.mode == "rw") for g in capabilities.filesystem),
            allow_hosts=capabilities.network.allow_hosts,
            argv=argv or ((program,) if program else ()),
        )


class Capture:
    """A WASI output stream kept in memory up to `cap` bytes; the rest is dropped and flagged."""

    __slots__ = ("cap", "data", "truncated")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def __call__(self, chunk: bytes) -> int:
        """Keep what fits and report every byte as written, so the guest never retries."""
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
        self.data += chunk[: max(room, 0)]
        return len(chunk)

    def reset(self) -> None:
        self.data.clear()
        self.truncated = False

    def tail(self, n: int = 400) -> str:
        return bytes(self.data[-n:]).decode("utf-8", "replace").strip()


def new_store(engine: wasmtime.Engine, sandbox: Sandbox, *, instances: int, tables: int, ticks: int) -> wasmtime.Store:
    """A store for one instance: at most one linear memory of at most the sandbox's limit
    (multi-memory would multiply it), `instances` instances and `tables` tables bounded by the same
    budget (8 bytes an element), and an epoch deadline `ticks` away (instantiation runs a start
    function; each call sets its own deadline again)."""
    store = wasmtime.Store(engine)
    store.set_limits(
        memory_size=sandbox.memory_bytes,
        table_elements=max(sandbox.memory_bytes // 8, 10_000),
        instances=instances,
        tables=tables,
        memories=1,
    )
    store.set_epoch_deadline(ticks)
    return store


def wasi_config(
    sandbox: Sandbox,
    stdout: Capture,
    stderr: Capture,
    *,
    argv: tuple[str, ...] | None = None,
    stdin: bytes | None = None,
) -> wasmtime.WasiConfig:
    """The WASI context of one store, from the sandbox only: no inherited environment, the listed
    variables, the listed directories (`preopen`), stdout and stderr into `stdout` and `stderr`.
    `argv` (None: none at all, as components get) and `stdin` (None: empty) are a command's."""
    config = wasmtime.WasiConfig()
    config.env = list(sandbox.env)
    if argv is not None:
        config.argv = list(argv)
    preopen(config, sandbox.dirs)
    config.stdout_custom = stdout
    config.stderr_custom = stderr
    if stdin is not None:
        _ffi.set_stdin_bytes(config, stdin)
    return config


def preopen(config: wasmtime.WasiConfig, dirs: tuple[DirGrant, ...]) -> None:
    """Preopen each granted directory, by the real path checked at load. A path that resolves
    elsewhere now (a program with a write grant above it swapped a directory for a symlink out of
    the node's allowed roots), or that is gone, fails the call (a trap, counted), never the node."""
    for grant in dirs:
        host = str(grant.host)
        if os.path.realpath(host) != host:
            raise TrapError(f"capabilities.filesystem: {host} no longer resolves to itself; not opened")
        try:
            config.preopen_dir(host, grant.guest, fs_mutable=grant.writable)
        except Exception as exc:
            raise TrapError(f"capabilities.filesystem: {host} cannot be opened: {first_line(exc)}") from None


def is_timeout(exc: BaseException) -> bool:
    """Whether a call failed because its epoch deadline passed.

    By trap code where wasmtime gives one: a core call (and a core instantiation) fails with a
    `Trap`, whose `trap_code` says `INTERRUPT` whatever the message's wording. A component call
    fails with a `WasmtimeError` instead: the C API (`wasmtime_error_t`) carries an exit status but
    no trap code, so there the message is all there is, `wasm trap: interrupt`."""
    if isinstance(exc, wasmtime.Trap):
        return exc.trap_code == wasmtime.TrapCode.INTERRUPT
    if isinstance(exc, wasmtime.WasmtimeError):
        text = str(exc)
        return "interrupt" in text and "wasm trap" in text
    return False


def first_line(exc: BaseException) -> str:
    """The line of a wasmtime error that says what happened (`wasm trap: ...` for a trap)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    for line in lines:
        if line.startswith("wasm trap:"):
            return line
    if "Caused by:" in lines and lines.index("Caused by:") + 1 < len(lines):
        return lines[lines.index("Caused by:") + 1]
    return lines[0]
