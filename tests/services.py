"""Real services for tests, started once per session on 127.0.0.1 and stopped at the end.

    postgres_server   a private PostgreSQL cluster (initdb + pg_ctl from /usr/lib/postgresql/*/bin),
                      trust auth on 127.0.0.1, fsync off; or the server in HOTSWAP_TEST_DATABASE_URL
    database_url      (function scope) a URL for a fresh, empty schema on that server, for one test
    s3_server         moto_server on a free port (an S3 API), waited for until it answers
    blob_url          (function scope) an `s3://` URL for a fresh bucket on that server
    oci_registry      Debian's docker-registry on a free port, anonymous: `.host` (127.0.0.1:PORT),
                      `.url` (http://...), `.storage` (its filesystem storage, to tamper with blobs)
    oci_registry_auth the same with basic auth (htpasswd, bcrypt): `.username` and `.password` too

Registered for the whole suite by `pytest_plugins = ["tests.services"]` in tests/conftest.py, they
start once per session. (Importing them into a package's conftest.py also works, but then that
package gets servers of its own.)

Nothing here skips: a missing PostgreSQL, moto_server or docker-registry fails the test with what to
install.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
TEST_DATABASE = "hotswap_tests"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: object, what: str, timeout: float = START_TIMEOUT_S) -> None:
    """Poll `condition()` until it is true, or fail naming `what`."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# -- PostgreSQL ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str | None = None
    base_url: str | None = None  # set when the server came from HOTSWAP_TEST_DATABASE_URL

    def url(self, database: str) -> str:
        if self.base_url is not None:
            head, _, _ = self.base_url.rpartition("/")
            return f"{head}/{database}"
        auth = f"{self.user}:{self.password}" if self.password else self.user
        return f"postgresql://{auth}@{self.host}:{self.port}/{database}"

    @property
    def admin_url(self) -> str:
        return self.base_url or self.url("postgres")

    @property
    def test_database_url(self) -> str:
        """The database tests get their schemas in (the given one, or hotswap_tests)."""
        return self.base_url or self.url(TEST_DATABASE)


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        which = shutil.which("initdb")
        if which is None:
            pytest.fail(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): install Debian's "
                "`postgresql` package (.ci/run does), or point HOTSWAP_TEST_DATABASE_URL at a server"
            )
        return Path(which).parent
    return Path(found[-1]).parent


def _as_postgres_user() -> list[str]:
    """The prefix that runs a command as the `postgres` system user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, but there is no `postgres` system user to run the test cluster as")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    given = os.environ.get("HOTSWAP_TEST_DATABASE_URL")
    if given:
        yield PostgresServer(host="", port=0, user="", base_url=given)
        return
    bindir = _postgres_bin()
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="hotswap-pg-"))
    if prefix:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    port = free_port()
    init = subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if init.returncode != 0:
        pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    start = subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "-t",
            str(int(START_TIMEOUT_S)),
            "start",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if start.returncode != 0:
        log = (root / "log").read_text(errors="replace") if (root / "log").exists() else ""
        pytest.fail(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{log}")
    try:
        server = PostgresServer(host="127.0.0.1", port=port, user="postgres")
        import psycopg

        with psycopg.connect(server.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
        yield server
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A URL whose connections see only a fresh, empty schema (through `search_path`), dropped after
    the test: as good as a new database for code that does not name schemas, and far cheaper than a
    CREATE DATABASE per test."""
    import psycopg

    test_database = postgres_server.test_database_url
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(test_database, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in test_database else "?"
    try:
        yield f"{test_database}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(test_database, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- S3 ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port
    access_key: str = "testing"
    secret_key: str = "testing"

    def url(self, bucket: str) -> str:
        return (
            f"s3://{bucket}?endpoint={self.endpoint}&secure=false"
            f"&access_key={self.access_key}&secret_key={self.secret_key}"
        )

    def client(self) -> object:
        from minio import Minio

        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)


def _moto_server() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        pytest.fail("moto_server is not installed: `pip install 'moto[server]'` (the test extra has it)")
    return found


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    if process.poll() is None:
        process.kill()
        process.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [_moto_server(), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env
        )

        def up() -> bool:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"moto_server exited with {process.returncode}:\n{log.read().decode(errors='replace')}")
            return _answers(f"http://127.0.0.1:{port}/")

        try:
            wait_until(up, f"moto_server on 127.0.0.1:{port}")
            yield S3Server(endpoint=f"127.0.0.1:{port}")
        finally:
            _stop(process)


@pytest.fixture
def blob_url(s3_server: S3Server) -> str:
    """An s3:// URL naming a bucket no other test uses (the store creates it)."""
    return s3_server.url(f"t-{uuid.uuid4().hex[:16]}")


# -- an OCI registry: Debian's docker-registry (the CNCF distribution server) ---------------------


@dataclass(frozen=True)
class OciRegistry:
    host: str  # 127.0.0.1:PORT
    username: str | None = None
    password: str | None = None
    storage: Path | None = None  # the filesystem storage's root (a test may tamper with a blob there)

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def _registry(tmp: Path, auth: tuple[str, str] | None) -> Iterator[OciRegistry]:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed: `apt-get install docker-registry` (.ci/run does it)")
    port = free_port()
    lines = [
        "version: 0.1",
        "log: {level: warn, accesslog: {disabled: true}}",  # the access log ignores the level
        f"storage: {{filesystem: {{rootdirectory: {tmp / 'storage'}}}, delete: {{enabled: true}}}}",
        f"http: {{addr: 127.0.0.1:{port}, secret: hotswap-tests}}",
    ]
    if auth is not None:
        import bcrypt

        hashed = bcrypt.hashpw(auth[1].encode(), bcrypt.gensalt(rounds=4)).decode()
        (tmp / "htpasswd").write_text(f"{auth[0]}:{hashed}\n")
        lines.append(f"auth: {{htpasswd: {{realm: hotswap-tests, path: {tmp / 'htpasswd'}}}}}")
    (tmp / "config.yml").write_text("\n".join(lines) + "\n")
    with (tmp / "registry.log").open("wb") as log:
        process = subprocess.Popen([binary, "serve", str(tmp / "config.yml")], stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if process.poll() is not None:
                pytest.fail(f"docker-registry exited with {process.returncode}:\n{(tmp / 'registry.log').read_text()}")
            return _answers(f"http://127.0.0.1:{port}/v2/")

        try:
            wait_until(up, f"docker-registry on 127.0.0.1:{port}")
            yield OciRegistry(f"127.0.0.1:{port}", *(auth or (None, None)), storage=tmp / "storage")
        finally:
            _stop(process)


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    """An anonymous OCI registry on 127.0.0.1 (pull and push without credentials)."""
    yield from _registry(tmp_path_factory.mktemp("oci-registry"), None)


@pytest.fixture(scope="session")
def oci_registry_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    """An OCI registry on 127.0.0.1 that wants basic auth (htpasswd, bcrypt) for everything."""
    yield from _registry(tmp_path_factory.mktemp("oci-registry-auth"), ("ci-bot", "s3cret-token"))
