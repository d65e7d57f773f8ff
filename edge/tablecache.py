"""A managed node's last table on disk, signed by the control plane, and the binaries it names.

Where it sits: `edge.agent.Agent` keeps every table it applies that came with the control plane's
signature (the long-poll answer's `TABLE_SIGNATURE_HEADER`, `reconciler.apply.tables`); after a restart
`Agent.restore` loads it, checks it and applies it before the agent first reaches the control plane,
and the node reports `ServingCachedTable` until the control plane answers a heartbeat. Binaries come
through `DiskBlobs`: kept by digest beside the precompiled artifacts (`edge.cache`), checked against
their SHA-256 on every read, fetched from the control plane when missing or wrong. With both on disk
a restarted node serves in the time its precompiled modules take to load (milliseconds each). A
node with `--workers N` keeps them in its supervisor (`edge.supervisor`), which holds the agent.

Layout, under the node's cache dir (`hotswap edge --cache-dir`, private, never granted to a module):

    blobs/<hex digest>.wasm             module binaries (shared by the nodes of one cache dir)
    nodes/<node id>/table.json          {"format": 2, "nodeId", "generation", "modules", "signature", "binding"}
    nodes/<node id>/control-plane.json  {"publicKey", "issuer"}: the key of the last registration
    nodes/<node id>/table.refused.json  a table that did not verify, set aside for a human to look at

What is checked: `signature` is a JWT with audience `TABLE_AUDIENCE` and the control plane's issuer,
signed by the control plane's key, whose `sha256` claim is the SHA-256 of `canonical_json(modules)`;
and `binding` (`edge.tablebinding`) is the control plane's signed binding of that content to this
node id and this `generation` (`verify_binding`). Anything else (no signature or binding, another
key, a changed byte, weight or generation, another node's table, a file that does not parse, a file
of format 1, which had no binding) is refused with an error in the log, and the node serves nothing
until the control plane answers: never something unverified. Whoever can write here can still put
back an older table the control plane gave this node, under the generation it had then: the
control plane then answers the node's first poll with its current table.

Which key: `hotswap edge --control-plane-key FILE` (HOTSWAP_CONTROL_PLANE_KEY) pins the control
plane's public key (PEM): only tables it signed are served, and a registration answer naming another
key is logged and ignored. Without it, the node trusts the key the control plane gave at its last
registration (`control-plane.json`, trust on first use): that catches a damaged or edited table, not
someone who can write the cache dir (they could replace the key file too); pin the key where that
matters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from pydantic import ValidationError

from edge import tablebinding
from edge.auth import ALGORITHMS, ISSUER
from edge.errors import LoadError
from edge.protocol import (
    GENERATION_FLOOR_AUDIENCE,
    MAX_GENERATION,
    TABLE_AUDIENCE,
    TABLE_BINDING_AUDIENCE,
    ModuleTable,
    canonical_json,
)

log = logging.getLogger("hotswap.edge.tablecache")
FORMAT = 2  # 1 had no binding to the node and generation
MAX_TABLE_BYTES = 64 << 20


class TableRefusedError(Exception):
    """A table kept on disk that is not served: it does not verify, or there is no key to verify it."""


@dataclass(frozen=True)
class TrustedKey:
    """The control plane's public key (PEM) and issuer; `pinned` when the operator gave it."""

    pem: str
    issuer: str = ISSUER
    pinned: bool = False


def _claims(token: str, key: TrustedKey, audience: str, claim: str, what: str) -> dict[str, Any]:
    """The claims of a JWT the control plane signed for `audience`, with `claim`; TableRefusedError
    naming `what` (the signature, the binding) otherwise."""
    try:
        return dict(
            jwt.decode(
                token,
                key.pem,
                algorithms=ALGORITHMS,
                audience=audience,
                issuer=key.issuer,
                options={"require": ["iss", "aud", claim], "verify_exp": False},
            )
        )
    except jwt.PyJWTError as exc:
        raise TableRefusedError(f"its {what} does not verify with the control plane's key ({exc})") from None


def verify(modules: Any, signature: str, key: TrustedKey) -> str:
    """The SHA-256 (hex) of `modules`' canonical JSON; TableRefusedError unless `signature` is the
    control plane's over exactly `modules`."""
    claims = _claims(signature, key, TABLE_AUDIENCE, "sha256", "signature")
    try:
        actual = hashlib.sha256(canonical_json(modules)).hexdigest()
    except (TypeError, ValueError) as exc:
        raise TableRefusedError(f"its modules are not plain JSON ({exc})") from None
    if claims.get("sha256") != actual:
        raise TableRefusedError("its content is not what the control plane signed (the sha256 differs)")
    return actual


def verify_binding(node_id: str, generation: int, sha256: str, binding: str | None, key: TrustedKey) -> None:
    """TableRefusedError unless `binding` is the control plane's binding of the modules hashed to
    `sha256` to node `node_id` under `generation` (`edge.tablebinding`)."""
    if binding is None:
        raise TableRefusedError("it came without a binding to this node and generation")
    try:
        token, path = tablebinding.parse(binding)
        root = tablebinding.fold(tablebinding.leaf(node_id, generation, sha256), path)
    except ValueError as exc:
        raise TableRefusedError(f"its binding is malformed: {exc}") from None
    claims = _claims(token, key, TABLE_BINDING_AUDIENCE, "root", "binding")
    if claims.get("root") != root.hex():
        raise TableRefusedError(
            f"it was not given to node {node_id!r} under generation {generation} (its binding names another)"
        )


def verify_floor(node_id: str, nonce: str, floor: str | None, key: TrustedKey) -> int:
    """The generation the control plane numbers node `node_id`'s tables from, as it signed it in answer
    to the registration that carried `nonce` (`edge.nodeapi.RegistrationAnswer.floor`); TableRefusedError
    unless it did."""
    if floor is None:
        raise TableRefusedError(
            "the registration answer carries no signed generation floor (a control plane of an earlier "
            "version, or one that does not sign tables, or someone in the path took it out)"
        )
    claims = _claims(floor, key, GENERATION_FLOOR_AUDIENCE, "generation", "generation floor")
    if claims.get("sub") != node_id or claims.get("nonce") != nonce:
        raise TableRefusedError("the registration answer's generation floor was signed for another registration")
    generation = claims["generation"]
    if type(generation) is not int or not 0 <= generation <= MAX_GENERATION:
        raise TableRefusedError(f"the registration answer's generation floor is not a generation: {generation!r}")
    return generation


def verify_table(
    node_id: str, table: ModuleTable, modules: Any, signature: str | None, binding: str | None, key: TrustedKey
) -> None:
    """TableRefusedError unless `modules` (the raw JSON `table` was read from) carry the control
    plane's signature and its binding to `node_id` under the table's generation."""
    if signature is None:
        raise TableRefusedError("it came without a signature")
    verify_binding(node_id, table.generation, verify(modules, signature, key), binding, key)


class SavedTables:
    """One node's saved table and the key that checks it."""

    def __init__(self, directory: Path, node_id: str, pinned: TrustedKey | None = None) -> None:
        self.directory = directory
        self.node_id = node_id
        self.pinned = pinned
        self.path = directory / "table.json"
        self.key_path = directory / "control-plane.json"
        self.refused_path = directory / "table.refused.json"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    @classmethod
    def under(cls, cache_dir: Path, node_id: str, pinned: TrustedKey | None = None) -> SavedTables:
        return cls(cache_dir / "nodes" / node_id, node_id, pinned)

    # -- the key ----------------------------------------------------------------------------------

    def key(self) -> TrustedKey | None:
        """The pinned key, else the one remembered from the last registration (None: never registered)."""
        if self.pinned is not None:
            return self.pinned
        try:
            data = json.loads(self.key_path.read_text())
            return TrustedKey(str(data["publicKey"]), str(data.get("issuer") or ISSUER))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember_key(self, pem: str, issuer: str) -> TrustedKey:
        """The key to trust after a registration answered with `pem`: the pinned one if any (another key
        is logged and ignored), else `pem`, which is kept for the next restart."""
        if self.pinned is not None:
            if pem.strip() != self.pinned.pem.strip() or issuer != self.pinned.issuer:
                log.error(
                    "the control plane answered with another public key or issuer (%s) than --control-plane-key; "
                    "keeping the pinned key: execute tokens and tables it did not sign are refused",
                    issuer,
                )
            return self.pinned
        key = TrustedKey(pem, issuer)
        if self.key() != key:
            _write(self.key_path, json.dumps({"publicKey": pem, "issuer": issuer}).encode())
        return key

    # -- the table --------------------------------------------------------------------------------

    def save(self, table: ModuleTable, modules: Any, signature: str | None, binding: str | None) -> bool:
        """Keep the table the node just applied (`modules`: the raw JSON it was read from); True when
        kept. A table that does not verify is not kept, and the one kept before goes too (a restart
        must not bring back an older table)."""
        key = self.key()
        try:
            if key is None:
                raise TableRefusedError("there is no control-plane key to check it with")
            verify_table(self.node_id, table, modules, signature, binding, key)
        except TableRefusedError as exc:
            log.warning("not keeping table generation %d on disk: %s", table.generation, exc)
            self.path.unlink(missing_ok=True)
            return False
        body = {
            "format": FORMAT,
            "nodeId": self.node_id,
            "generation": table.generation,
            "modules": modules,
            "signature": signature,
            "binding": binding,
        }
        _write(self.path, json.dumps(body, separators=(",", ":")).encode())
        return True

    def load(self) -> tuple[ModuleTable, TrustedKey] | None:
        """The saved table and the key it verified with; None when there is none; TableRefusedError
        saying why when there is one that must not be served."""
        try:
            # O_NONBLOCK: a named pipe put in its place must not hold the node's start
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TableRefusedError(f"it cannot be read ({exc})") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise TableRefusedError("it is not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read(MAX_TABLE_BYTES + 1)
        except OSError as exc:
            raise TableRefusedError(f"it cannot be read ({exc})") from None
        finally:
            os.close(fd)
        if len(raw) > MAX_TABLE_BYTES:
            raise TableRefusedError(f"it is larger than {MAX_TABLE_BYTES} bytes")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise TableRefusedError(f"it is not JSON ({exc})") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise TableRefusedError(f"it is not a table file of format {FORMAT}")
        if body.get("nodeId") != self.node_id:
            raise TableRefusedError(f"it was kept by node {body.get('nodeId')!r}, not {self.node_id!r}")
        signature, binding = body.get("signature"), body.get("binding")
        if not isinstance(signature, str):
            raise TableRefusedError("it has no signature")
        if not isinstance(binding, str):
            raise TableRefusedError("it has no binding to this node and generation")
        key = self.key()
        if key is None:
            raise TableRefusedError("there is no control-plane key to check it with (pin one with --control-plane-key)")
        sha256 = verify(body.get("modules"), signature, key)
        try:
            table = ModuleTable.model_validate({"generation": body.get("generation"), "modules": body.get("modules")})
        except ValidationError as exc:
            raise TableRefusedError(f"it is not a valid table ({exc.error_count()} problems)") from None
        verify_binding(self.node_id, table.generation, sha256, binding, key)
        return table, key

    def set_aside(self) -> str:
        """Move a refused table out of the way (kept for a human; the next table replaces it); says
        where it went. When it cannot be moved (its place is taken by a directory, say), it is removed."""
        try:
            self.path.replace(self.refused_path)
            return f"moved to {self.refused_path.name}"
        except OSError as exc:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as gone:  # a directory in its place: nothing the node can serve either
                return f"left in place ({exc}; {gone})"
            return f"removed ({self.refused_path.name}: {exc})"


# -- binaries --------------------------------------------------------------------------------------


class BlobSource(Protocol):
    async def fetch(self, digest: str) -> bytes: ...


class DiskBlobs:
    """Binaries by digest: from disk when the file hashes right, else from `upstream` (then kept)."""

    def __init__(self, directory: Path, upstream: BlobSource) -> None:
        self.directory = directory
        self.upstream = upstream
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: str) -> Path:
        hex_digest = digest.removeprefix("sha256:")
        if len(hex_digest) != 64 or not all(c in "0123456789abcdef" for c in hex_digest):
            raise LoadError(f"not a sha256 digest: {digest!r}")
        return self.directory / f"{hex_digest}.wasm"

    def read(self, digest: str) -> bytes | None:
        """The kept binary when it hashes to `digest`; a file that does not is removed."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if "sha256:" + hashlib.sha256(data).hexdigest() == digest:
            return data
        log.warning("the kept binary %s does not match its digest; removed, fetching it again", path.name)
        path.unlink(missing_ok=True)
        return None

    async def fetch(self, digest: str) -> bytes:
        data = await asyncio.to_thread(self.read, digest)
        if data is not None:
            return data
        data = await self.upstream.fetch(digest)  # checked against the digest there
        await asyncio.to_thread(_write, self.path(digest), data)
        return data


def _write(path: Path, data: bytes) -> None:
    """Write to a temporary name, flush to disk, rename into place: a crash leaves the old file or the new."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    tmp.replace(path)
