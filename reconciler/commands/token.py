"""`hotswap token --role ROLE [--subject NAME] [--data-dir D]`: print a development token, alone on stdout.

Where it sits: beside `hotswap serve` / `hotswap up`, on the same machine and data dir. It signs with
the control plane's own key under `<data-dir>/auth/`, so the token works against the API and, for
roles developer and admin, directly against the edge nodes' execute endpoints. It never makes keys:
a data dir without them (the control plane has not run there, or it runs elsewhere) is an error
that names the dir, since a token from fresh keys would be refused by the running control plane:

    export HOTSWAP_TOKEN=$(hotswap token --role developer)
    curl -H "Authorization: Bearer $HOTSWAP_TOKEN" http://127.0.0.1:8080/api/v1/wasm/modules

The `--jwt-*` flags (shared with `hotswap serve`) and their HOTSWAP_JWT_* variables choose other keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.api.authnames import AUDIENCE, AUDIENCES, AUTH_DIR, ISSUER, ROLES

if TYPE_CHECKING:
    from reconciler.api.auth import AuthOptions


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"HOTSWAP_{name}", default)


def add_auth_arguments(parser: argparse.ArgumentParser) -> None:
    """The token flags `hotswap serve`, `hotswap up` and `hotswap token` share."""
    group = parser.add_argument_group("tokens")
    group.add_argument(
        "--jwt-private-key",
        type=Path,
        default=_env("JWT_PRIVATE_KEY"),
        help="PEM key that signs tokens (Ed25519, RSA or EC; default: made under DATA_DIR/auth/)",
    )
    group.add_argument(
        "--jwt-public-key",
        type=Path,
        action="append",
        default=[Path(p) for p in (_env("JWT_PUBLIC_KEYS") or "").split(",") if p],
        help="PEM public key of another issuer whose tokens are accepted (repeatable)",
    )
    group.add_argument("--jwt-secret", default=_env("JWT_SECRET"), help="HS256 secret (default: made under DATA_DIR)")
    group.add_argument("--no-hs256", action="store_true", help="refuse HS256 tokens")
    group.add_argument("--jwt-issuer", default=_env("JWT_ISSUER", ISSUER), help=f"issuer (default {ISSUER})")
    group.add_argument("--jwt-audience", default=_env("JWT_AUDIENCE", AUDIENCE), help=f"audience (default {AUDIENCE})")


def auth_options(args: argparse.Namespace) -> AuthOptions:
    from reconciler.api.auth import AuthOptions

    return AuthOptions(
        issuer=args.jwt_issuer,
        audience=args.jwt_audience,
        private_key=args.jwt_private_key,
        public_keys=tuple(args.jwt_public_key),
        hs256_secret=args.jwt_secret,
        allow_hs256=not args.no_hs256,
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", required=True, choices=ROLES, action="append", help="a role (repeatable)")
    parser.add_argument("--subject", default=None, help="who the token speaks for (default: your user name)")
    parser.add_argument("--ttl", type=float, default=12 * 3600, help="seconds the token is valid (default 12 h)")
    parser.add_argument(
        "--algorithm", choices=("key", "HS256"), default="key", help="sign with the key (default) or the HS256 secret"
    )
    parser.add_argument(
        "--audience",
        choices=sorted(AUDIENCES),
        default="api",
        help="api: the control plane's API (default); edge: execute calls straight to edge nodes "
        "(nodes refuse API tokens, the API refuses edge tokens)",
    )
    data_dir = _env("DATA_DIR", ".hotswap") or ".hotswap"
    parser.add_argument(
        "--data-dir", type=Path, default=Path(data_dir), help=f"control plane data (default {data_dir})"
    )
    add_auth_arguments(parser)


def _default_subject() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "developer"


def missing_keys(args: argparse.Namespace) -> str | None:
    """Why no token can be minted here without making keys of our own, or None when it can."""
    folder = args.data_dir / AUTH_DIR
    missing = []
    if args.jwt_private_key is None and not (folder / "signing-key.pem").is_file():
        missing.append("signing-key.pem")
    if args.algorithm == "HS256" and not args.jwt_secret and not (folder / "hs256.secret").is_file():
        missing.append("hs256.secret")
    if not missing:
        return None
    return (
        f"no control plane keys in {folder.resolve()}/ (no {' or '.join(missing)}): point at the data dir of "
        "the running control plane with --data-dir DIR or HOTSWAP_DATA_DIR (`hotswap up` and `hotswap serve` "
        "make the keys on their first start), or give --jwt-private-key / --jwt-secret"
    )


def run(args: argparse.Namespace) -> int:
    if args.ttl <= 0:
        print("hotswap token: --ttl must be positive", file=sys.stderr)
        return 2
    if args.audience == "edge" and args.algorithm == "HS256":
        print("hotswap token: edge nodes only check tokens signed with the key, not HS256", file=sys.stderr)
        return 2
    from reconciler.api.auth import TokenAuthority, TokenError

    problem = missing_keys(args)
    if problem is not None:
        print(f"hotswap token: {problem}", file=sys.stderr)
        return 1
    try:
        options = auth_options(args)
        if args.algorithm != "HS256":  # never make an HS256 secret only to leave it unused
            options = dataclasses.replace(options, allow_hs256=False)
        authority = TokenAuthority.load(options, args.data_dir)
        token = authority.mint(
            args.subject or _default_subject(),
            args.role,
            ttl_seconds=args.ttl,
            algorithm="HS256" if args.algorithm == "HS256" else None,
            audience=AUDIENCES[args.audience],
        )
    except (TokenError, OSError) as exc:
        print(f"hotswap token: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
