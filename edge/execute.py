"""The execute path: `POST /api/v1/wasm/execute`, from the request body to the answer.

Where it sits: `edge.server.build_app` routes execute calls to `execute_handler(node)`, which
decodes the body, asks the router for a version (`Router.pick_request`), runs the call on the node
(`Node.start`: inline on the event loop, its result at once, or on a worker thread, a coroutine to
await), counts it and answers. What one
request pays for is all here, so it is kept lean (DESIGN.md section 7; the profile before and after
is in bench/RESULTS.md):

* The body is decoded with orjson when it is installed (the stdlib's json otherwise) and used as
  it is when it has the common shape: an object of module, function, args and version at most,
  with strings of the lengths the model allows. Every other body (a command's argv or stdin, a
  field of the wrong type or length, an unknown field, JSON orjson refuses, or args holding a float
  in a body with a run of 19 digits: orjson reads an integer past 64 bits as a float where the model
  keeps an integer) goes through the `ExecuteRequest` model, so what is accepted and every error
  message stay the model's. Args of no float (a flat array of integers, say) skip the digit scan.
* The 200 answer is encoded with orjson. What orjson refuses (an integer beyond 64 bits, a lone
  surrogate, nesting past 254 levels) goes to the stdlib encoder, which answers it as before or
  refuses it the same way. orjson writes text as UTF-8 where the stdlib wrote \\u escapes (the same
  JSON), and it would write NaN and the infinities as null: results never hold them (the runtime
  answers them as strings, or refuses them).
* What depends only on the version (the answer's headers) is computed once, when the table is
  applied (`VersionSlot.answer_headers`), and a module with one version taking traffic skips the
  weighted choice and the sticky header (`Route.sole`).
* No layer that the common call does not need: the server hands a plain execute call (the exact
  path, POST, no `Expect`) to this handler past the router (`edge.server.take_execute_shortcut`);
  the application has no middlewares; the route's handler decides tracing
  (`edge.telemetry.Tracing.sample`, a `request_span` only for a sampled call) and answers failures
  as JSON (`failure_response`, which the other routes share through `edge.server.answers_json`)
  around the call's own coroutine; a 200 is written as one buffer (`PlainAnswer`: the version's
  header lines are bytes made when its table was applied) instead of an aiohttp response object;
  a short call's result comes back from `Node.start` without a coroutine of its own; a version
  under its CPU share is let through without a clock read (`CpuShare.over`), and a success is
  charged and counted in one step (`VersionSlot.served`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from aiohttp import web
from multidict import CIMultiDictProxy
from pydantic import ValidationError

from edge import telemetry
from edge.errors import BadRequestError, CpuLimitError, EdgeError, ModuleError, TrapError
from edge.loaded import CallResult
from edge.logs import REQUEST_TRACEPARENT
from edge.onepiece import OnePieceAnswer
from edge.protocol import (
    LONG_NUMBER,
    MAX_ANSWER_BYTES,
    MAX_ARGS_DEPTH,
    VERSION_HEADER,
    ExecuteRequest,
    may_nest_deeper,
    module_id,
    nests_deeper,
)
from edge.router import VersionSlot
from edge.telemetry import TRACEPARENT, request_span

if TYPE_CHECKING:
    from edge.server import Node

try:
    import orjson
except ImportError:  # pragma: no cover - the stdlib's json does the same, slower
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("hotswap.edge.server")
perf_counter = time.perf_counter
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PLAIN_FIELDS = frozenset({"module", "function", "args", "version"})
_LONG_NUMBER = LONG_NUMBER.search  # such a body goes to the model, which reads it as json does
_NO_FLOAT = frozenset({int, str, bool, type(None)})  # values orjson and json read alike, whatever their digits
_stdlib_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_loads: Callable[[bytes], Any] = orjson.loads if orjson is not None else json.loads
_decode_error: type[Exception] = orjson.JSONDecodeError if orjson is not None else ValueError


class Asked(NamedTuple):
    """What an execute body asks for: the fields the handler reads, and the model when one was built
    (a body with argv or stdin)."""

    module: str
    function: str
    args: Any
    version: str | None
    model: ExecuteRequest | None = None

    @property
    def argv(self) -> tuple[str, ...] | None:
        return self.model.argv if self.model is not None else None

    def stdin_bytes(self) -> bytes | None:
        """The raw stdin the call gives, or None; BadRequestError for both fields or bad base64."""
        try:
            return self.model.stdin_bytes() if self.model is not None else None
        except ValueError as exc:
            raise BadRequestError(f"stdin: {exc}") from None


def decode(body: bytes) -> Asked:
    """The call an execute body asks for; BadRequestError with the model's message when it is not one."""
    plain = _plain(body)
    asked = plain if plain is not None else _validated(body)
    if may_nest_deeper(body, MAX_ARGS_DEPTH + 1) and nests_deeper(asked.args, MAX_ARGS_DEPTH):
        if plain is not None:
            _validated(body)  # a body too deep for the model's parser is refused as such, as it always was
        raise BadRequestError(f"args: arrays and objects nest deeper than {MAX_ARGS_DEPTH} levels")
    return asked


def _plain(body: bytes) -> Asked | None:
    """The common body, decoded and checked without the model; None for anything else."""
    try:
        data = _loads(body)
    except (_decode_error, RecursionError):
        return None
    if type(data) is not dict or not data.keys() <= _PLAIN_FIELDS:
        return None
    module, function, version = data.get("module"), data.get("function"), data.get("version")
    if type(module) is not str or not 0 < len(module) <= 128:
        return None
    if type(function) is not str or not 0 < len(function) <= 256:
        return None
    if version is not None and type(version) is not str:
        return None
    args = data.get("args")
    # orjson reads an integer past 64 bits as a float. Only args can hold a number: args of no
    # float (a flat array of integers, strings, booleans and nulls, or one of those) are read as
    # json reads them; any other args are, unless the body has a run of 19 digits.
    if type(args) is list:
        if not set(map(type, args)) <= _NO_FLOAT and _LONG_NUMBER(body) is not None:
            return None
    elif type(args) not in _NO_FLOAT and _LONG_NUMBER(body) is not None:
        return None
    return Asked(module, function, args, version)


def _validated(body: bytes) -> Asked:
    try:
        req = ExecuteRequest.model_validate_json(body)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" and "recursion limit" in err["msg"] for err in exc.errors()):
            raise BadRequestError(
                f"body: JSON nested too deep to parse; args may nest at most {MAX_ARGS_DEPTH} levels"
            ) from None
        raise BadRequestError(validation_message(exc)) from None
    return Asked(req.module, req.function, req.args, req.version, req)


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON; ValueError or RecursionError for what JSON cannot carry. Not for NaN or the
    infinities, which orjson writes as null: no result holds them (see the module's docstring)."""
    if orjson is not None:
        try:
            return orjson.dumps(payload)
        except orjson.JSONEncodeError:
            pass  # the stdlib encoder answers it, or refuses it with its own message
    return _stdlib_encode(payload).encode()


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"error": code, "message": message, **extra}
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


def execute_handler(node: Node, prepare_signal: Sequence[object] = ()) -> Handler:
    """The execute route's handler for `node`: the tracing decision (`edge.telemetry`), the call, and
    every failure answered as JSON (`failure_response`), in one coroutine over the call's own. A 200
    answer is a `PlainAnswer` while the application's `on_response_prepare` (`prepare_signal`) has
    no receivers, a `web.Response` for them to see otherwise."""
    router = node.router
    start = node.start

    async def serve(request: web.Request) -> web.StreamResponse:
        """The call; a client's mistake or the node's refusal leaves as an EdgeError."""
        if node.auth is not None:
            node.auth.check(request.headers.get("Authorization"))
        try:
            body = await request.read()
        except ConnectionError:  # the client went away mid-body: its doing, not a failure of the node's
            raise BadRequestError("the connection closed before the body arrived") from None
        if not body:
            raise BadRequestError("the body must be a JSON object {module, function, args, version?}")
        asked = decode(body)
        slot = router.pick_request(asked.module, asked.version, request.headers)
        try:
            loaded = slot.loaded
            try:
                if asked.model is None:  # the common body: no argv or stdin to look at
                    call = loaded.prepare(asked.function, asked.args)
                else:
                    call = loaded.prepare(asked.function, asked.args, argv=asked.argv, stdin=asked.stdin_bytes())
            except ValueError as exc:  # json.dumps refusing NaN and the like
                raise BadRequestError(f"args: {exc}") from None
            started = perf_counter()
            try:
                if slot.cpu.over():
                    await _cpu_gate(node, slot)
                result = start(slot, call)  # a short call's result, or the coroutine of a longer one
                if not isinstance(result, CallResult):
                    result = await result
                duration_ms = (perf_counter() - started) * 1000
                answer = _answer(result, slot, duration_ms)
            except ModuleError as exc:
                return _module_error(slot, asked.function, exc, perf_counter() - started)
            slot.served(result.cpu_ns, duration_ms, result.violations)
        finally:
            router.release(slot)
        head = slot.answer_head
        if head is None or prepare_signal:  # a signal's receivers see a real web.Response
            return web.Response(body=answer, headers=slot.answer_headers)
        return cast(web.StreamResponse, PlainAnswer(slot, head, answer))  # aiohttp's server takes it alike

    async def execute(request: web.Request) -> web.StreamResponse:
        try:
            traceparent = request.headers.get(TRACEPARENT)
            if traceparent is not None:
                REQUEST_TRACEPARENT.set(traceparent)  # log lines carry the caller's trace id
            if telemetry.TRACING.sample(traceparent):
                return await request_span(request, serve, traceparent)
            return await serve(request)
        except Exception as exc:
            return failure_response(exc, request)

    return execute


class PlainAnswer(OnePieceAnswer):
    """A 200 execute answer written in one piece (`edge.onepiece`): the version's header lines were made
    when its table was applied (`VersionSlot.answer_head`). Only for an application with no
    `on_response_prepare` receivers."""

    __slots__ = ("slot",)

    def __init__(self, slot: VersionSlot, head: bytes, body: bytes) -> None:
        super().__init__(body, head)
        self.slot = slot

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The answer's own headers (a traced call's span reads the version from them)."""
        return self.slot.answer_headers


def failure_response(exc: Exception, request: web.Request) -> web.Response:
    """What a route answers for a failure that left its handler: an EdgeError with its status, an
    HTTP error of aiohttp's (404, 405, 413...) as JSON, anything else a logged 500; an HTTP
    exception below 400 (a redirect) is raised again, for aiohttp to answer."""
    if isinstance(exc, EdgeError):
        return error_response(exc.status, exc.code, exc.message, **exc.details)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return error_response(exc.status, HTTP_CODES.get(exc.status, "http_error"), message or exc.reason)
    log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal", "the node failed to handle this request; see its log")


def _module_error(slot: VersionSlot, function: str, exc: ModuleError, elapsed: float) -> web.Response:
    """A module's failure: counted against its version, logged, answered with its status."""
    if not isinstance(exc, CpuLimitError):
        slot.cpu.charge(int(elapsed * 1e9))
    slot.record(exc.code, elapsed * 1000, message=exc.message)
    log.warning(
        "%s@%s %s: %s: %s",
        slot.module,
        slot.version,
        function,
        exc.code,
        exc.message,
        extra={"moduleId": module_id(slot.module, slot.version)},
    )
    details = {"module": slot.module, "version": slot.version, **exc.details}
    response = error_response(exc.status, exc.code, exc.message, **details)
    response.headers[VERSION_HEADER] = slot.version
    return response


def _answer(result: CallResult, slot: VersionSlot, duration_ms: float) -> bytes:
    """The 200 answer's body; a trap when it would be over MAX_ANSWER_BYTES, which is what the
    control plane reads of an answer (JSON escapes can make it six times the module's output)."""
    payload = {"result": result.value, "module": slot.module, "version": slot.version, "durationMs": duration_ms}
    if result.exit_code is not None:
        payload["exitCode"] = result.exit_code
        payload["stderr"] = result.stderr or ""
    try:
        body = encode(payload)
    except (ValueError, RecursionError) as exc:
        raise TrapError(f"the result cannot be answered as JSON: {exc}") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise TrapError(f"the answer would be {len(body)} bytes of JSON, over the limit of {MAX_ANSWER_BYTES}")
    return body


async def _cpu_gate(node: Node, slot: VersionSlot) -> None:
    """Hold a request while its version is over its CPU share; refuse it if that would take longer
    than `cpu_max_wait` from now. Measured on the share's clock against the instant it frees (not
    by adding up sleeps: the loop's timers fall on a millisecond grid, and a request due at exactly
    `cpu_max_wait` was refused when its first sleep ended a fraction of a millisecond early)."""
    cpu = slot.cpu
    give_up = cpu.now() + node.config.cpu_max_wait
    while (free := cpu.free_at(now := cpu.now())) > now:
        if free > give_up:
            raise CpuLimitError(f"over its CPU share of {cpu.percent:g}% of a core; retry in {math.ceil(free - now)}s")
        await asyncio.sleep(free - now)
