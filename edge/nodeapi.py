"""The node protocol: how an edge node and the control plane talk (DESIGN.md section 4).

    POST /api/v1/wasm/nodes                              Registration -> RegistrationAnswer
    POST /api/v1/wasm/nodes/{id}/heartbeat               Heartbeat    -> HeartbeatAnswer (404: register again)
    GET  /api/v1/wasm/nodes/{id}/assignment?after=GEN    long-poll    -> ModuleTable (204 when nothing newer)
    GET  /api/v1/wasm/blobs/{digest}                     a module binary, checked against its digest;
         with `X-Hotswap-Blob-Direct: br`, a control plane whose blobs are in S3 may answer 307 to a
         presigned URL of the stored object (brotli, `X-Hotswap-Blob-Encoding: br`) instead

Wire models only (pydantic, camelCase), shared by `edge.agent` and the control plane's API; no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from edge.protocol import MAX_GENERATION, SMOKE_ERROR_CHARS, ModuleTable, VersionMetrics, printable

NODES_PATH = "/api/v1/wasm/nodes"
NODE_ID_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
NODE_URL_PATTERN = r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"
NONCE_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"  # a registration's nonce: base64url, 96 to 384 bits
FAILED_REASON_CHARS = 2000
# A node asks for the blob store's own URL with this header, naming the content coding it decodes;
# a control plane that answers 307 names the coding of what is there (always br today).
BLOB_DIRECT_HEADER = "X-Hotswap-Blob-Direct"
BLOB_ENCODING_HEADER = "X-Hotswap-Blob-Encoding"


class NodeStatus(StrEnum):
    """A node's health, one type wherever it is named: the control plane judges it
    (`reconciler.apply.nodes`), stores it (`reconciler.store.records.NodeRecord`), plans with it and
    shows it in the API."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"  # missed 3 heartbeats: excluded, its modules move elsewhere
    DRAINING = "Draining"  # leaving on purpose: excluded from placement like Unhealthy


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Registration(_Wire):
    """What a node says about itself when it joins (and again after the control plane forgot it)."""

    # Every field is bounded: a registration is what a node token holder says, nothing more.
    id: str = Field(pattern=NODE_ID_PATTERN)
    region: str = Field(min_length=1, max_length=63)
    zone: str | None = Field(None, max_length=63)
    hostname: str = Field(min_length=1, max_length=253)
    url: str = Field(
        max_length=2048,
        pattern=NODE_URL_PATTERN,
        description="where the node's execute API listens: http(s)://host[:port][/path], no query or fragment",
    )
    max_modules: int = Field(1000, ge=1, le=100000)
    runtime_version: str = Field("", max_length=128)
    wasi: tuple[Annotated[str, Field(max_length=32)], ...] = Field(("preview1",), max_length=8)
    generation: int = Field(
        0,
        ge=0,
        le=MAX_GENERATION,
        description="the table generation the node has applied: a control plane that does not know "
        "the node (it was deleted, or the state was lost) numbers its tables from above it",
    )
    nonce: str | None = Field(
        None,
        pattern=NONCE_PATTERN,
        description="a random value of this registration's, which the control plane signs back with the "
        "generation its tables for the node are numbered from (`RegistrationAnswer.floor`)",
    )


HEARTBEAT_SECONDS: Final = (0.05, 3600.0)
"""The heartbeat periods a control plane may ask for: a node refuses an answer outside them (0 would
have it heartbeat in a busy loop, a huge one would silence it between table changes)."""


class RegistrationAnswer(_Wire):
    id: str
    heartbeat_seconds: float = Field(ge=HEARTBEAT_SECONDS[0], le=HEARTBEAT_SECONDS[1])
    generation: int = 0
    public_key: str | None = Field(None, description="PEM key that signs execute tokens for this node")
    issuer: str | None = Field(None, description="the `iss` those tokens carry (default hotswap)")
    floor: str | None = Field(
        None,
        max_length=4096,
        description="for a registration with a nonce, when tables are signed: a JWT (audience "
        "`hotswap-generation-floor`) binding the node id, the nonce and `generation`; a node pinned to the "
        "control plane's key takes no table numbered under it",
    )


class Running(_Wire):
    """One module version a node actually serves, as the heartbeat reports it; `weight` is the share it
    takes (0 for a version whose smoke check failed, whatever its table entry says)."""

    module: str
    version: str
    digest: str
    weight: int


class SmokeReport(_Wire):
    """The smoke check of one loaded module version (`edge.smoke`): passed, or why not."""

    module: str = Field(max_length=253)
    version: str = Field(max_length=128)
    digest: str = Field(max_length=71)
    passed: bool
    error: str | None = Field(
        None, description="the first failing call and the module's error, or the result that did not match"
    )

    @field_validator("error", mode="before")
    @classmethod
    def _bounded(cls, value: object) -> object:
        return printable(value[:SMOKE_ERROR_CHARS]) if isinstance(value, str) else value


class Heartbeat(_Wire):
    generation: int = Field(0, ge=0, le=MAX_GENERATION, description="the assignment generation the node has applied")
    running: tuple[Running, ...] = Field((), max_length=100000)
    failed: dict[str, str] = Field(
        default_factory=dict, max_length=100000, description="module@version -> why it did not load"
    )
    smoke: tuple[SmokeReport, ...] = Field(
        (),
        max_length=100000,
        description="per loaded version with smoke calls, their outcome; a failed one takes no weight",
    )
    metrics: tuple[VersionMetrics, ...] = ()
    cpu_percent: float = Field(0.0, ge=0, le=1e6)
    memory_mb: float = Field(0.0, ge=0, le=1e12)
    uptime_seconds: float = Field(0.0, ge=0, le=1e12)
    conditions: tuple[Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z]+$")], ...] = Field(
        (),
        max_length=16,
        description="the node's own conditions: ServingCachedTable while it serves the table it kept on "
        "disk and the control plane has not yet answered it",
    )

    @field_validator("failed", mode="before")
    @classmethod
    def _short_reasons(cls, value: object) -> object:
        """A long load error is cut, not refused (a heartbeat refused would make the node Unhealthy), and
        made one line of printable text: `hotswap status` prints it to an operator's terminal."""
        if isinstance(value, dict):
            return {k: printable(v[:FAILED_REASON_CHARS]) if isinstance(v, str) else v for k, v in value.items()}
        return value


class HeartbeatAnswer(_Wire):
    generation: int = Field(description="the latest generation assigned to the node")


__all__ = [
    "NODES_PATH",
    "Heartbeat",
    "HeartbeatAnswer",
    "ModuleTable",
    "NodeStatus",
    "Registration",
    "RegistrationAnswer",
    "Running",
    "SmokeReport",
    "VersionMetrics",
]
