"""Tokens: what gets in (the control plane's key, HS256 dev tokens, another issuer's key) and what is
refused with 401 and a clear message (expired, forged, wrong audience or issuer, unknown algorithm)."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hotswap.cli import main
from reconciler.api.auth import AuthOptions, TokenAuthority, TokenError
from tests.api.conftest import call
from tests.e2e.cluster import Cluster


def authority(tmp_path: Path, **options: object) -> TokenAuthority:
    return TokenAuthority.load(AuthOptions(**options), tmp_path)  # type: ignore[arg-type]


def test_keys_are_made_once_under_the_data_dir(tmp_path: Path) -> None:
    first = authority(tmp_path)
    second = authority(tmp_path)
    assert first.public_key_pem == second.public_key_pem
    assert first.algorithm == "EdDSA"
    assert (tmp_path / "auth" / "signing-key.pem").stat().st_mode & 0o777 == 0o600
    token = first.mint("alice", ["developer"])
    claims = second.verify(token)
    assert claims.subject == "alice" and claims.roles == {"developer"}
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"


def test_hs256_development_tokens_verify_and_can_be_switched_off(tmp_path: Path) -> None:
    token = authority(tmp_path).mint("dev", ["viewer"], algorithm="HS256")
    assert authority(tmp_path).verify(token).roles == {"viewer"}
    with pytest.raises(TokenError, match="HS256"):
        authority(tmp_path, allow_hs256=False).verify(token)


@pytest.mark.parametrize(
    "make", [lambda: rsa.generate_private_key(65537, 2048), lambda: ec.generate_private_key(ec.SECP256R1())]
)
def test_given_rsa_and_ec_keys_sign_and_verify(tmp_path: Path, make: object) -> None:
    key = make()  # type: ignore[operator]
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    issuer = authority(tmp_path, private_key=path)
    assert issuer.algorithm in ("RS256", "ES256")
    assert issuer.verify(issuer.mint("bob", ["operator"])).subject == "bob"


def test_another_issuers_public_key_is_trusted_when_given(tmp_path: Path) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    public = tmp_path / "other.pub.pem"
    public.write_bytes(
        other.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    now = int(time.time())
    claims = {"iss": "hotswap", "aud": "hotswap-api", "sub": "sso-user", "roles": ["viewer"], "exp": now + 60}
    token = jwt.encode(claims, other, algorithm="EdDSA")
    with pytest.raises(TokenError, match="does not verify"):
        authority(tmp_path).verify(token)
    assert authority(tmp_path, public_keys=(public,)).verify(token).subject == "sso-user"


def test_minting_refuses_unknown_roles(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="choose from"):
        authority(tmp_path).mint("x", ["root"])


async def test_bad_tokens_get_401_with_the_reason(plane: Cluster, tmp_path: Path) -> None:
    issuer = plane.plane.authority
    forger = TokenAuthority.load(AuthOptions(), tmp_path / "elsewhere")
    now = time.time()
    cases = {
        "has expired": issuer.mint("a", ["admin"], now=now - 7200, ttl_seconds=3600),
        "does not verify": forger.mint("a", ["admin"]),
        "audience": issuer.mint("a", ["admin"], audience="someone-else"),
        "not issued by": issuer.mint("a", ["admin"], issuer="mallory"),
        "not a valid JWT": "not-a-token",
        "'none' are not accepted": jwt.encode({"sub": "a", "exp": now + 60}, None, algorithm="none"),
    }
    for reason, token in cases.items():
        answer = await call(plane.url, "GET", "/api/v1/wasm/status", token)
        assert answer.status == 401, reason
        assert reason in answer.body["message"], (reason, answer.body)
        assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    answer = await call(plane.url, "GET", "/api/v1/wasm/status", headers={"Authorization": "Basic abc"})
    assert answer.status == 401 and "Bearer" in answer.body["message"]
    good = await call(plane.url, "GET", "/api/v1/wasm/status", issuer.mint("a", ["viewer"]))
    assert good.status == 200


async def test_every_answer_carries_hsts_and_hardening_headers(plane: Cluster) -> None:
    for answer in (
        await call(plane.url, "GET", "/health"),
        await call(plane.url, "GET", "/api/v1/wasm/status"),  # a 401
        await call(plane.url, "GET", "/api/v1/wasm/nodes", plane.token("viewer")),
    ):
        assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"


def test_token_verb_prints_a_token_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    TokenAuthority.load(AuthOptions(), data)  # what `hotswap serve`/`up` do on their first start
    assert main(["token", "--role", "developer", "--subject", "carol", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    claims = TokenAuthority.load(AuthOptions(), data).verify(out.strip())
    assert claims.subject == "carol" and claims.roles == {"developer"}
    assert main(["token", "--role", "viewer", "--algorithm", "HS256", "--data-dir", str(data)]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert TokenAuthority.load(AuthOptions(), data).verify(token).roles == {"viewer"}
    assert main(["token", "--role", "viewer", "--ttl", "0", "--data-dir", str(data)]) == 2


def test_token_verb_refuses_a_data_dir_without_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fresh keys would make a token the running control plane rejects: exit 1, naming the dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOTSWAP_DATA_DIR", raising=False)
    for argv in (["token", "--role", "admin"], ["token", "--role", "viewer", "--algorithm", "HS256"]):
        assert main(argv) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert str(tmp_path / ".hotswap" / "auth") in captured.err
        assert "--data-dir" in captured.err and "HOTSWAP_DATA_DIR" in captured.err
    assert not (tmp_path / ".hotswap").exists()
    data = tmp_path / "elsewhere"
    TokenAuthority.load(AuthOptions(), data)
    monkeypatch.setenv("HOTSWAP_DATA_DIR", str(data))
    assert main(["token", "--role", "admin"]) == 0
    assert TokenAuthority.load(AuthOptions(), data).verify(capsys.readouterr().out.strip()).roles == {"admin"}
