"""Durable notifications: queued in the state store's outbox, they outlive the notifier (a stop, a
SIGKILL of the whole control plane) and go out once, also when two replicas share one PostgreSQL.
Receivers are real HTTP servers that count what they were sent; the control plane killed is a real
`hotswap serve` process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.notify import Notifier, RetryPolicy, Settings
from reconciler.notify.events import Notification
from reconciler.spec.alerts import Alert, Severity
from reconciler.store.outbox import OutboxStore
from reconciler.store.state import StateStore, open_state_store
from tests.e2e.cluster import FleetRepo, kill_process, stop_process
from tests.notify.conftest import HttpReceiver, until
from tests.services import free_port

NOW = 1_800_000_000.0


def alert(receiver: HttpReceiver) -> Alert:
    return Alert.model_validate({"metadata": {"name": "ops"}, "spec": {"webhook": {"url": receiver.url()}}})


def note(i: int) -> Notification:
    return Notification("rollout.promoted", Severity.INFO, "Promoted", f"greeter: {i} is stable", NOW, "greeter")


def states(store: StateStore) -> dict[str, dict[str, int]]:
    return OutboxStore(store, "reader").states()


def ids(requests: list[object]) -> Counter[str]:
    return Counter(r.json["id"] for r in requests)  # type: ignore[attr-defined]


@pytest.fixture
def state(state_url: str) -> Iterator[StateStore]:
    store = open_state_store(database_url=state_url)
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("database_url"))


def notifier(
    receiver: HttpReceiver, store: StateStore, owner: str, retry: RetryPolicy, clock: Callable[[], float] = time.time
) -> Notifier:
    settings = Settings(retry=retry, tick_seconds=None, drain_seconds=0.2, outbox_poll_seconds=0.05)
    return Notifier([alert(receiver)], env={}, settings=settings, outbox=OutboxStore(store, owner), clock=clock)


async def test_a_notification_left_by_a_stopped_notifier_goes_out_once_on_the_next_run(
    state: StateStore, http_receiver: HttpReceiver
) -> None:
    http_receiver.mode = "fail"
    first = notifier(http_receiver, state, "first", RetryPolicy(attempts=5, first_delay=60, max_delay=60))
    first.start()
    sent = note(1)
    assert first.publish(sent) == 1
    await until(lambda: len(http_receiver.requests) == 1, "the first try, refused")
    await first.stop()  # mid-backoff: the row stays pending, with its try counted
    assert states(state) == {"ops": {"pending": 1}}

    http_receiver.mode = "ok"
    later = RetryPolicy(attempts=5, first_delay=0.01, max_delay=0.01)
    second = notifier(http_receiver, state, "second", later, clock=lambda: time.time() + 120)  # past the backoff
    second.start()
    try:
        await until(lambda: states(state) == {"ops": {"delivered": 1}}, "the row delivered by the next run")
    finally:
        await second.stop()
    assert ids(http_receiver.requests[1:]) == {sent.id: 1}
    (delivery,) = second.history
    assert (delivery.outcome, delivery.attempts, delivery.notification) == ("delivered", 2, sent)
    assert second.status()["receivers"][0]["queued"] == 0


class _HeldRelease(OutboxStore):
    """An outbox whose first write at start (freeing a dead process's claims) waits until let go."""

    def __init__(self, store: StateStore, owner: str) -> None:
        super().__init__(store, owner)
        self.entered = threading.Event()
        self.let_go = threading.Event()
        self.left = threading.Event()

    def release_claims(self) -> int:
        self.entered.set()
        try:
            self.let_go.wait(30.0)
            return super().release_claims()
        finally:
            self.left.set()


async def test_a_notifier_stopped_while_starting_closes_its_http_session(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    store = open_state_store(database_url=f"sqlite:{tmp_path / 'state.db'}")
    held = _HeldRelease(store, "starting")
    settings = Settings(tick_seconds=None, drain_seconds=0.2)
    starting = Notifier([alert(http_receiver)], env={}, settings=settings, outbox=held)
    try:
        starting.start()
        await until(held.entered.is_set, "the notifier to be freeing the outbox's claims")
        await starting.stop()  # cancelled inside its start, before it ran
        assert starting.http._session is None  # not left for the collector to warn about
    finally:
        held.let_go.set()
        await asyncio.to_thread(held.left.wait, 30.0)  # the write's thread is done with the store
        store.close()


async def test_two_replicas_on_one_postgresql_deliver_each_notification_once(
    database_url: str, http_receiver: HttpReceiver
) -> None:
    stores = [open_state_store(database_url=database_url) for _ in range(2)]
    fast = RetryPolicy(attempts=3, first_delay=0.01, max_delay=0.02, queue_size=200)
    replicas = [notifier(http_receiver, store, f"replica-{i}", fast) for i, store in enumerate(stores)]
    for replica in replicas:
        replica.start()
    try:
        published = [note(i) for i in range(40)]
        for i, sent in enumerate(published):
            replicas[i % 2].publish(sent)  # whoever saw the event writes it; either may send it
        await until(lambda: states(stores[0]) == {"ops": {"delivered": 40}}, "every row delivered", 30)
    finally:
        for replica in replicas:
            await replica.stop()
        for store in stores:
            store.close()
    assert ids(http_receiver.requests) == {n.id: 1 for n in published}
    assert sum(r.routes[0].worker.delivered for r in replicas) == 40


# -- a control plane killed with SIGKILL -----------------------------------------------------------


def serve(repo: FleetRepo, data: Path) -> subprocess.Popen[bytes]:
    with (data / "serve.log").open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "hotswap", "serve", "--repo", str(repo.root), "--path", "fleet",
                "--data-dir", str(data), "--port", str(free_port()), "--interval", "60", "--log-level", "WARNING",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


async def test_a_notification_queued_before_a_sigkill_is_delivered_once_after_the_restart(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    hook = "apiVersion: hotswap.dev/v1\nkind: Alert\nmetadata: {name: ops}\n"
    hook += f"spec:\n  webhook: {{url: {http_receiver.url()}}}\n"
    repo = FleetRepo(tmp_path / "repo")
    (repo.fleet / "alerts").mkdir()
    (repo.fleet / "alerts" / "ops.yaml").write_text(hook)
    repo.commit("an alert to a receiver that is down")
    data = tmp_path / "data"
    data.mkdir()
    http_receiver.mode = "fail"
    plane = serve(repo, data)
    try:
        await until(lambda: len(http_receiver.requests) >= 1, "the first notification's first try", 60)
        kill_process(plane)  # the plane retries after a backoff (1 s at first): killed while it waits
    finally:
        kill_process(plane)
    refused = http_receiver.requests[0].json["id"]
    before = len(http_receiver.requests)

    http_receiver.mode = "ok"
    store = open_state_store(data_dir=data)
    plane = serve(repo, data)
    try:
        await until(lambda: refused in ids(http_receiver.requests[before:]), "the refused one, after the restart", 60)
        await until(lambda: "pending" not in states(store).get("ops", {}), "every queued notification sent", 60)
    finally:
        stop_process(plane)
    delivered = ids(http_receiver.requests[before:])
    assert delivered[refused] == 1
    assert set(delivered.values()) == {1}, f"sent twice: {delivered}"
    assert states(store)["ops"]["delivered"] == len(delivered)
    store.close()
