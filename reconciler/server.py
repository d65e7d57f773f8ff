"""The control plane as one process: stores, registry, Git source, node hub, controller, HTTP API.

`hotswap serve` and `hotswap up` build a `ControlPlane` from `ServeOptions` and run it until
cancelled. Three loops share one event loop: the Git source (fetch on interval, webhook, file
watch), the controller (reconcile when poked or when a rollout's step is due), and the aiohttp
server (API and node protocol). Every resource opens in `start()` and closes in `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from edge.protocol import module_id
from reconciler.api import diff as diff_routes
from reconciler.api import observe
from reconciler.api.app import ROUTE_FILES, create_app
from reconciler.api.auth import AuthOptions, TokenAuthority
from reconciler.api.base import ANY_ROLE, ApiDeps, public, require
from reconciler.api.control import ControlDeps, routes
from reconciler.api.security import RateLimits, bearer, limiter_for, tls_context
from reconciler.apply.controller import Controller
from reconciler.apply.freezing import LongLivedFreezer, collect_in_full_rarely, limit_malloc_arenas
from reconciler.apply.leader import Replicas
from reconciler.apply.nodes import NodeHub
from reconciler.apply.registry import Registry
from reconciler.apply.rollouts import RolloutBook
from reconciler.apply.telemetry import ApprovalAudit, Telemetry
from reconciler.apply.updates import UpdateAutomation
from reconciler.gitsource.gitrepo import GitRepo
from reconciler.gitsource.gitwrite import GitWriter, WriterConfig
from reconciler.gitsource.source import GitSource, Revision, SourceConfig
from reconciler.gitsource.trust import TrustRoot, load_trust
from reconciler.gitsource.verify import authorised, on_behalf
from reconciler.gitsource.webhook import webhook_handler
from reconciler.notify import Notifier, Settings
from reconciler.notify import Observed as NotifierInputs
from reconciler.planner import latest_records
from reconciler.spec.alerts import Alert
from reconciler.spec.limits import InputLimits
from reconciler.store.blobs import open_blob_store
from reconciler.store.errors import StoreError
from reconciler.store.outbox import OutboxStore
from reconciler.store.state import StateStore, open_state_store
from reconciler.ui import routes as ui_routes
from reconciler.ui.events import Broadcaster
from reconciler.ui.sessions import LoginLinks, Sessions, with_sessions

log = logging.getLogger("hotswap.serve")
STOP_SECONDS = 5.0
T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run the control plane's `main` to its end on uvloop, as the edge node does, or on asyncio's own
    loop where uvloop is not installed. The node protocol is many small requests on one loop, and
    uvloop's transports and scheduling are C where asyncio's are Python (bench/RESULTS.md)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency wherever it builds
        return asyncio.run(main)
    return uvloop.run(main)


async def finish(tasks: list[asyncio.Task[Any]], *, rounds: int = 10) -> None:
    """Cancel `tasks` and wait for them to end. A task still running a second after its cancel is
    cancelled again: a cancel can be lost (Python 3.11's `asyncio.wait_for` drops one that arrives in
    the turn its future completes), and a stop must not wait forever on one."""
    pending = {task for task in tasks if not task.done()}
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
        for task in pending:
            log.warning("task %s is still running after its cancel; cancelling it again", task.get_name())
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a task that failed before the stop was logged where it failed


@dataclass(frozen=True)
class ServeOptions:
    repo: str
    branch: str = "main"
    path: str = ""
    trust: Path | None = None
    data_dir: Path = Path(".hotswap")
    database_url: str | None = None
    blob_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    interval: float = 30.0
    heartbeat_seconds: float = 5.0
    webhook_secret: str | None = None
    auth: AuthOptions = field(default_factory=AuthOptions)
    rate_limits: RateLimits = field(default_factory=RateLimits)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    input_limits: InputLimits = field(default_factory=InputLimits)  # caps on a fleet revision
    git_signing_key: Path | None = None  # signs API commits (default <data-dir>/auth/git-signing-key)


@dataclass
class ControlPlane:
    options: ServeOptions
    store: StateStore = field(init=False)
    registry: Registry = field(init=False)
    source: GitSource = field(init=False)
    hub: NodeHub = field(init=False)
    controller: Controller = field(init=False)
    telemetry: Telemetry = field(init=False)  # spans, OTLP export, /metrics (reconciler.apply.telemetry)
    authority: TokenAuthority = field(init=False)  # mints and checks tokens (reconciler.api.auth)
    writer: GitWriter = field(init=False)  # API writes as signed commits (reconciler.gitsource.gitwrite)
    app: web.Application = field(init=False)
    url: str = ""
    notifier: Notifier | None = None
    replicas: Replicas | None = None  # several replicas on one PostgreSQL (reconciler.apply.leader)
    sessions: Sessions = field(init=False)  # the web console's cookie sessions (reconciler.ui.sessions)
    links: LoginLinks = field(default_factory=LoginLinks)  # one-time console sign-in links
    broadcaster: Broadcaster = field(default_factory=Broadcaster)  # the console's live stream
    _runner: web.AppRunner | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def build(self) -> None:
        options = self.options
        options.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = open_state_store(database_url=options.database_url, data_dir=options.data_dir)
        blobs = open_blob_store(options.blob_url, options.data_dir)
        self.telemetry = Telemetry()
        self.registry = Registry(
            self.store,
            blobs,
            tracer=self.telemetry.tracer("hotswap.registry"),
            observer=self.telemetry.registry_metrics,
        )
        trust = load_trust(options.trust) if options.trust else TrustRoot(principals=())
        applied = self.store.last_applied_revision()
        self.source = GitSource(
            SourceConfig(
                url=options.repo,
                branch=options.branch,
                path=options.path,
                interval=options.interval,
                limits=options.input_limits,
            ),
            trust,
            options.data_dir / "git",
            last_applied=applied.sha if applied else None,
        )
        self.authority = TokenAuthority.load(options.auth, options.data_dir)
        self.sessions = Sessions(self.authority, secure=bool(options.tls_cert and options.tls_key))
        self.writer = GitWriter(
            WriterConfig(
                url=options.repo,
                branch=options.branch,
                path=options.path,
                work_dir=options.data_dir / "git" / "api-work",
                key=options.git_signing_key or options.data_dir / "auth" / "git-signing-key",
            ),
            vet=self.vet_commit,
        )
        if options.database_url and self.store.dialect.name == "postgresql":
            self.replicas = Replicas(self.store, options.database_url)
        self.hub = NodeHub(
            self.store,
            heartbeat_seconds=options.heartbeat_seconds,
            public_key=self.authority.public_key_pem,
            issuer=self.authority.options.issuer,
            signer=self.authority.sign,  # module tables are signed: a node serves one from disk (edge.tablecache)
            metrics=self.telemetry.window,  # also keeps cumulative totals for /metrics
            poke=self._nodes_changed,  # reads self.controller when a node changes, once it is built
            peers=self.replicas,
        )
        self.book = RolloutBook(self.store)
        self.controller = Controller(
            store=self.store,
            book=self.book,
            registry=self.registry,
            source=self.source,
            hub=self.hub,
            tracing=self.telemetry.deployments,
            role=self.replicas.role if self.replicas is not None else None,
            before_pass=self.replicas.before_pass if self.replicas is not None else None,
        )
        self.control = control = ControlDeps(
            controller=self.controller,
            hub=self.hub,
            book=self.book,
            store=self.store,
            source_status=self.source_status,
            authority=self.authority,
            writer=self.writer,
            accept_rewrite=self.accept_rewrite,
            adopt_roles=trust.roles.adopt,
            trust=trust,
        )
        api = ApiDeps(
            registry=self.registry,
            modules_in_use=self.modules_in_use,
            authenticate=with_sessions(bearer(self.authority), self.sessions),
            limiter=limiter_for(self.store, options.rate_limits),
            registered=self.controller.poke,
        )
        refs = diff_routes.RefReader(
            url=options.repo,
            branch=options.branch,
            path=self.source.path,
            work_dir=options.data_dir / "git",
            limits=options.input_limits,
            parse=self.source.parse,
            trust=trust,
            verifier=self.source.verifier,
        )
        self.app = create_app(
            api, (*ROUTE_FILES, routes(control), observe.setup(self.telemetry), diff_routes.setup(refs))
        )
        self.app.router.add_get("/api/v1/wasm/notifications", self._notifications)
        ui_routes.setup(self.app, ui_routes.UiDeps(self.sessions, self.links, self.broadcaster))
        if options.webhook_secret:
            self.app.router.add_post(
                "/api/v1/wasm/webhook",
                public(webhook_handler(options.webhook_secret, self.source.trigger, branch=options.branch)),
            )

    def _nodes_changed(self) -> None:
        """The hub's "look again": the controller's poke, and a `nodes` message on the console's stream."""
        self.controller.poke()
        self.broadcaster.nodes_changed()

    def login_link(self, subject: str = "up", roles: tuple[str, ...] = ("admin",), ttl: float = 900.0) -> str:
        """A one-time link that signs its first visitor in to the console as `subject` with `roles`
        (`hotswap up` prints one): `<url>/ui/login/<code>`, unusable after one use or `ttl` seconds."""
        return f"{self.url}/ui/login/{self.links.create(subject, roles, ttl)}"

    async def _notifications(self, request: web.Request) -> web.Response:
        """Receivers, their states and recent deliveries; active scaling signals."""
        require(request, *ANY_ROLE)
        return web.json_response(self.notifier.status() if self.notifier is not None else {})

    def mint(self, subject: str, *roles: str, ttl_seconds: float | None = None, audience: str | None = None) -> str:
        """A token signed by this control plane (`hotswap up` gives one to each node it starts); the
        API's audience unless another is named (reconciler.api.auth.EDGE_AUDIENCE for calls to nodes)."""
        return self.authority.mint(subject, roles, ttl_seconds=ttl_seconds, audience=audience)

    def signing_required(self) -> bool:
        """Whether the Git source verifies new commits now (the trust root's or the fleet's policy)."""
        latest = self.source.latest
        fleet = latest.fleet if latest is not None else None
        return self.source.trust.require_signed_commits or bool(fleet and fleet.policy.require_signed_commits)

    def vet_commit(self, repo: GitRepo, sha: str) -> str | None:
        """Why the Git source would refuse the API commit `sha` (made in the writer's clone), or None."""
        if not self.signing_required():
            return None
        trust = self.source.trust
        commit = repo.commits([sha])[0]
        check = self.source.verifier.check(repo, [sha])[sha]
        trees = repo.trees([sha, *commit.parents[:1]])
        changes = not commit.parents or trees[sha] != trees[commit.parents[0]]
        verdict = authorised(on_behalf(check, commit, trust), commit, changes, trust.roles)
        return None if verdict.trusted else verdict.reason

    def accept_rewrite(self, head: str) -> None:
        self.source.accept_history_rewrite(head)
        self.source.trigger()

    def source_status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.source.status().to_json()
        return status

    def modules_in_use(self) -> set[str]:
        """Module ids that desired state or a rollout still needs (never deleted nor pruned)."""
        used: set[str] = set()
        revision = self.source.latest
        if revision is not None and revision.fleet is not None:
            used.update(revision.fleet.module_ids())
        for record in latest_records(self.book.records()).values():
            used.add(module_id(record.module, record.target.version))
            if record.previous is not None:
                used.add(module_id(record.module, record.previous.version))
        return used

    async def start(self) -> None:
        self.build()
        collect_in_full_rarely()
        limit_malloc_arenas()
        # A stop waits at most 5 s for requests in flight (aiohttp's default is 60 s): long-polls are
        # answered at once by the closing hub, and a forwarded execute call may be cut.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=STOP_SECONDS)
        await self._runner.setup()
        options = self.options
        tls = tls_context(options.tls_cert, options.tls_key) if options.tls_cert and options.tls_key else None
        site = web.TCPSite(self._runner, options.host, options.port, reuse_address=True, ssl_context=tls)
        await site.start()
        port = self._runner.addresses[0][1] if self._runner.addresses else options.port
        self.url = f"{'https' if tls else 'http'}://{options.host}:{port}"

        self.telemetry.export_metrics(partial(observe.samples, self.control, self.telemetry), self.url)
        approvals = ApprovalAudit(self.store)

        async def on_revision(revision: Revision) -> None:
            if self.notifier is not None and revision.fleet is not None:
                self.notifier.update_alerts(list(revision.fleet.alerts.values()))
            self.controller.poke()
            with contextlib.suppress(StoreError):  # the audit must not stop the source
                await asyncio.to_thread(approvals.record, revision.approvals, revision.rejected_approvals)
                for recovery in revision.verification.recoveries:  # signed reverts and adoptions
                    await asyncio.to_thread(
                        self.store.append_audit,
                        recovery.principal,
                        f"source.{recovery.kind}",
                        recovery.commit,
                        {"covered": list(recovery.covered), "anchor": recovery.anchor, "message": recovery.describe()},
                    )

        self.broadcaster.start(self.controller)
        self.freezer = LongLivedFreezer(self.hub.count)
        self._tasks = [
            asyncio.create_task(self.freezer.run(), name="gc-freeze"),
            asyncio.create_task(self.source.run(on_revision), name="git-source"),
            asyncio.create_task(UpdateAutomation(self.controller, self.writer).run(), name="module-updates"),
            asyncio.create_task(
                self.replicas.run(self.controller) if self.replicas is not None else self.controller.run(),
                name="controller",
            ),
        ]
        self.notifier = self.install_notifier([])
        log.info("control plane listening on %s, following %s", self.url, self.options.repo)

    def install_notifier(self, alerts: Sequence[Alert], settings: Settings | None = None) -> Notifier:
        """A notifier for this started plane (in its event loop): it listens to the controller, watches
        the Git source and the nodes, audits to the store, and stops with the plane."""
        controller = self.controller
        chosen = settings or Settings()

        def desired_version(module: str) -> str | None:
            latest = self.source.latest
            found = latest.fleet.modules.get(module) if latest is not None and latest.fleet is not None else None
            return found.spec.version if found is not None else None

        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        notifier = Notifier(
            alerts,
            observed=NotifierInputs(
                rollouts=self.book,
                source_status=self.source.status,
                controller_stall=controller.stalled_condition,
                nodes=self.hub.view,
                node_changes=self.hub.watch().take,
                revision=lambda: controller.state.revision,
                desired_version=desired_version,
                leading=lambda: controller.leader,
            ),
            settings=replace(chosen, base_url=chosen.base_url or self.url),
            audit=self.store.append_audit,
            outbox=OutboxStore(self.store, owner),
        )
        controller.listeners.append(notifier.on_event)
        self._tasks.append(notifier.start())
        return notifier

    async def stop(self) -> None:
        await self.broadcaster.close()  # open console streams end now, not at the runner's timeout
        if self.notifier is not None:
            await self.notifier.stop()  # queued notifications get a last chance
        self.hub.close()
        await finish(self._tasks)
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.close()
        await asyncio.to_thread(self.telemetry.shutdown)  # the last spans go out

    async def serve_forever(self, ready: Callable[[ControlPlane], None] | None = None) -> None:
        await self.start()
        try:
            if ready is not None:
                ready(self)
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()
