"""The names tokens carry (issuer, audiences, roles) and where the keys live, without the crypto.

Where it sits: `reconciler.api.auth` mints and verifies tokens with these names; the command line reads
them here to build its options (`hotswap token --role`, `--audience`), so `--help` loads no JWT or
cryptography library.
"""

from __future__ import annotations

ISSUER = "hotswap"
AUDIENCE = "hotswap-api"
# Audiences of tokens for edge nodes (edge.auth): never accepted by the API, which checks `AUDIENCE`.
EDGE_AUDIENCE = "hotswap-edge"
AUDIENCES = {"api": None, "edge": EDGE_AUDIENCE}  # `hotswap token --audience`: None is the API's own


def node_audience(node_id: str) -> str:
    """The audience of a token for one node only: what a forwarded execute call carries."""
    return f"hotswap-node/{node_id}"


API_ROLES = ("admin", "developer", "operator", "viewer")
ROLES = (*API_ROLES, "node")
AUTH_DIR = "auth"  # under the data dir: signing-key.pem, hs256.secret
