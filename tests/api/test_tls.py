"""TLS: given a certificate and key, the control plane serves HTTPS only (TLS 1.3), with HSTS."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hotswap.cli import main
from reconciler.server import ControlPlane, ServeOptions
from tests.e2e.cluster import FleetRepo


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_https_with_the_certificate_given(tmp_path: Path) -> None:
    repo = FleetRepo(tmp_path / "repo")
    cert, key = self_signed(tmp_path)
    options = ServeOptions(
        repo=str(repo.root), path="fleet", data_dir=tmp_path / "data", port=0, tls_cert=cert, tls_key=key
    )
    plane = ControlPlane(options)
    await plane.start()
    try:
        assert plane.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as session:
            async with session.get(plane.url + "/health", ssl=context) as response:
                assert response.status == 200
                assert response.headers["Strict-Transport-Security"].startswith("max-age=")
            token = plane.mint("viewer", "viewer")
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(plane.url + "/api/v1/wasm/status", ssl=context, headers=headers) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with session.get(plane.url.replace("https", "http") + "/health") as response:
                    await response.read()
    finally:
        await plane.stop()


def test_serve_wants_certificate_and_key_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, _ = self_signed(tmp_path)
    code = main(["serve", "--repo", str(tmp_path), "--tls-cert", str(cert), "--data-dir", str(tmp_path / "d")])
    assert code == 2 and "go together" in capsys.readouterr().err
    code = main(["serve", "--repo", str(tmp_path), "--rate-limit", "uploads=3", "--data-dir", str(tmp_path / "d")])
    assert code == 2 and "unknown rate limit" in capsys.readouterr().err


@pytest.mark.parametrize("seconds", ["0", "0.01", "3601", "nan", "soon"])
def test_serve_refuses_a_heartbeat_period_nodes_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], seconds: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--repo", str(tmp_path), "--heartbeat-seconds", seconds, "--data-dir", str(tmp_path / "d")])
    assert exited.value.code == 2 and "--heartbeat-seconds" in capsys.readouterr().err
