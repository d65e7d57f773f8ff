"""Real local receivers for notifier tests: an aiohttp HTTP receiver and an aiosmtpd SMTP server with
STARTTLS and AUTH, both on 127.0.0.1, plus rollout records in a real SQLite store."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller as SmtpController
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reconciler.notify import SIGNATURE_HEADER, verify_signature

SECRET = "s3cret-for-tests"


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until `condition()` holds (checked every 10 ms); fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- HTTP ---------------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records every POST. `mode`: ok (200), fail (503), reject (401), hang (until `release`; or only
    for the paths in `hang_paths`).
    With `require_signature`, a body whose signature does not verify under `secret` gets 401."""

    server: TestServer
    secret: str = SECRET
    mode: str = "ok"
    require_signature: bool = False
    hang_paths: set[str] = field(default_factory=set)
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook") -> str:
        return str(self.server.make_url(path))

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.json for r in self.requests if path is None or r.path == path]

    def types(self, path: str | None = None) -> list[str]:
        return [b["type"] for b in self.bodies(path) if "type" in b]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        verified = verify_signature(body, request.headers.get(SIGNATURE_HEADER), self.secret)
        self.requests.append(Received(request.path, dict(request.headers), body, verified))
        if self.mode == "hang" or request.path in self.hang_paths:
            await self.release.wait()
        if self.require_signature and not verified:
            return web.Response(status=401, text="bad signature")
        if self.mode == "fail":
            return web.Response(status=503, text="down for maintenance")
        if self.mode == "reject":
            return web.Response(status=401, text="who are you")
        return web.Response(text="ok")


@pytest.fixture
async def http_receiver() -> AsyncIterator[HttpReceiver]:
    app = web.Application()
    holder: list[HttpReceiver] = []

    async def handle(request: web.Request) -> web.Response:
        return await holder[0].handle(request)

    app.router.add_post("/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    receiver = HttpReceiver(server)
    holder.append(receiver)
    try:
        yield receiver
    finally:
        receiver.release.set()
        await server.close()


# -- SMTP ---------------------------------------------------------------------------------------


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    tls: bool
    login: str | None


@dataclass
class SmtpServer:
    port: int
    client_tls: ssl.SSLContext
    username: str = "hotswap"
    password: str = "mail-password"
    mails: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        self.mails.append(
            Mail(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                message_from_bytes(envelope.content),
                session.ssl is not None,
                login,
            )
        )
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.username.encode()
            and auth_data.password == self.password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and localhost)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hotswap test smtp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.crt", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="session")
def smtp_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp_server(smtp_certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    cert, key = smtp_certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    sink = SmtpServer(port=free_port(), client_tls=ssl.create_default_context(cafile=str(cert)))
    controller = SmtpController(
        sink,
        hostname="127.0.0.1",
        port=sink.port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=sink.authenticate,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
