"""What a node's supervisor and its worker processes say to each other (`hotswap edge --workers N`).

Where it sits: between `edge.supervisor` (the `WorkerPool`, one per node) and `edge.worker` (the
main of each worker process). Everything that crosses that process boundary is defined here, once:
the worker's command line (`WorkerConfig`), the socket paths, the endpoints on either side, their
bodies and how they are encoded. Both ends speak HTTP over unix sockets in the run dir the
supervisor makes:

    supervisor --GET /ready, PUT /table, PUT /key, PUT /conditions, POST /delta--> worker-<i>.sock
    worker     --GET /blobs/<digest>, PUT /table, GET /metrics--> supervisor.sock

`WorkerLink` is the supervisor's client of one worker and `worker_app` the server it talks to;
`SupervisorLink` is a worker's client of the supervisor and `supervisor_app` the server it talks to.
The servers take their behaviour from the module that runs them (a `WorkerSide`, or three callables),
so neither side's logic lives here.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import aiohttp
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from edge.auth import ISSUER
from edge.errors import LoadError
from edge.grants import GrantRoots
from edge.protocol import ModuleEntry, ModuleTable, VersionMetrics
from edge.router import ApplyReport
from edge.smoke import SmokeOutcome

WORKER_HEADER = "X-Hotswap-Worker"  # on every response of a worker: which one served it
_ENTRIES = TypeAdapter(list[ModuleEntry])
_METRICS = TypeAdapter(list[VersionMetrics])
Key = tuple[str, str]  # (module, version)


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process is started with (JSON on its command line)."""

    index: int
    host: str
    port: int
    run_dir: str
    cache_dir: str | None = None
    threads: int = 4
    admin: bool = False
    node_id: str = "standalone"
    public_key: str | None = None
    issuer: str = ISSUER
    log_level: str = "WARNING"
    log_format: str | None = None
    trace_ratio: float | None = None
    grants: Mapping[str, Any] = field(default_factory=dict)  # the node's GrantRoots (--allow-dir), as JSON
    conditions: bool = False  # a managed node: GET /health carries the conditions the supervisor sends

    def socket_path(self) -> str:
        return worker_socket(self.run_dir, self.index)

    def grant_roots(self) -> GrantRoots:
        """The node's grant roots; the worker's sockets are never granted either."""
        return GrantRoots.from_json(self.grants).protect(self.run_dir, "worker sockets")


def worker_socket(run_dir: str, index: int) -> str:
    return os.path.join(run_dir, f"worker-{index}.sock")


def supervisor_socket(run_dir: str) -> str:
    return os.path.join(run_dir, "supervisor.sock")


def _session(path: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=path), timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
    )


# -- encodings -------------------------------------------------------------------------------------


class Applied(NamedTuple):
    """A worker's answer to a table: the report, what it serves (each version at the weight it
    takes: 0 after a failed smoke check), and the smoke outcome of each loaded version that has one."""

    report: ApplyReport
    running: list[ModuleEntry]
    smoke: dict[Key, SmokeOutcome]


def report_json(
    report: ApplyReport, running: Sequence[ModuleEntry] = (), smoke: Mapping[Key, SmokeOutcome] | None = None
) -> dict[str, Any]:
    """An apply report as JSON; a worker's also carries `running` and `smoke` (see `Applied`)."""
    return {
        "generation": report.generation,
        "loaded": list(report.loaded),
        "kept": list(report.kept),
        "retired": list(report.retired),
        "failed": report.failed,
        "running": [e.model_dump(mode="json", by_alias=True) for e in running],
        "smoke": [[m, v, o.passed, o.error] for (m, v), o in (smoke or {}).items()],
    }


def report_from_json(data: dict[str, Any]) -> Applied:
    report = ApplyReport(
        int(data["generation"]),
        tuple(data["loaded"]),
        tuple(data["kept"]),
        tuple(data["retired"]),
        dict(data["failed"]),
    )
    smoke = {(str(m), str(v)): SmokeOutcome(bool(passed), error) for m, v, passed, error in data.get("smoke", [])}
    return Applied(report, _ENTRIES.validate_python(data.get("running", [])), smoke)


def metrics_json(rows: Sequence[VersionMetrics]) -> bytes:
    return _METRICS.dump_json(list(rows), by_alias=True)


def metrics_from_json(data: bytes) -> list[VersionMetrics]:
    return _METRICS.validate_json(data)


def _metrics_response(rows: Sequence[VersionMetrics]) -> web.Response:
    return web.Response(body=metrics_json(rows), content_type="application/json")


# -- the supervisor's socket: what workers ask -----------------------------------------------------


def supervisor_app(
    fetch: Callable[[str], Awaitable[bytes]],
    apply: Callable[[ModuleTable], Awaitable[ApplyReport]],
    node_metrics: Callable[[], Awaitable[list[VersionMetrics]]],
) -> web.Application:
    """The supervisor's endpoints: binaries by digest, an admin table for every worker, the node's metrics."""
    app = web.Application(client_max_size=1024**3)

    async def blob(request: web.Request) -> web.Response:
        digest = request.match_info["digest"]
        try:
            data = await fetch(digest)
        except LoadError as exc:
            return web.Response(status=502, text=exc.message)
        except Exception as exc:
            return web.Response(status=502, text=f"cannot fetch {digest}: {exc}")
        return web.Response(body=data)

    async def table(request: web.Request) -> web.Response:
        report = await apply(ModuleTable.model_validate_json(await request.read()))
        return web.json_response(report_json(report))

    async def metrics(request: web.Request) -> web.Response:
        return _metrics_response(await node_metrics())

    app.router.add_get("/blobs/{digest}", blob)
    app.router.add_put("/table", table)
    app.router.add_get("/metrics", metrics)
    return app


class SupervisorLink:
    """A worker's client of the supervisor; as a `BlobSource`, the worker's router fetches through it."""

    def __init__(self, run_dir: str) -> None:
        self.session = _session(supervisor_socket(run_dir))

    async def fetch(self, digest: str) -> bytes:
        async with self.session.get(f"http://supervisor/blobs/{digest}") as response:
            if response.status != 200:
                raise LoadError(await response.text())
            return await response.read()

    async def forward_table(self, table: ModuleTable) -> ApplyReport:
        async with self.session.put("http://supervisor/table", data=table.model_dump_json(by_alias=True)) as response:
            return report_from_json(await response.json()).report

    async def node_metrics(self) -> list[VersionMetrics]:
        async with self.session.get("http://supervisor/metrics") as response:
            return metrics_from_json(await response.read())

    async def close(self) -> None:
        await self.session.close()


# -- a worker's socket: what the supervisor tells it -----------------------------------------------


class WorkerSide(Protocol):
    """What a worker does with what the supervisor sends (`edge.worker`)."""

    async def take_table(
        self, table: ModuleTable, public_key: str | None, issuer: str, conditions: Sequence[str]
    ) -> Applied: ...

    def take_key(self, public_key: str, issuer: str) -> None: ...

    def take_conditions(self, conditions: Sequence[str]) -> None: ...

    def metrics_delta(self) -> list[VersionMetrics]: ...


def worker_app(worker: WorkerSide) -> web.Application:
    """A worker's control endpoints (its unix socket; the public port is the execute server's)."""

    async def take_table(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            table = ModuleTable.model_validate(body["table"])
        except (KeyError, ValidationError) as exc:
            return web.Response(status=400, text=f"table: {exc}")
        conditions = body.get("conditions") or []
        applied = await worker.take_table(table, body.get("publicKey"), body.get("issuer") or ISSUER, conditions)
        return web.json_response(report_json(*applied))

    async def take_key(request: web.Request) -> web.Response:
        body = await request.json()
        worker.take_key(body["publicKey"], body.get("issuer") or ISSUER)
        return web.Response(status=204)

    async def take_conditions(request: web.Request) -> web.Response:
        worker.take_conditions((await request.json())["conditions"])
        return web.Response(status=204)

    async def delta(request: web.Request) -> web.Response:
        return _metrics_response(worker.metrics_delta())

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_put("/table", take_table)
    app.router.add_put("/key", take_key)
    app.router.add_put("/conditions", take_conditions)
    app.router.add_post("/delta", delta)
    app.router.add_get("/ready", ready)
    return app


class WorkerLink:
    """The supervisor's client of one worker's control socket."""

    def __init__(self, index: int, run_dir: str) -> None:
        self.index = index
        self.session = _session(worker_socket(run_dir, index))

    async def ready(self) -> bool:
        """Whether the worker answers yet (it listens on its socket once its imports are done)."""
        try:
            async with self.session.get("http://worker/ready") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    async def push_table(
        self, table: ModuleTable, public_key: str | None, issuer: str, conditions: Sequence[str]
    ) -> Applied:
        """The worker applies `table` (and takes the key and conditions with it); a refusal raises ValueError."""
        body = {
            "table": table.model_dump(mode="json", by_alias=True),
            "publicKey": public_key,
            "issuer": issuer,
            "conditions": list(conditions),
        }
        async with self.session.put("http://worker/table", json=body) as response:
            if response.status != 200:
                raise ValueError(f"worker {self.index}: table: {response.status} {await response.text()}")
            return report_from_json(await response.json())

    async def set_key(self, public_key: str, issuer: str) -> None:
        async with self.session.put("http://worker/key", json={"publicKey": public_key, "issuer": issuer}):
            pass

    async def say_conditions(self, conditions: Sequence[str]) -> None:
        async with self.session.put("http://worker/conditions", json={"conditions": list(conditions)}):
            pass

    async def delta(self) -> list[VersionMetrics]:
        """What the worker's counters gained since the previous call."""
        async with self.session.post("http://worker/delta") as response:
            return metrics_from_json(await response.read())

    async def close(self) -> None:
        await self.session.close()
