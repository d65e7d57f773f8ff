"""An edge node's log lines: JSON (one object a line) or text, carrying the trace id and known ids.

Where it sits: under `edge.telemetry` (which names these too, for the modules that import them from
there) and the control plane's `reconciler.apply.telemetry`, which share the formats.
`setup_logging` installs either a JSON formatter (one object a line: timestamp, level, message,
traceId, edgeNodeId, moduleId, deploymentId where known) or a human-readable one. The trace id is
the current span's, else the caller's `traceparent` for this request (`REQUEST_TRACEPARENT`, set by
the execute handler); `log_context` adds fields to the lines logged inside it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

REQUEST_TRACEPARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("traceparent", default=None)
LOG_FIELDS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("log_fields", default=None)


@contextlib.contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Log lines inside carry these fields (moduleId, deploymentId, ...)."""
    token = LOG_FIELDS.set({**(LOG_FIELDS.get() or {}), **fields})
    try:
        yield
    finally:
        LOG_FIELDS.reset(token)


def current_trace_id() -> str | None:
    """The trace id (32 hex) of the current span, else of the caller's traceparent for this request."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    traceparent = REQUEST_TRACEPARENT.get()
    if traceparent and len(traceparent) == 55:
        return traceparent[3:35]
    return None


RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp, level, message, logger, traceId and the known ids."""

    def __init__(self, **static: str) -> None:
        super().__init__()
        self.static = static

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
        }
        trace_id = current_trace_id()
        if trace_id is not None:
            out["traceId"] = trace_id
        out.update(self.static)
        out.update(LOG_FIELDS.get() or {})
        for key, value in record.__dict__.items():
            if key not in RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """A line for people: time, level, logger, message, and the trace id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = current_trace_id()
        return f"{line} [trace {trace_id}]" if trace_id else line


def log_format(choice: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """json or text: the flag, else HOTSWAP_LOG_FORMAT, else text on a terminal and json otherwise."""
    chosen = (choice or environ.get("HOTSWAP_LOG_FORMAT") or "").strip().lower()
    if chosen in ("json", "text"):
        return chosen
    return "text" if sys.stdout.isatty() else "json"


def setup_logging(level: str, choice: str | None = None, **static: str) -> str:
    """Configure the root logger (stderr) in the chosen format, unless it already has handlers;
    returns the format chosen."""
    fmt = log_format(choice)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(**static) if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.setLevel(level.upper())
    if not root.handlers:  # as logging.basicConfig: a host that set up logging (pytest) keeps its own
        root.addHandler(handler)
    return fmt
