"""Leadership between control-plane replicas: at most one process holds a named lease at a time.

`StateStore.try_lease("reconciler")` returns a `Lease` when this process got it, or None when another
holds it; a replica without the lease serves reads and retries later. The lease lasts until
`release()` or until the process dies, so a crashed leader never blocks the others:

  PostgreSQL  a session advisory lock (`pg_try_advisory_lock`) on a connection of its own; the
              server frees it when that connection closes or drops. `held()` checks the connection.
  SQLite      an exclusive `flock` on a file beside the database; the kernel frees it when the
              process exits. (One machine only, as SQLite itself.)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any, Protocol


class Lease(Protocol):
    name: str

    def held(self) -> bool:
        """Whether the lease is still ours (False once released or the connection is gone)."""
        ...

    def release(self) -> None:
        """Give the lease up (idempotent)."""
        ...


def lease_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a lease name."""
    return int.from_bytes(hashlib.sha256(f"hotswap-lease:{name}".encode()).digest()[:8], "big", signed=True)


class PostgresLease:
    def __init__(self, name: str, connection: Any) -> None:
        self.name = name
        self._connection: Any = connection

    @classmethod
    def try_acquire(cls, name: str, connection: Any) -> PostgresLease | None:
        """Try for the lock on `connection` (autocommit); the lease owns the connection if it succeeds."""
        got = connection.execute("SELECT pg_try_advisory_lock(%s)", (lease_key(name),)).fetchone()[0]
        if not got:
            connection.close()
            return None
        return cls(name, connection)

    def held(self) -> bool:
        if self._connection is None:
            return False
        try:
            self._connection.execute("SELECT 1", ()).fetchone()
        except Exception:
            self.release()
            return False
        return True

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.execute("SELECT pg_advisory_unlock(%s)", (lease_key(self.name),))
            except Exception:
                pass  # a dead connection holds nothing
            finally:
                connection.close()


class FileLease:
    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self._fd: int | None = fd

    @classmethod
    def try_acquire(cls, name: str, path: Path) -> FileLease | None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return cls(name, fd)

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
