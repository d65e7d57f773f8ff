"""Services that chaos tests break on purpose, so each test gets its own.

private_postgres   a PostgreSQL cluster of the test's own (initdb + pg_ctl), which it may restart
s3_gate            a TCP gate on 127.0.0.1 in front of the session's S3 server (moto_server): the
                   test closes it (connections refused, open ones cut) and opens it again; the
                   objects behind it survive, as they would in a real S3 outage (moto keeps them
                   in memory only, so stopping its process would lose them)
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.services import S3Server, _as_postgres_user, _postgres_bin, free_port

START_TIMEOUT_S = 60


@dataclass
class PrivatePostgres:
    """A PostgreSQL server only this test uses; `restart()` is `pg_ctl restart -m fast`."""

    data: Path
    port: int
    log: Path
    prefix: list[str]
    bindir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        command = [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"pg_ctl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}\n{self.log.read_text()}")

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.data.parent} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._ctl("-o", options, "-l", str(self.log), "-w", "-t", str(START_TIMEOUT_S), "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop (every session is cut) and start again on the same port and data."""
        self.stop()
        self.start()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bindir = _postgres_bin()
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="hotswap-chaos-pg-"))
    if prefix:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    init = subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
        capture_output=True,
        text=True,
        check=False,
    )
    if init.returncode != 0:
        pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    server = PrivatePostgres(data, free_port(), root / "log", prefix, bindir)
    server.start()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("SELECT 1")
        yield server
    finally:
        with contextlib.suppress(BaseException):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


class TcpGate:
    """A TCP forwarder on its own thread and event loop: open lets connections through to the
    target, close refuses new ones and cuts the ones in flight."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, name="tcp-gate", daemon=True)
        self._thread.start()

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)  # type: ignore[arg-type]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()

    def open(self) -> None:
        self._call(self._open())

    def close(self) -> None:
        self._call(self._close())

    def shutdown(self) -> None:
        self.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@pytest.fixture
def s3_gate(s3_server: S3Server) -> Iterator[tuple[TcpGate, str]]:
    """A gate in front of the S3 server, and an s3:// URL of a fresh bucket reached through it."""
    host, port = s3_server.endpoint.split(":")
    gate = TcpGate(host, int(port))
    gate.open()
    gated = S3Server(endpoint=f"127.0.0.1:{gate.port}")
    try:
        yield gate, gated.url(f"t-{uuid.uuid4().hex[:16]}")
    finally:
        gate.shutdown()
