"""Tokens for the control plane: the keys under `--data-dir`, minting, and verification (DESIGN.md 4, 8).

Where it sits: `hotswap serve` and `hotswap up` build one `TokenAuthority` from `AuthOptions` and the
data dir; the API's authenticate middleware (reconciler.api.security) calls `verify()` on every
request but `/health`; `hotswap token` and `hotswap up` call `mint()`. Edge nodes receive the public
key at registration and check execute tokens with it (edge.auth), so minted tokens are signed with
an asymmetric key by default.

Keys (created on first use, mode 0600, under `<data-dir>/auth/`):

    signing-key.pem     Ed25519 private key (EdDSA); `--jwt-private-key` gives another (RSA: RS256,
                        EC P-256: ES256, Ed25519: EdDSA), e.g. one shared by several replicas
    hs256.secret        the HS256 secret for development tokens (`hotswap token --algorithm HS256`);
                        `--jwt-secret` / HOTSWAP_JWT_SECRET gives one instead

Verification accepts the algorithm named in the token's header only when a key of that kind is
configured (no "none", no HMAC with a public key), and checks signature, `exp`, `iss` and `aud`.
Claims: `sub` (who), `roles` (a list; `role` alone is read too), `iss`, `aud`, `iat`, `exp`, `jti`.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from edge.auth import roles_of
from reconciler.api.authnames import (
    API_ROLES,
    AUDIENCE,
    AUDIENCES,
    AUTH_DIR,
    EDGE_AUDIENCE,
    ISSUER,
    ROLES,
    node_audience,
)
from reconciler.errors import ReconcilerError

__all__ = [
    "API_ROLES",
    "AUDIENCE",
    "AUDIENCES",
    "EDGE_AUDIENCE",
    "ISSUER",
    "ROLES",
    "AuthOptions",
    "Claims",
    "TokenAuthority",
    "TokenError",
    "node_audience",
]

DEFAULT_TTL_SECONDS = 12 * 3600.0
LEEWAY_SECONDS = 30.0
ASYMMETRIC = ("EdDSA", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256")


class TokenError(ReconcilerError):
    """A token that does not let its bearer in; the message says why, for the 401 answer."""


@dataclass(frozen=True)
class AuthOptions:
    """How the control plane issues and checks tokens (flags of `hotswap serve`, env HOTSWAP_JWT_*)."""

    issuer: str = ISSUER
    audience: str = AUDIENCE
    private_key: Path | None = None  # PEM; default: <data-dir>/auth/signing-key.pem, made on first use
    public_keys: tuple[Path, ...] = ()  # more PEM public keys whose tokens are accepted (another issuer)
    hs256_secret: str | None = None  # default: <data-dir>/auth/hs256.secret, made on first use
    allow_hs256: bool = True
    ttl_seconds: float = DEFAULT_TTL_SECONDS


@dataclass(frozen=True)
class Claims:
    subject: str
    roles: frozenset[str]
    expires: float
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


@dataclass(frozen=True)
class _PublicKey:
    algorithms: tuple[str, ...]
    key: Any


def _algorithm_of(key: Any) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384"}.get(key.curve.name, "ES256")
    raise TokenError(f"unsupported key type {type(key).__name__} (use Ed25519, RSA or EC P-256/P-384)")


def _public_algorithms(key: Any) -> tuple[str, ...]:
    algorithm = _algorithm_of(key)
    return ("RS256", "RS384", "RS512", "PS256") if algorithm == "RS256" else (algorithm,)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    if path.exists():  # another process made it first: keep theirs
        partial.unlink()
        return
    partial.replace(path)


def load_or_create_signing_key(path: Path) -> Any:
    """The private key at `path`, generating an Ed25519 key there if there is none."""
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(path, pem)
    return load_private_key(path)


def load_private_key(path: Path) -> Any:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise TokenError(f"{path}: not an unencrypted PEM private key ({exc})") from None


def load_public_key(path: Path) -> Any:
    data = path.read_bytes()
    try:
        return serialization.load_pem_public_key(data)
    except ValueError:
        pass
    try:
        return serialization.load_pem_private_key(data, password=None).public_key()
    except (ValueError, TypeError) as exc:
        raise TokenError(f"{path}: not a PEM public key ({exc})") from None


def load_or_create_secret(path: Path) -> str:
    if not path.exists():
        _write_private(path, secrets.token_hex(32).encode())
    return path.read_text().strip()


# The first kind a refused token's error is an instance of says why (InvalidSignatureError is a
# DecodeError, so it comes first); `{audience}`, `{issuer}`, `{claim}` and `{exc}` are filled in.
_REFUSALS: dict[type[jwt.PyJWTError], str] = {
    jwt.ExpiredSignatureError: "the token has expired; get a new one (hotswap token --role ROLE)",
    jwt.InvalidAudienceError: "the token is not for this API (audience must be {audience!r})",
    jwt.InvalidIssuerError: "the token was not issued by {issuer!r}",
    jwt.InvalidSignatureError: "the token's signature does not verify (forged, or signed with another key)",
    jwt.ImmatureSignatureError: "the token is not valid yet",
    jwt.MissingRequiredClaimError: "the token lacks the {claim!r} claim",
    jwt.DecodeError: "not a valid JWT ({exc})",
}


def _describe(exc: jwt.PyJWTError, options: AuthOptions) -> str:
    kind = next((k for k in _REFUSALS if isinstance(exc, k)), None)
    if kind is None:
        return f"invalid token ({exc})"
    return _REFUSALS[kind].format(
        audience=options.audience, issuer=options.issuer, claim=getattr(exc, "claim", None), exc=exc
    )


class TokenAuthority:
    """Signs tokens with one key and checks tokens against every key it trusts."""

    def __init__(
        self,
        options: AuthOptions,
        signing_key: Any,
        *,
        secret: str | None = None,
        public_keys: Sequence[Any] = (),
    ) -> None:
        self.options = options
        self._signing_key = signing_key
        self.algorithm = _algorithm_of(signing_key)
        self._secret = secret if options.allow_hs256 else None
        own = signing_key.public_key()
        self._public = [_PublicKey(_public_algorithms(own), own)]
        self._public += [_PublicKey(_public_algorithms(k), k) for k in public_keys]

    @classmethod
    def load(cls, options: AuthOptions, data_dir: Path) -> TokenAuthority:
        """Keys from the options, or from (and made under) `<data_dir>/auth/`."""
        folder = data_dir / AUTH_DIR
        if options.private_key is not None:
            signing = load_private_key(options.private_key)
        else:
            signing = load_or_create_signing_key(folder / "signing-key.pem")
        secret = None
        if options.allow_hs256:
            secret = options.hs256_secret or load_or_create_secret(folder / "hs256.secret")
        return cls(options, signing, secret=secret, public_keys=[load_public_key(p) for p in options.public_keys])

    @property
    def public_key_pem(self) -> str:
        """The signing key's public half (PEM): what nodes check execute tokens with."""
        data: bytes = self._signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return data.decode()

    def mint(
        self,
        subject: str,
        roles: Iterable[str],
        *,
        ttl_seconds: float | None = None,
        now: float | None = None,
        algorithm: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        jti: str | None = None,
    ) -> str:
        """A signed token for `subject` holding `roles` (EdDSA/RS256/ES256 by the key; or HS256)."""
        listed = sorted(set(roles))
        unknown = [r for r in listed if r not in ROLES]
        if unknown or not listed:
            raise TokenError(f"role(s) {unknown or listed}: choose from {', '.join(ROLES)}")
        if not subject.strip():
            raise TokenError("the subject must not be empty")
        issued = time.time() if now is None else now
        ttl = self.options.ttl_seconds if ttl_seconds is None else ttl_seconds
        claims = {
            "iss": issuer or self.options.issuer,
            "aud": audience or self.options.audience,
            "sub": subject,
            "roles": listed,
            "iat": int(issued),
            "exp": int(issued + ttl),
            "jti": jti or uuid.uuid4().hex,
        }
        chosen = algorithm or self.algorithm
        if chosen == "HS256":
            if self._secret is None:
                raise TokenError("HS256 is switched off on this control plane")
            return jwt.encode(claims, self._secret, algorithm="HS256")
        if chosen != self.algorithm:
            raise TokenError(f"this control plane signs with {self.algorithm} (or HS256), not {chosen}")
        return jwt.encode(claims, self._signing_key, algorithm=chosen)

    def sign(self, claims: dict[str, Any]) -> str:
        """`claims` as a JWT signed with the signing key (never HS256): what nodes check with the
        public key they were given, e.g. the signature of a module table (`reconciler.apply.tables`)."""
        return jwt.encode(claims, self._signing_key, algorithm=self.algorithm)

    def verify(self, token: str) -> Claims:
        """The token's claims when it verifies; TokenError saying why not otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(_describe(exc, self.options)) from None
        algorithm = str(header.get("alg"))
        if algorithm == "HS256" and self._secret is not None:
            candidates: list[Any] = [self._secret]
        elif algorithm in ASYMMETRIC:
            candidates = [k.key for k in self._public if algorithm in k.algorithms]
        else:
            candidates = []
        if not candidates:
            raise TokenError(f"tokens signed with {algorithm!r} are not accepted here")
        error: jwt.PyJWTError | None = None
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.options.audience,
                    issuer=self.options.issuer,
                    leeway=LEEWAY_SECONDS,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            except jwt.InvalidSignatureError as exc:
                error = exc
                continue
            except jwt.PyJWTError as exc:
                raise TokenError(_describe(exc, self.options)) from None
            if not isinstance(claims.get("aud"), str):  # one audience each: never a list naming several
                raise TokenError(f"the token must name one audience ({self.options.audience!r})")
            return Claims(str(claims["sub"]), _roles(claims), float(claims["exp"]), claims)
        assert error is not None
        raise TokenError(_describe(error, self.options))


def _roles(claims: dict[str, Any]) -> frozenset[str]:
    return frozenset(r for r in roles_of(claims) if r in ROLES)
