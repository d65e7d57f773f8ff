"""The console's live stream: what changed on the control plane, as server-sent events.

Where it sits: the control plane (reconciler/server.py) builds one `Broadcaster` and ties it to
three sources: the controller's event listeners (`{"kind": "event"}`), the end of every reconcile
pass (`{"kind": "pass"}`, seen through `Controller.wait_for_pass`), and the node hub's "look again"
poke (`{"kind": "nodes"}`, at most one per NODES_EVERY seconds). `GET /ui/events`
(reconciler/ui/routes.py) subscribes and writes each message as `data: <json>`.

Publishing never blocks: each subscriber has a bounded queue, and one that falls QUEUE_SIZE messages
behind is dropped (its stream ends; the browser's EventSource reconnects and reloads). Streams are
capped in total and per subject; `close()` ends every stream at once, so a stopping plane does not
wait on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.apply.controller import Controller
from reconciler.apply.executor import Event
from reconciler.errors import ReconcilerError

log = logging.getLogger("hotswap.ui")
QUEUE_SIZE = 256
MAX_STREAMS = 200
MAX_STREAMS_PER_SUBJECT = 20
NODES_EVERY = 0.25
KEEPALIVE_SECONDS = 15.0


class StreamsFullError(ReconcilerError):
    """No room for another stream (in total, or for this subject); the message says which."""


@dataclass(eq=False)
class Subscriber:
    """One open stream: messages waiting to be written, and whether it must end."""

    subject: str
    pending: deque[bytes] = field(default_factory=deque)
    closed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, data: bytes) -> None:
        if self.closed:
            return
        if len(self.pending) >= QUEUE_SIZE:  # too slow: end it rather than grow
            self.close()
            return
        self.pending.append(data)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.pending.clear()
        self.wake.set()

    async def next(self, timeout: float) -> bytes | None:
        """The next message; None when `timeout` passed without one (time for a keepalive).
        Raises EOFError when the stream must end."""
        if not self.pending and not self.closed:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
        if self.closed:
            raise EOFError
        return self.pending.popleft() if self.pending else None


def encode(message: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(message, separators=(',', ':'))}\n\n".encode()


@dataclass(eq=False)
class Broadcaster:
    """Fans messages out to every open stream, on the event loop that created it."""

    max_streams: int = MAX_STREAMS
    max_per_subject: int = MAX_STREAMS_PER_SUBJECT
    clock: Callable[[], float] = time.monotonic
    _subscribers: set[Subscriber] = field(default_factory=set)
    _closed: bool = False
    _loop: asyncio.AbstractEventLoop | None = None
    _nodes_at: float = float("-inf")
    _nodes_due: asyncio.TimerHandle | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # -- subscribers ------------------------------------------------------------------------------

    def subscribe(self, subject: str) -> Subscriber:
        if self._closed:
            raise StreamsFullError("the control plane is stopping")
        if len(self._subscribers) >= self.max_streams:
            raise StreamsFullError(f"{self.max_streams} live streams are open; try again later")
        mine = Counter(s.subject for s in self._subscribers)[subject]
        if mine >= self.max_per_subject:
            raise StreamsFullError(f"{subject} has {mine} live streams open (at most {self.max_per_subject})")
        subscriber = Subscriber(subject)
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.close()
        self._subscribers.discard(subscriber)

    @property
    def streams(self) -> int:
        return len(self._subscribers)

    def publish(self, message: dict[str, Any]) -> None:
        """Queue `message` for every stream; safe from any thread, never blocks."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._send(encode(message))
        else:
            loop.call_soon_threadsafe(self._send, encode(message))

    def _send(self, data: bytes) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(data)
            if subscriber.closed:
                self._subscribers.discard(subscriber)

    # -- sources ----------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """A controller listener: every event, as the notifier sees it."""
        self.publish({"kind": "event", "event": event.to_json()})

    def nodes_changed(self) -> None:
        """The node hub says "look again": one `nodes` message, at most every NODES_EVERY seconds."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            loop.call_soon_threadsafe(self.nodes_changed)
            return
        if self._nodes_due is not None:
            return  # one is already on its way
        delay = max(0.0, self._nodes_at + NODES_EVERY - self.clock())
        self._nodes_due = loop.call_later(delay, self._send_nodes)

    def _send_nodes(self) -> None:
        self._nodes_due = None
        self._nodes_at = self.clock()
        self._send(encode({"kind": "nodes"}))

    async def _passes(self, controller: Controller) -> None:
        seen = controller.state.passes
        while True:
            if await controller.wait_for_pass(seen, 60.0):
                seen = controller.state.passes
                state = controller.state
                self._send(encode({"kind": "pass", "revision": state.revision, "at": state.at}))

    def start(self, controller: Controller) -> None:
        """Listen to `controller` (its events and passes) from the running loop."""
        self._loop = asyncio.get_running_loop()
        controller.listeners.append(self.on_event)
        self._tasks.append(asyncio.create_task(self._passes(controller), name="ui-passes"))

    async def close(self) -> None:
        """End every stream and stop listening; new subscriptions are refused."""
        self._closed = True
        if self._nodes_due is not None:
            self._nodes_due.cancel()
        for subscriber in list(self._subscribers):
            self.unsubscribe(subscriber)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
