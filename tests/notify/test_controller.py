"""A real controller's rollout reaches a real HTTP receiver and a real SMTP server: the rollout waits
for approval, proceeds once approved, and rolls back when the new version fails; a receiver that
hangs does not hold the rollout up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge.nodeapi import Heartbeat, Registration
from edge.protocol import VersionMetrics
from reconciler.apply.controller import Controller
from reconciler.apply.nodes import NodeHub
from reconciler.apply.registry import Registry
from reconciler.notify import Notifier, Observed, RetryPolicy, Settings
from reconciler.spec.alerts import Alert
from reconciler.spec.approvals import Approval
from reconciler.spec.loader import load_fleet
from reconciler.store.blobs import open_blob_store
from reconciler.store.state import StateStore
from tests.controller.revisions import Revision, Source
from tests.notify.conftest import SECRET, HttpReceiver, SmtpServer, until
from tests.spec.fleets import ADDER_WAT, write_fleet

FLEET = """\
apiVersion: hotswap.dev/v1
kind: Fleet
metadata: {name: test}
spec:
  regions: [{name: us-east}]
  policy:
    approvals:
      rollouts: {roles: [admin], count: 1}
"""

STRATEGY = """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: canary}
spec:
  type: Canary
  canary: {steps: [50, 100], stepSeconds: 30}
  analysis: {maxErrorRate: 0.05, minRequests: 10}
  approval: {beforeStart: true}
  autoRollback: true
"""


def module(version: str) -> str:
    return f"""\
apiVersion: hotswap.dev/v1
kind: Module
metadata: {{name: adder}}
spec:
  version: {version}
  source: {{path: ../wasm/adder-{version}.wat}}
  rollout: canary
"""


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    root: Path
    clock: Clock
    source: Source
    hub: NodeHub
    controller: Controller
    commits: int = 0
    approvals: list[Approval] = field(default_factory=list)

    def commit(self, version: str) -> None:
        wat = ADDER_WAT.replace("(i32.const 1)", f"(i32.const {version.replace('.', '')})")
        write_fleet(
            self.root,
            {
                "fleet.yaml": FLEET,
                "strategies/canary.yaml": STRATEGY,
                "modules/adder.yaml": module(version),
                f"wasm/adder-{version}.wat": wat,
            },
        )
        result = load_fleet(self.root)
        assert result.fleet is not None, [str(p) for p in result.problems]
        self.commits += 1
        self.source.latest = Revision(f"{self.commits:040x}", result.fleet, tuple(self.approvals))
        self.source.history[self.source.latest.sha] = result.fleet

    def approve(self, version: str) -> None:
        self.approvals.append(Approval("adder", version, "alice@example.com", frozenset({"admin"}), "f" * 40))
        assert self.source.latest is not None
        self.source.latest = Revision(self.source.latest.sha, self.source.latest.fleet, tuple(self.approvals))

    async def beat(self, metrics: tuple[VersionMetrics, ...] = ()) -> None:
        assert await self.hub.heartbeat("edge-1", Heartbeat(metrics=metrics, cpu_percent=12.5)) is not None

    async def reconcile(self, advance: float = 1.0) -> None:
        self.clock.now += advance
        await self.beat()
        await self.controller.reconcile()


@pytest.fixture
async def world(tmp_path: Path, store: StateStore) -> AsyncIterator[World]:
    clock = Clock()
    hub = NodeHub(store, heartbeat_seconds=5, clock=clock)
    source = Source()
    registry = Registry(store, open_blob_store(None, tmp_path / "blobs"))
    controller = Controller(store=store, registry=registry, source=source, hub=hub, clock=clock)
    await hub.register(Registration(id="edge-1", region="us-east", hostname="edge-1", url="http://127.0.0.1:9"))
    yield World(tmp_path / "fleet", clock, source, hub, controller)


def alert(name: str, spec: dict[str, Any]) -> Alert:
    return Alert.model_validate({"metadata": {"name": name}, "spec": spec})


async def test_approval_proceed_and_rollback_reach_webhook_and_email(
    world: World, http_receiver: HttpReceiver, smtp_server: SmtpServer, store: StateStore
) -> None:
    http_receiver.hang_paths = {"/hangs"}
    alerts = [
        alert("everything", {"webhook": {"url": http_receiver.url("/all"), "secretEnv": "HOOK_SECRET"}}),
        alert(
            "approvers",
            {
                "eventTypes": ["rollout.awaitingApproval", "rollout.rolledBack"],
                "severity": "warning",
                "email": {
                    "to": ["approvers@example.com"],
                    "from": "hotswap@example.com",
                    "smtpHost": "127.0.0.1",
                    "smtpPort": smtp_server.port,
                    "usernameEnv": "SMTP_USER",
                    "passwordEnv": "SMTP_PASSWORD",
                },
            },
        ),
        alert("stuck", {"webhook": {"url": http_receiver.url("/hangs")}}),
    ]
    env = {"HOOK_SECRET": SECRET, "SMTP_USER": smtp_server.username, "SMTP_PASSWORD": smtp_server.password}
    notifier = Notifier(
        alerts,
        observed=Observed(rollouts=world.controller.book, revision=lambda: world.controller.state.revision),
        settings=Settings(
            retry=RetryPolicy(attempts=2, first_delay=0.01),
            tick_seconds=None,
            tls_context=smtp_server.client_tls,
            base_url="http://127.0.0.1:8080",
            drain_seconds=0,
        ),
        env=env,
        audit=store.append_audit,
    )
    world.controller.listeners.append(notifier.on_event)
    notifier.start()
    try:
        world.commit("1.0.0")
        await world.reconcile()  # nothing ran before: placed at once
        world.commit("1.1.0")
        await world.reconcile()  # beforeStart: waits for an approval
        waiting_revision = world.source.latest.sha if world.source.latest else None
        await world.reconcile(10)  # still waiting: nothing new to say
        world.approve("1.1.0")
        await world.reconcile()  # approved: step 0 (50 %)
        failing = VersionMetrics(module="adder", version="1.1.0", requests=40, errors=20)
        world.clock.now += 2
        await world.beat((failing,))
        await world.reconcile()  # 50 % errors: rolled back without waiting for the step's end

        expected = [
            "rollout.started",
            "rollout.promoted",
            "rollout.started",
            "rollout.awaitingApproval",
            "rollout.approved",
            "rollout.rolledBack",
        ]
        # Every pass finished although the "stuck" receiver never answered its first request.
        assert len(http_receiver.bodies("/hangs")) <= 1
        await until(lambda: http_receiver.types("/all") == expected, "the rollout's events at the webhook")
        await until(lambda: len(smtp_server.mails) == 2, "two mails")
        # A mail lands at the server before the sender has finished and recorded its delivery.
        await until(
            lambda: sum(r.worker.delivered for r in notifier.routes if r.alert.metadata.name == "approvers") == 2,
            "both mails recorded as delivered",
        )

        def audited_mails() -> int:  # the audit line follows the delivery, from the sender's thread
            return sum(
                1 for e in store.audit_log(limit=500) if (e.action, e.subject) == ("notify.delivered", "approvers")
            )

        await until(lambda: audited_mails() == 2, "both mails in the audit log")
    finally:
        http_receiver.release.set()
        await notifier.stop()

    bodies = http_receiver.bodies("/all")
    assert all(r.verified for r in http_receiver.requests if r.path == "/all")
    waiting, approved, rolled_back = bodies[3], bodies[4], bodies[5]
    assert waiting["action"] == "hotswap approve adder@1.1.0"
    assert (waiting["version"], waiting["previousVersion"], waiting["deploymentId"]) == ("1.1.0", "1.0.0", "adder-r2")
    assert waiting["revision"] == waiting_revision
    assert waiting["link"] == "http://127.0.0.1:8080/api/v1/wasm/deployments/adder-r2"
    assert approved["details"]["percent"] == 50
    assert rolled_back["severity"] == "error" and rolled_back["details"]["cause"] == "ErrorRateTooHigh"
    assert "back to 1.0.0" in rolled_back["message"]

    subjects = [m.message["Subject"] for m in smtp_server.mails]
    assert subjects == [
        "[hotswap warning] rollout.awaitingApproval adder@1.1.0",
        "[hotswap error] rollout.rolledBack adder@1.1.0",
    ]
    body = smtp_server.mails[0].message.get_payload(decode=True)
    assert isinstance(body, bytes) and b"To act: hotswap approve adder@1.1.0" in body

    audited = [(e.action, e.subject) for e in store.audit_log(limit=500) if e.actor == "notifier"]
    assert audited.count(("notify.delivered", "everything")) == 6
    assert audited.count(("notify.delivered", "approvers")) == 2
