"""PostgreSQL LISTEN on a channel of its own connection, for replicas that share one database.

Where it sits: `reconciler.apply.leader.Replicas` starts one `PgListener` per control-plane replica. What
another replica announces with NOTIFY (a node's table published, a heartbeat or a registration it
received) arrives here and is handed to `on_message`; the replica then reads the rows named from
the store. Notifications sent while the connection was down are lost, so `on_connect` runs after
every (re)connection and the replica re-reads everything it keeps.

The connection is psycopg 3's `AsyncConnection` in autocommit mode, so no callback blocks the event
loop and cancelling the task closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import psycopg
from psycopg import sql

log = logging.getLogger("hotswap.replicas")
MAX_BACKOFF_SECONDS = 5.0


class PgListener:
    """Listens on `channel` until cancelled, reconnecting with backoff when the server goes away."""

    def __init__(
        self,
        url: str,
        channel: str,
        on_message: Callable[[str], None],
        on_connect: Callable[[], Awaitable[None]],
    ) -> None:
        self.url = url
        self.channel = channel
        self.on_message = on_message
        self.on_connect = on_connect
        self.connected = asyncio.Event()  # set while LISTEN is in force
        self.connections = 0  # how many times LISTEN took effect (reconnections included)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.connected.set()
                    self.connections += 1
                    backoff = 0.1
                    await self.on_connect()
                    async for notice in conn.notifies():
                        self.on_message(notice.payload)
            except (psycopg.Error, OSError) as exc:
                log.warning("listening on %s failed (%s); again in %.1fs", self.channel, exc, backoff)
            finally:
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
