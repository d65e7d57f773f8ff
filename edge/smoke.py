"""Smoke checks: the calls a node makes to a new version right after loading it, before it gets weight.

Where it sits: `Router._load` (`edge.router`) runs `run_smoke` for every table entry that lists
smoke calls, after the health check, off the event loop (a worker thread, as a long request runs)
and under the version's own sandbox: its memory limit, its capabilities, and its `timeoutSeconds`
for each call. The outcome stays with the loaded version (`VersionSlot.smoke`):

* passed: the version takes the weight its table entry gives it;
* failed: the version takes no weight on this node (the router serves the module's other versions as
  if its weight were 0; it stays reachable with X-Hotswap-Version, to look at), and the first
  failing call is reported in words: the module's own error (`trap: wasm trap: ...`) or the result
  that did not match (`returned 6, expected 5`).

The agent ships every outcome in its heartbeats (`edge.nodeapi.SmokeReport`); the control plane's
planner holds a rollout's step until every node of it reports a pass, and rolls back on a failure.
Smoke calls are not user traffic: they count in no metric. A version is smoked once per load (a
table that keeps it loaded keeps its outcome); a change of its smoke calls loads it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from edge.errors import EdgeError
from edge.health import Invocable
from edge.protocol import SMOKE_ERROR_CHARS, ModuleEntry, SmokeCall, module_id

log = logging.getLogger("hotswap.edge.smoke")


@dataclass(frozen=True)
class SmokeOutcome:
    passed: bool
    error: str | None = None  # the first failing call and why (bounded), when not passed


def same_json(actual: Any, expected: Any) -> bool:
    """Exact JSON equality: numbers by value (5 and 5.0 match), booleans only booleans, arrays in order."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual is expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return actual == expected
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(same_json(a, e) for a, e in zip(actual, expected, strict=True))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(same_json(actual[k], expected[k]) for k in expected)
    return type(actual) is type(expected) and actual == expected


def _text(value: Any, limit: int = 120) -> str:
    try:
        text = json.dumps(value, separators=(", ", ": "), allow_nan=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(call: SmokeCall) -> str:
    """The call as a report names it: `add [3, 2]`."""
    return f"{call.function} {_text(call.args, 80)}"


async def run_smoke(loaded: Invocable, entry: ModuleEntry) -> SmokeOutcome:
    """Run the entry's smoke calls in order on `loaded`; the first failure ends the check."""
    timeout = entry.limits.timeout_seconds
    for call in entry.smoke:
        try:
            prepared = loaded.prepare(call.function, call.args)
            result = await asyncio.to_thread(loaded.invoke, prepared, timeout=timeout)
        except EdgeError as exc:
            return _failed(entry, f"smoke {describe(call)}: {exc.code}: {exc.message}")
        except ValueError as exc:  # arguments JSON cannot carry (NaN and the like)
            return _failed(entry, f"smoke {describe(call)}: bad_request: {exc}")
        value = getattr(result, "value", result)
        if call.expect is not None and not same_json(value, call.expect):
            return _failed(entry, f"smoke {describe(call)}: returned {_text(value)}, expected {_text(call.expect)}")
    return SmokeOutcome(True)


def _failed(entry: ModuleEntry, message: str) -> SmokeOutcome:
    log.warning(
        "%s@%s: %s; it takes no weight on this node",
        entry.module,
        entry.version,
        message,
        extra={"moduleId": module_id(entry.module, entry.version)},
    )
    return SmokeOutcome(False, message[:SMOKE_ERROR_CHARS])
