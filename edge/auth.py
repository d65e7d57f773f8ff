"""Who may call a node: a JWT the control plane signed for nodes, or anyone on loopback.

Where it sits: the server checks every execute call (and a standalone node's admin table) with
`Authenticator.check`. A node managed by a control plane is given the control plane's public key
(PEM) and its issuer at registration. Tokens have one audience each (SECURITY.md):

    hotswap-api             the control plane's API: never accepted here, so a token a client sends
                            to a node (or a node harvests) cannot be replayed against the API
    hotswap-edge            any node: what a client near a node holds (`hotswap token --audience edge`)
    hotswap-node/<node id>  this node only: what the control plane mints per forwarded execute call

A token must name the issuer the node was given (`iss`), carry `exp`, and hold one of the roles the
call needs (`developer` or `admin` for execute, `admin` for the admin table): a valid token without
the role is a 403, anything else a 401. A standalone node without a key accepts plain calls, and the
command refuses to listen beyond 127.0.0.1 that way.
"""

from __future__ import annotations

from typing import Any

import jwt

from edge.errors import ForbiddenError, UnauthorizedError

EXECUTE_ROLES = frozenset({"developer", "admin"})
ADMIN_ROLES = frozenset({"admin"})
READ_ROLES = frozenset({"admin", "developer", "operator", "viewer"})
ALGORITHMS = ["EdDSA", "ES256", "ES384", "RS256", "RS384", "RS512", "PS256"]
ISSUER = "hotswap"
LEEWAY_SECONDS = 30.0  # clock skew between the control plane and a node
EDGE_AUDIENCE = "hotswap-edge"
NODE_AUDIENCE_PREFIX = "hotswap-node/"  # "/" cannot occur in a node id, so no id spells another audience


def node_audience(node_id: str) -> str:
    """The audience of a token meant for one node only."""
    return f"{NODE_AUDIENCE_PREFIX}{node_id}"


class Authenticator:
    def __init__(self, public_key_pem: str, *, issuer: str = ISSUER, node_id: str | None = None) -> None:
        self._key = public_key_pem
        self.issuer = issuer
        self.audiences = [EDGE_AUDIENCE] + ([node_audience(node_id)] if node_id else [])

    def check(self, authorization: str | None, roles: frozenset[str] = EXECUTE_ROLES) -> dict[str, object]:
        """The token's claims; UnauthorizedError (401) or ForbiddenError (403) naming what is wrong."""
        if not authorization or not authorization.startswith("Bearer "):
            raise UnauthorizedError("this call needs `Authorization: Bearer <token>` signed by the control plane")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                self._key,
                algorithms=ALGORITHMS,
                audience=self.audiences,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidAudienceError:
            raise UnauthorizedError(
                f"invalid token: its audience is not this node (accepted: {', '.join(self.audiences)}; "
                "an API token is not accepted by nodes: mint one with `hotswap token --audience edge`)"
            ) from None
        except jwt.PyJWTError as exc:
            raise UnauthorizedError(f"invalid token: {exc}") from None
        if not isinstance(claims.get("aud"), str):  # one audience each: a list naming several is refused
            raise UnauthorizedError("invalid token: its audience must be one string")
        held = roles_of(claims)
        if not held & roles:
            raise ForbiddenError(
                f"role(s) {sorted(held) or ['none']} may not do this (needs {' or '.join(sorted(roles))})"
            )
        return claims


def roles_of(claims: dict[str, Any]) -> frozenset[str]:
    """The roles a token's claims name: `role` (one string) and `roles` (a list); anything else is
    ignored. The control plane reads API tokens with this too, keeping only the roles it knows."""
    found: set[str] = set()
    role = claims.get("role")
    if isinstance(role, str):
        found.add(role)
    listed = claims.get("roles")
    if isinstance(listed, list):
        found.update(r for r in listed if isinstance(r, str))
    return frozenset(found)
