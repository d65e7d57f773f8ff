"""The notifier's own loop, driven with a test clock: node health and scaling signals reach an
autoscaler's webhook, active signals show in status, and a listener never raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from reconciler.apply.executor import Event
from reconciler.notify import Notifier, Observed, RetryPolicy, Settings
from reconciler.planner import RolloutRecord
from reconciler.spec.alerts import Alert
from tests.notify.conftest import HttpReceiver, until

T0 = 1_800_000_000.0


@dataclass(frozen=True)
class View:
    id: str
    region: str
    status: str = "Healthy"
    cpu_percent: float = 50.0
    max_modules: int = 1000
    running: tuple[tuple[str, str, str, int], ...] = ()
    last_heartbeat: float | None = T0


@dataclass
class Nodes:
    views: list[View]

    def __call__(self, now: float) -> list[View]:
        return self.views


@pytest.fixture
async def autoscaler(http_receiver: HttpReceiver) -> AsyncIterator[tuple[Notifier, Nodes]]:
    nodes = Nodes([View("a", "us-east"), View("b", "us-east"), View("c", "eu-central")])
    alert = Alert.model_validate(
        {
            "metadata": {"name": "autoscaler"},
            "spec": {"eventTypes": ["scaling.*", "node.*"], "webhook": {"url": http_receiver.url("/scale")}},
        }
    )
    notifier = Notifier(
        [alert],
        observed=Observed(nodes=nodes),
        settings=Settings(retry=RetryPolicy(attempts=1), tick_seconds=None, node_grace_seconds=0),
        env={},
    )
    notifier.start()
    yield notifier, nodes
    await notifier.stop()


async def test_scaling_signals_reach_the_autoscaler_and_show_in_status(
    autoscaler: tuple[Notifier, Nodes], http_receiver: HttpReceiver
) -> None:
    notifier, nodes = autoscaler
    nodes.views[:2] = [View("a", "us-east", cpu_percent=90), View("b", "us-east", cpu_percent=80)]
    for second in range(0, 300, 5):  # a heartbeat's worth of samples every 5 s for 5 minutes
        assert notifier.tick(T0 + second) == []
    [up] = notifier.tick(T0 + 300)
    assert (up.type, up.region) == ("scaling.scaleUp", "us-east")
    [signal] = notifier.status()["scaling"]
    assert (signal["region"], signal["trigger"], signal["direction"], signal["value"]) == (
        "us-east",
        "HighCpu",
        "up",
        85,
    )
    await until(lambda: http_receiver.types("/scale") == ["scaling.scaleUp"], "the scale-up call")
    body = http_receiver.bodies("/scale")[0]
    assert body["region"] == "us-east" and body["details"]["threshold"] == 70 and body["details"]["nodes"] == 2

    nodes.views[:2] = [View("a", "us-east", cpu_percent=40), View("b", "us-east", cpu_percent=40)]
    [cleared] = notifier.tick(T0 + 305)
    assert cleared.type == "scaling.cleared" and notifier.status()["scaling"] == []
    await until(lambda: len(http_receiver.bodies("/scale")) == 2, "the withdrawal")


async def test_node_health_reaches_the_webhook(autoscaler: tuple[Notifier, Nodes], http_receiver: HttpReceiver) -> None:
    notifier, nodes = autoscaler
    assert notifier.tick(T0) == []
    nodes.views[2] = View("c", "eu-central", status="Unhealthy", last_heartbeat=T0 - 20)
    [down] = notifier.tick(T0 + 1)
    assert (down.type, down.node) == ("node.unhealthy", "c")
    nodes.views[2] = View("c", "eu-central")
    notifier.tick(T0 + 2)
    await until(lambda: http_receiver.types("/scale") == ["node.unhealthy", "node.recovered"], "both node events")


class BrokenBook:
    def get(self, rollout_id: str) -> RolloutRecord | None:
        raise RuntimeError("the book is on fire")

    def revision_of(self, rollout_id: str) -> str | None:
        return None


def test_a_listener_never_raises_into_the_controller() -> None:
    notifier = Notifier([], observed=Observed(rollouts=BrokenBook()), env={})
    notifier.on_event(Event(T0, "Promoted", "greeter: 1.2.0 is stable", "greeter", "greeter-r2"))
    assert notifier.published == 0


def test_events_about_a_module_name_the_desired_version() -> None:
    notifier = Notifier([], observed=Observed(desired_version={"greeter": "2.0.0"}.get), env={})
    notifier.on_event(Event(T0, "AwaitingInterfaceApproval", "greeter: breaking change", "greeter", None, True))
    [n] = notifier.recent
    assert (n.version, n.action) == ("2.0.0", "hotswap approve greeter@2.0.0")


def webhook_alert(name: str, url: str, **spec: object) -> Alert:
    return Alert.model_validate({"metadata": {"name": name}, "spec": {**spec, "webhook": {"url": url}}})


async def test_alerts_follow_new_revisions(http_receiver: HttpReceiver) -> None:
    notifier = Notifier(
        [webhook_alert("a", http_receiver.url("/a")), webhook_alert("b", http_receiver.url("/b"))], env={}
    )
    notifier.start()
    try:
        notifier.on_event(Event(T0, "Promoted", "greeter: 1.2.0 is stable", "greeter", None))
        await until(lambda: len(http_receiver.requests) == 2, "both alerts")
        kept = notifier.routes[0].worker
        notifier.update_alerts(
            [
                webhook_alert("a", http_receiver.url("/a")),  # unchanged: keeps its worker and counters
                webhook_alert("b", http_receiver.url("/b"), severity="error"),  # changed: a new worker
                webhook_alert("c", http_receiver.url("/c")),  # new
            ]
        )
        assert notifier.routes[0].worker is kept and kept.delivered == 1
        assert notifier.routes[1].worker.delivered == 0
        notifier.on_event(Event(T0, "Promoted", "calc: 1.0.1 is stable", "calc", None))
        await until(lambda: len(http_receiver.bodies("/c")) == 1, "the new alert")
        notifier.update_alerts([webhook_alert("c", http_receiver.url("/c"))])  # a and b removed
        notifier.on_event(Event(T0, "Promoted", "wc: 2.0.0 is stable", "wc", None))
        await until(lambda: len(http_receiver.bodies("/c")) == 2, "the remaining alert")
        assert await notifier.drain(1.0)
        assert [len(http_receiver.bodies(p)) for p in ("/a", "/b", "/c")] == [2, 1, 2]
        assert [r["alert"] for r in notifier.status()["receivers"]] == ["c"]
    finally:
        await notifier.stop()
