"""Who may call execute on a node: a JWT signed by the control plane, or anyone on loopback.

Where it sits: the server checks every execute call with `Authenticator.check`. A node managed by
a control plane is given the control plane's public key (PEM) at registration and accepts tokens
it signed whose role is `developer` or `admin` (claim `role`, or any of `roles`). A standalone node
without a key accepts plain calls, and the command refuses to listen beyond 127.0.0.1 that way.
"""

from __future__ import annotations

import jwt

from edge.errors import UnauthorizedError

EXECUTE_ROLES = frozenset({"developer", "admin"})
ALGORITHMS = ["EdDSA", "ES256", "RS256"]


class Authenticator:
    def __init__(self, public_key_pem: str, *, audience: str | None = None) -> None:
        self._key = public_key_pem
        self._audience = audience

    def check(self, authorization: str | None) -> dict[str, object]:
        """The token's claims, or UnauthorizedError naming what is wrong."""
        if not authorization or not authorization.startswith("Bearer "):
            raise UnauthorizedError("execute needs `Authorization: Bearer <token>` signed by the control plane")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                self._key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise UnauthorizedError(f"invalid token: {exc}") from None
        roles: set[str] = set()
        role = claims.get("role")
        if isinstance(role, str):
            roles.add(role)
        listed = claims.get("roles")
        if isinstance(listed, list):
            roles.update(r for r in listed if isinstance(r, str))
        if not roles & EXECUTE_ROLES:
            raise UnauthorizedError(f"role(s) {sorted(roles) or ['none']} may not execute (developer or admin)")
        return claims
