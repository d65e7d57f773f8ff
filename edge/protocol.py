"""The wire contract between a client, an edge node and the control plane.

Three shapes live here, and nothing else (no I/O, no wasmtime), so the control plane can import
this module without pulling in the runtime:

* `ExecuteRequest` / `ExecuteResponse` / `ErrorBody`: `POST /api/v1/wasm/execute`.
* `ModuleEntry`: one row of a node's module table, with the smoke calls (`SmokeCall`) the node
  makes to a new version before it gets any weight. The control plane publishes the full table
  (a generation number and a list of entries); the node applies it with `Router.apply_table`,
  which loads what is new, re-weights what stays and unloads what went once its requests finish.
* `Limits`, `Capabilities` (`Mount`, `Network`), `HealthCheck`, `SmokeCall`: the one definition of
  each, for a node's table and for the fleet's Module kind alike. What a fleet may ask for is
  narrower (`FleetBounds`, `FleetList`, the grant and smoke checks), checked only on fleet input
  (validation context `FLEET_INPUT`); a node takes what the wire's bounds allow.
* `VersionMetrics`: per module version counters and a latency histogram, as deltas since the
  last read (`Router.metrics_delta`), which the agent ships with each heartbeat.
* Signed tables: the control plane encodes a table's `modules` once per distinct content with
  `canonical_json` and signs the SHA-256 of those bytes (a JWT with audience `TABLE_AUDIENCE`, sent
  in the `TABLE_SIGNATURE_HEADER` of the long-poll answer, so the body stays a plain `ModuleTable`).
  A node re-encodes the `modules` it parsed the same way, which gives the same bytes, and keeps the
  table with its signature on disk to serve after a restart (`edge.tablecache`). That signature
  names content only; the `TABLE_BINDING_HEADER` binds it to the node and the generation
  (`edge.tablebinding`).
* Nesting limits: an execute call's `args` nest at most `MAX_ARGS_DEPTH` levels of arrays and
  objects (a 400 otherwise), a module's JSON result at most `MAX_RESULT_DEPTH` (a trap otherwise),
  so no JSON on either side of a call is deep enough to exhaust the interpreter's recursion limit.

Field names are camelCase on the wire, as in the fleet YAML.
"""

from __future__ import annotations

import base64
import json
import posixpath
import re
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Final, Literal, Self, TypedDict, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, SchemaValidator, core_schema

try:
    import orjson
except ImportError:  # pragma: no cover - json reads the same, slower
    orjson = None  # type: ignore[assignment]

ErrorCode = Literal[
    "bad_request",
    "unauthorized",
    "not_found",
    "too_large",
    "unavailable",
    "trap",
    "timeout",
    "memory",
    "cpu",
    "busy",
]
VERSION_HEADER = "X-Hotswap-Version"
STICKY_HEADER = "X-Hotswap-Sticky"
MAX_ARGS_DEPTH = 64  # levels of arrays and objects in an execute call's args
MAX_RESULT_DEPTH = 256  # levels of arrays and objects in a module's JSON result
LAST_ERROR_CHARS = 300  # of a module's error message, in metrics and rollout reasons
MAX_SMOKE_CALLS = 10  # smoke calls in one table entry
MAX_ARGV = 1024  # arguments of a command call (argv, argv[0] included)
MAX_ANSWER_BYTES = 20 << 20  # an execute answer's JSON: a node answers no more, the control plane reads this much
Arg = Annotated[str, Field(max_length=65536, pattern=r"^[^\x00]*$")]  # a C string: no NUL
SMOKE_ERROR_CHARS = 400  # of a failed smoke check's report (the call, and the module's error or result)


def module_id(module: str, version: str) -> str:
    """A module version's id, as the API, logs and traces name it: `{name}-v{major}.{minor}.{patch}`."""
    return f"{module}-v{version}"


TABLE_AUDIENCE = "hotswap-table"  # the `aud` of a table signature: never an execute or API token
TABLE_SIGNATURE_HEADER = "X-Hotswap-Table-Signature"
# The signed binding of a table to one node and generation (`edge.tablebinding`): its own audience, so
# neither a table signature nor any token can pass for one.
TABLE_BINDING_AUDIENCE = "hotswap-table-binding"
TABLE_BINDING_HEADER = "X-Hotswap-Table-Binding"
# The signed answer to a registration's nonce (`edge.nodeapi.RegistrationAnswer.floor`): the generation the
# control plane numbers this node's tables from now, so that a pinned node takes no table under it.
GENERATION_FLOOR_AUDIENCE = "hotswap-generation-floor"
SERVING_CACHED_TABLE = "ServingCachedTable"  # a node condition: serving its table from disk, unconfirmed

# Latency histogram bucket upper bounds in milliseconds (the last bucket is +Inf).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
)  # fmt: skip


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# -- what a fleet may ask for (narrower than what a node takes: a standalone node's flags may give a module
# 4 GiB) is checked on the field it narrows, on fleet input only. The JSON Schema of the types below is the
# fleet's Module kind's (`hotswap schema`): their docs are comments, as a docstring would enter it.

FLEET_INPUT: Final = {"fleet_input": True}
"""Validation context of documents read from a fleet (the loader passes it): checks that only apply
to what Git asks for, not to tables and records the control plane stored earlier (read back as they
are, so a stricter rule never stops a restart; the edge node refuses such a grant at load anyway)."""


def fleet_input(info: ValidationInfo) -> bool:
    """Whether what is being validated was read from a fleet (validation context FLEET_INPUT)."""
    context = info.context
    return isinstance(context, dict) and bool(context.get("fleet_input"))


@dataclass(frozen=True)
class FleetBounds:
    """A scalar's bounds on fleet input, in place of the wire's (`ge` replaces a `gt`, `le` an `lt`):
    `Annotated[int, FleetBounds(le=512)] = Field(ge=1, le=4096)` takes 1..512 from a fleet, 1..4096
    from a node's table. A fleet's value is judged by pydantic's validator for the narrowed schema, so
    its error reads as that constraint's ("Input should be less than or equal to 512"); the fleet's
    JSON Schema shows the narrowed bounds."""

    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    pattern: str | None = None

    def narrowed(self, wire: CoreSchema) -> CoreSchema:
        narrow: dict[str, Any] = dict(wire)
        if self.ge is not None:
            narrow.pop("gt", None)
        if self.le is not None:
            narrow.pop("lt", None)
        narrow.update((name, value) for name, value in asdict(self).items() if value is not None)
        return cast(CoreSchema, narrow)

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        wire = handler(source)
        fleet = SchemaValidator(self.narrowed(wire))

        def check(value: Any, info: ValidationInfo) -> Any:  # before the wire's own check, which then passes
            return fleet.validate_python(value) if fleet_input(info) else value

        return core_schema.with_info_before_validator_function(check, wire)

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        while schema["type"] in ("function-wrap", "function-after", "function-before"):  # to the scalar's own
            schema = cast(dict[str, CoreSchema], schema)["schema"]
        return handler(self.narrowed(schema))


@dataclass(frozen=True)
class FleetList:
    """A tuple on the wire that a fleet writes as a YAML list: a fleet's value is read as a list field
    reads it, so the wrong type hears "Input should be a valid list", not "a valid tuple"."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        def check(value: Any, info: ValidationInfo) -> Any:
            return _ANY_LIST.validate_python(value) if fleet_input(info) and not isinstance(value, list) else value

        return core_schema.with_info_before_validator_function(check, handler(source))


_ANY_LIST = SchemaValidator(core_schema.list_schema())


# memoryMB caps a module's one linear memory (and its tables, at 8 bytes an element); cpuPercent is a share of
# one core over a sliding 1 s window; timeoutSeconds bounds each call (epoch deadline).
class Limits(_Wire):
    memory_mb: Annotated[int, FleetBounds(le=512)] = Field(128, alias="memoryMB", ge=1, le=4096)
    cpu_percent: int = Field(50, alias="cpuPercent", ge=1, le=100)
    timeout_seconds: Annotated[float, FleetBounds(ge=1)] = Field(30, alias="timeoutSeconds", gt=0, le=300)


NEVER_GRANTED: Final = ("/boot", "/dev", "/etc", "/proc", "/root", "/run", "/sys")
"""Host directories never granted to a module, nor anything under them: boot files, devices, system
configuration, root's home, runtime sockets, kernel interfaces."""

TOP_LEVEL_SYSTEM: Final = ("/bin", "/home", "/lib", "/lib32", "/lib64", "/opt", "/sbin", "/srv", "/tmp", "/usr", "/var")
"""Top-level directories never granted whole (a folder below one, e.g. /srv/hotswap/NAME, may be)."""


def host_problem(host: str) -> str | None:
    """Why a filesystem grant's `host` is refused before any node sees it, or None.

    What validate can know: the path's shape and the host's system directories. Whether a node
    serves it is the node operator's `--allow-dir` roots (checked by the node at load, with symlinks
    resolved)."""
    if "\0" in host:
        return "contains a NUL byte"
    if not host.startswith("/"):
        return f"{host!r} is not an absolute path (start it with /)"
    if ".." in host.split("/"):
        return f"{host!r} has a '..' component; name the directory itself"
    normal = posixpath.normpath(host)
    if normal != host or host.startswith("//"):
        return f"{host!r} is not normalised; write {normal.replace('//', '/')!r}"
    if host == "/":
        return "the host's root directory is never granted; grant a folder such as /srv/hotswap/NAME"
    for system in NEVER_GRANTED:
        if host == system or host.startswith(system + "/"):
            return f"{host!r} is {'' if host == system else 'under '}{system}, which is never granted"
    if host in TOP_LEVEL_SYSTEM:
        return f"{host!r} is a top-level system directory; grant a folder below it, such as {host}/hotswap/NAME"
    return None


# A host directory a module sees at `guest`. A fleet's grant names an absolute, normalised host path
# outside the system directories (`host_problem`); whether a node serves it is the node's `--allow-dir`.
class Mount(_Wire):
    host: Annotated[str, FleetBounds(min_length=1)]
    guest: Annotated[str, FleetBounds(min_length=1, pattern=r"^/")]
    mode: Literal["ro", "rw"] = "ro"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str, info: ValidationInfo) -> str:
        if fleet_input(info):
            problem = host_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value


class Network(_Wire):
    allow_hosts: Annotated[tuple[str, ...], FleetList()] = Field(default_factory=tuple, alias="allowHosts")


# The WASI sandbox: everything not listed is denied.
class Capabilities(_Wire):
    filesystem: Annotated[tuple[Mount, ...], FleetList()] = Field(default_factory=tuple)
    env: dict[Annotated[str, FleetBounds(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(default_factory=dict)
    network: Network = Field(default_factory=Network)

    def granted(self) -> frozenset[str]:
        """WASI capability classes granted (names as in `edge.wasm.WASI_P1_CAPABILITIES`)."""
        granted = {"process", "clocks", "random", "stdio"}
        if self.env:
            granted.add("env")
        if self.filesystem:
            granted.add("filesystem")
        if self.network.allow_hosts:
            granted.add("network")
        return frozenset(granted)


class HealthCheck(_Wire):
    function: Annotated[str, FleetBounds(min_length=1)]
    args: Annotated[tuple[Any, ...], FleetList()] = Field(default_factory=tuple)
    interval_seconds: Annotated[float, FleetBounds(ge=0.1, le=3600)] = Field(10, alias="intervalSeconds", gt=0)


MAX_SMOKE_JSON = 4096  # characters of a fleet's smoke call's args, and of its expect, as compact JSON
MAX_SMOKE_DEPTH = 32  # levels of arrays and objects in a fleet's smoke call's args or expect


# `expect` None: the call only has to succeed (`edge.smoke`). A fleet's args and expect are plain JSON,
# at most MAX_SMOKE_JSON characters and MAX_SMOKE_DEPTH levels deep.
class SmokeCall(_Wire):
    """One call every node makes to a new version right after loading it, before it gets any weight."""

    function: str = Field(min_length=1, max_length=256, description="the export to call")
    args: Any = Field(
        default_factory=list,
        description="the call's arguments, as `args` of an execute request (a JSON array of numbers for a"
        " numeric export, any JSON for a JSON or command export)",
    )
    expect: Any = Field(
        None,
        description="the exact JSON result the call must return (numbers compare by value, true is not 1);"
        " left out or null: the call only has to succeed (no trap, timeout or limit)",
    )

    @model_validator(mode="after")
    def _bounded(self, info: ValidationInfo) -> Self:
        if not fleet_input(info):
            return self
        for name in ("args", "expect"):
            value = getattr(self, name)
            if nests_deeper(value, MAX_SMOKE_DEPTH):
                raise ValueError(f"{name}: arrays and objects nest deeper than {MAX_SMOKE_DEPTH} levels")
            try:
                text = json.dumps(value, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}: not plain JSON ({exc})") from None
            if len(text) > MAX_SMOKE_JSON:
                raise ValueError(f"{name}: {len(text)} characters of JSON, at most {MAX_SMOKE_JSON}")
        return self


class ModuleEntry(_Wire):
    """One version of one module in a node's table, and the share of its traffic it takes."""

    module: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # No control character (but tab): answers name the version in a header, which aiohttp refuses to
    # write with one, so every call to such a version would run and then be dropped unanswered.
    version: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x08\x0A-\x1F\x7F]+$")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    weight: int = Field(100, ge=0, le=100)
    limits: Limits = Limits()
    capabilities: Capabilities = Capabilities()
    health_check: HealthCheck | None = Field(None, alias="healthCheck")
    smoke: tuple[SmokeCall, ...] = Field(
        (),
        max_length=MAX_SMOKE_CALLS,
        description="calls made to the version after it is loaded; until they pass it takes no weight",
    )
    argv: tuple[Arg, ...] = Field(
        (),
        max_length=MAX_ARGV,
        description="a command's argv when a call gives none (argv[0] is the program name); empty: [module]",
    )
    sticky: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[A-Za-z0-9-]+$",
        description="request header whose value is hashed to pick a version (A/B tests, affinity); "
        "X-Hotswap-Sticky when unset",
    )

    def identity(self) -> tuple[str, str, str, str, str, str, str]:
        """What must match for an already loaded version to be kept as it is (routing aside)."""
        return (
            self.module,
            self.version,
            self.digest,
            self.limits.model_dump_json(),
            self.capabilities.model_dump_json(),
            "[" + ",".join(c.model_dump_json() for c in self.smoke) + "]",
            "\0".join(self.argv),
        )


# The highest table generation: what a heartbeat and a registration may carry back (edge.nodeapi), and
# what a JSON number holds exactly. A table past it would be applied and kept, and then every report of
# the node's refused, for good; a row is never numbered past it on a registration.
MAX_GENERATION = 2**53


class ModuleTable(_Wire):
    """What the control plane assigns to a node: the whole table, with a generation number."""

    generation: int = Field(0, ge=0, le=MAX_GENERATION)
    modules: tuple[ModuleEntry, ...] = ()
    traceparents: dict[str, str] = Field(
        default_factory=dict,
        description="module -> W3C traceparent of the deployment step that changed it in this table: the "
        "node's wasm.module.load spans join that trace",
    )


class ExecuteRequest(_Wire):
    """An execute call. A command (`_start`) may take `argv` (argv[0] is the program name) and raw
    `stdin` (text, or bytes as `stdinBase64`) instead of `args`, which it would read as JSON on stdin."""

    module: str = Field(min_length=1, max_length=128)
    function: str = Field(min_length=1, max_length=256)
    args: Any = None
    version: str | None = None
    argv: tuple[Arg, ...] | None = Field(None, max_length=MAX_ARGV)
    stdin: str | None = None
    stdin_base64: str | None = Field(None, alias="stdinBase64")

    def stdin_bytes(self) -> bytes | None:
        """The raw stdin the call gives, or None; ValueError for both fields or bad base64."""
        if self.stdin is not None and self.stdin_base64 is not None:
            raise ValueError("stdin and stdinBase64: give one")
        if self.stdin_base64 is not None:
            return base64.b64decode(self.stdin_base64, validate=True)
        return self.stdin.encode() if self.stdin is not None else None


class ExecuteResponse(TypedDict, total=False):
    result: Any
    module: str
    version: str
    durationMs: float
    exitCode: int  # commands: 0 (another status is an `exit` error)
    stderr: str  # commands: the tail of stderr


class ErrorBody(TypedDict, total=False):
    error: str
    message: str
    module: str
    version: str


MAX_COUNT = 2**53  # the most a reported count may be (what a JSON number holds exactly)
MAX_LATENCY_SUM_MS = 1e18
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


def printable(text: str) -> str:
    """`text` with every character that is not printable (control characters, escapes, line breaks,
    bidi overrides) replaced by a space."""
    return text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)


class VersionMetrics(_Wire):
    """Counters of one module version since the previous read (or since load, for /metrics)."""

    # Counts are never negative (a node's report is a claim: one that could subtract would cancel
    # other nodes' errors in analysis, not be diluted by them) and never beyond 2**53.
    module: str = Field(max_length=253)
    version: str = Field(max_length=128)
    requests: Count = 0
    errors: Count = 0
    traps: Count = 0
    timeouts: Count = 0
    memory: Count = 0
    cpu: Count = 0
    latency_buckets: tuple[Count, ...] = Field(
        (), alias="latencyBuckets", max_length=len(LATENCY_BUCKETS_MS) + 1
    )  # per LATENCY_BUCKETS_MS + Inf
    latency_sum_ms: float = Field(0.0, alias="latencySumMs", ge=0, le=MAX_LATENCY_SUM_MS)
    violations: Count = 0  # sandbox refusals inside calls (a component's fetch to a host off the list)
    # The latest module failure's message in the period ("trap: wasm trap: ..."): the error the
    # module itself gave, no request data, so a rollback can say why, not only how often.
    last_error: str | None = Field(None, alias="lastError")
    # Runs of the version's healthCheck function in the period, and how many failed (`edge.health`);
    # not requests. A failed run's message is `lastError` ("health check health failed: trap: ...").
    health_checks: Count = Field(0, alias="healthChecks")
    health_failures: Count = Field(0, alias="healthFailures")

    @field_validator("last_error", mode="before")
    @classmethod
    def _bounded(cls, value: object) -> object:
        """Cut to LAST_ERROR_CHARS, and one line of printable text: it ends up in rollout messages
        that `hotswap status` prints to a terminal, and a node (or a module's trap text) could
        otherwise write escape sequences there."""
        return printable(value[:LAST_ERROR_CHARS]) if isinstance(value, str) else value

    @model_serializer(mode="wrap")
    def _without_idle_health(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The health counts go on the wire only when there are any: a version without a healthCheck
        reports exactly what it did before they existed (a control plane that forbids fields it does
        not know reads it)."""
        out: dict[str, Any] = handler(self)
        for name, alias in (("health_checks", "healthChecks"), ("health_failures", "healthFailures")):
            if not getattr(self, name):
                out.pop(alias, None)
                out.pop(name, None)
        return out


def canonical_json(value: Any) -> bytes:
    """The one encoding of a table's `modules` that is signed and checked: sorted keys, no spaces,
    ASCII only. Encoding the parse of these bytes again gives the same bytes, so a node that parsed
    the JSON (with any parser that keeps numbers as they were) can check what the control plane signed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


LONG_NUMBER = re.compile(rb"\d{19}")  # orjson reads an integer past 64 bits as a float: json for these


def loads(raw: bytes) -> Any:
    """JSON as the stdlib's json reads it, with orjson where orjson reads the same: not for a text
    holding a run of 19 digits (an integer past 64 bits, which orjson takes for a float), and not
    for what orjson refuses and json takes (NaN, a lone surrogate). Raises what json raises."""
    if orjson is not None and LONG_NUMBER.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def may_nest_deeper(raw: bytes | str, limit: int) -> bool:
    """False when the JSON text `raw` surely nests at most `limit` levels: it is too short to hold
    `limit` + 1 opening and closing brackets, or has no more opening brackets than `limit`. Cheap
    enough for every call; it spares most of them the walk of `nests_deeper`."""
    if len(raw) < 2 * (limit + 1):
        return False
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{") > limit
    return raw.count(b"[") + raw.count(b"{") > limit


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether parsed JSON `value` nests arrays and objects more than `limit` levels deep. Walks
    without recursion, and stops at the first level past `limit`."""
    containers = (list, tuple, dict)
    stack: list[tuple[Any, int]] = [(value, 0)] if isinstance(value, containers) else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        depth += 1
        if depth > limit:
            return True
        stack.extend((child, depth) for child in children if isinstance(child, containers))
    return False
