"""Local ports for `hotswap up`: is one free, who holds it, and a free one when the default is taken.

Where it sits: `hotswap up` checks every port it will listen on before it starts anything, so a
taken port is an error naming the port (and, when this user can see it, the process holding it)
instead of a node that never joins. Who holds a port is read from /proc/net/tcp{,6} and the
`socket:[inode]` links under /proc/*/fd, best effort: Linux only, and only this user's processes.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from reconciler.errors import ReconcilerError

LISTEN = "0A"  # the state column of /proc/net/tcp for a listening socket


class PortTakenError(ReconcilerError):
    """A port asked for explicitly is in use; the message names it and, when known, its holder."""


def is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (as aiohttp does: SO_REUSEADDR, so a closed
    connection in TIME_WAIT does not count as taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def any_free(host: str, avoid: set[int]) -> int:
    """A port the system says is free now (and not one of `avoid`, which are promised to others)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
        if port not in avoid:
            return port


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (proc / "net" / table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def holder(port: int, proc: Path = Path("/proc")) -> str | None:
    """`pid 1234 (python3 -m http.server 8080)` for the process listening on `port`, or None when
    that cannot be told (another user's process, no /proc)."""
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None
    links = {f"socket:[{inode}]" for inode in inodes}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) not in links:
                    continue
                command = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            return f"pid {pid_dir.name} ({command[:80] or '?'})"
    return None


def held_by(port: int) -> str:
    """` (held by pid 1234 (...))`, or '' when the holder cannot be told."""
    who = holder(port)
    return f" (held by {who})" if who else ""


def pick(
    host: str, asked: int | None, default: int | None, avoid: set[int], what: str, flag: str
) -> tuple[int, str | None]:
    """The port to listen on, and a note when the default was taken and another was picked.

    `asked`: the port the user gave with `flag` (PortTakenError when it is in use). `default`: the
    usual port, taken when free; None: any free port."""
    if asked is not None:
        if asked in avoid or not is_free(host, asked):
            whom = " (by another part of this `hotswap up`)" if asked in avoid else held_by(asked)
            hint = f"give another {flag}, or leave {flag} out and a free port is picked"
            raise PortTakenError(f"{what} port {asked} is already in use{whom}: {hint}")
        return asked, None
    if default is not None and default not in avoid and is_free(host, default):
        return default, None
    port = any_free(host, avoid)
    if default is None:
        return port, None
    return port, f"port {default} is in use{held_by(default)}; the {what} listens on {port} instead"
