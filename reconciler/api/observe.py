"""Routes for watching the control plane: its metrics and its audit log.

    GET /metrics                 Prometheus text of every metric the spec names (reconciler.apply.telemetry);
                                 any role (a scraper uses a viewer token: `hotswap token --role viewer`)
    GET /api/v1/wasm/audit       the append-only audit log, oldest first: ?subject=&after=SEQ&limit=N,
                                 filtered on the server by ?action= and ?q= (`next` goes on from there)
                                 (any role): registry changes, deployment steps, approvals, rollbacks

`setup(telemetry)` returns the route file's setup, bound to the running control plane's telemetry;
the rollout book, node hub and store come from the control routes (`reconciler.api.control.ControlDeps`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from reconciler.api.base import ANY_ROLE, ApiDeps, bad_request, query_whole, require
from reconciler.api.control import CONTROL, ControlDeps
from reconciler.apply.noderows import NodeView
from reconciler.apply.telemetry import Sample, Telemetry, plane_samples, render_metrics
from reconciler.planner import RolloutRecord
from reconciler.store.audit import AuditLog
from reconciler.store.records import AuditEntry

TELEMETRY = web.AppKey("telemetry", Telemetry)
MAX_AUDIT_LIMIT = 1000
AUDIT_LIMIT = 100  # lines an audit call answers without ?limit=
MAX_AUDIT_SCAN = 20 * MAX_AUDIT_LIMIT  # lines one filtered call reads; `next` says where to go on


def fleet(control: ControlDeps) -> tuple[tuple[RolloutRecord, ...], list[NodeView], int]:
    """What the metrics describe: the rollout records, the nodes, and how many modules Git wants."""
    revision = control.controller.source.latest
    modules = len(revision.fleet.modules) if revision is not None and revision.fleet is not None else 0
    return control.book.records(), control.hub.view(), modules


def samples(control: ControlDeps, telemetry: Telemetry) -> list[Sample]:
    """The same metrics as OTLP samples (`Telemetry.export_metrics` reads them on its own thread)."""
    return plane_samples(telemetry, *fleet(control))


async def metrics(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    text = render_metrics(request.app[TELEMETRY], *fleet(request.app[CONTROL]))
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def audit(request: web.Request) -> web.Response:
    require(request, *ANY_ROLE)
    store = request.app[CONTROL].store
    subject = request.query.get("subject") or None
    after = query_whole(request, "after", 0, 2**62) or 0
    limit = query_whole(request, "limit", 1, MAX_AUDIT_LIMIT) or AUDIT_LIMIT
    action = request.query.get("action") or None
    q = request.query.get("q") or None
    if q is not None and len(q) > 200:
        raise bad_request("q", "at most 200 characters")  # as on the other list routes
    if action is None and q is None:
        entries = await asyncio.to_thread(store.audit_log, subject=subject, after=after, limit=limit)
        last = entries[-1].seq if entries else after
    else:
        wanted = AuditFilter(action, q.casefold() if q else None)
        entries, last = await asyncio.to_thread(wanted.scan, store, subject, after, limit)
    return web.json_response(
        {
            "entries": [
                {
                    "seq": e.seq,
                    "at": e.at.isoformat().replace("+00:00", "Z"),
                    "actor": e.actor,
                    "action": e.action,
                    "subject": e.subject,
                    "detail": e.detail,
                }
                for e in entries
            ],
            "next": last,
        }
    )


@dataclass(frozen=True)
class AuditFilter:
    """`?action=` (exact, or a prefix ending in `.`: `rollout.`) and `?q=` (case-insensitive, over actor,
    action, subject and detail), applied on the server over at most MAX_AUDIT_SCAN lines per call."""

    action: str | None
    q: str | None

    def matches(self, entry: AuditEntry) -> bool:
        if self.action is not None and not (
            entry.action == self.action or (self.action.endswith(".") and entry.action.startswith(self.action))
        ):
            return False
        if self.q is None:
            return True
        text = f"{entry.actor}\n{entry.action}\n{entry.subject}\n{json.dumps(entry.detail)}"
        return self.q in text.casefold()

    def scan(self, store: AuditLog, subject: str | None, after: int, limit: int) -> tuple[list[AuditEntry], int]:
        """Matching lines after `after` (at most `limit`) and the last sequence number looked at."""
        found: list[AuditEntry] = []
        last, scanned = after, 0
        while len(found) < limit and scanned < MAX_AUDIT_SCAN:
            batch = store.audit_log(subject=subject, after=last, limit=MAX_AUDIT_LIMIT)
            for entry in batch:
                last, scanned = entry.seq, scanned + 1
                if self.matches(entry):
                    found.append(entry)
                    if len(found) == limit:
                        break
            if len(batch) < MAX_AUDIT_LIMIT:
                break
        return found, last


def setup(telemetry: Telemetry) -> Callable[[web.Application, ApiDeps], None]:
    def install(app: web.Application, deps: ApiDeps) -> None:
        app[TELEMETRY] = telemetry
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/api/v1/wasm/audit", audit)

    return install
