"""`hotswap exec FILE.wasm|.wat FUNCTION [ARG ...]`: one call in the edge runtime and sandbox.

Like `wasmtime run --invoke`, but with the node's limits, WASI sandbox and calling conventions.
Each ARG is read as JSON when it parses (`3`, `"x"`, `{"a": 1}`) and as a string otherwise; JSON
nested deeper than an execute call's args may be (64 levels) is refused, as the node does. A
numeric export gets the ARGs as its parameters; a json or command export gets the single ARG as
its input (several ARGs become an array, none becomes null). Prints the result as JSON; a failure
prints `{"error", "message", ...}` to stderr and exits 1.

A command (`_start`) can instead be called the way its program expects, as a node's execute call
with `argv` and `stdin` does:

    hotswap exec python.wasm _start --argv -c 'import sys; print(sys.stdin.read())' --stdin @in.txt

`--argv` takes the program's arguments (argv[0], the program name, is the file's stem) up to the
next option of exec's own (`--stdin`, `--env`, `--dir`, ...) or `--`, after which every word is the
program's. `--stdin` is text, `@FILE` for a file's bytes, or `-` for this process's stdin. The
command's stderr is copied to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when the verb runs, so `--help` loads none of it
    from edge.runtime import DirGrant


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="a .wasm binary or .wat text")
    parser.add_argument("function", metavar="FUNCTION", help="the export to call (`_start` for a command)")
    parser.add_argument("args", nargs="*", metavar="ARG", help="arguments, read as JSON when they parse")
    parser.add_argument(
        "--argv",
        nargs="*",
        metavar="WORD",
        help="a command's arguments after argv[0], up to exec's next option (or every word after --)",
    )
    parser.add_argument("--stdin", default=None, metavar="TEXT|@FILE|-", help="a command's stdin")
    parser.add_argument("--memory-mb", type=int, default=128, help="memory limit (default 128)")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="timeout (default 30)")
    parser.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable")
    parser.add_argument(
        "--dir", action="append", default=[], metavar="HOST:GUEST[:ro|rw]", help="preopened directory (ro)"
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="precompiled module cache")


def _arg(index: int, text: str) -> Any:
    from edge.protocol import MAX_ARGS_DEPTH, may_nest_deeper, nests_deeper

    try:
        value = json.loads(text)
    except RecursionError:
        value = None
    except ValueError:
        return text
    else:
        if not (may_nest_deeper(text, MAX_ARGS_DEPTH) and nests_deeper(value, MAX_ARGS_DEPTH)):
            return value
    raise ValueError(f"ARG {index}: arrays and objects nest deeper than {MAX_ARGS_DEPTH} levels")


def _dir(spec: str) -> DirGrant:
    from edge.runtime import DirGrant

    parts = spec.split(":")
    mode = "ro"
    if len(parts) == 3:
        mode = parts.pop()
    if len(parts) != 2 or not parts[0] or not parts[1] or mode not in ("ro", "rw"):
        raise ValueError(f"--dir {spec!r}: expected HOST:GUEST[:ro|rw]")
    return DirGrant(Path(parts[0]), parts[1], mode == "rw")


def _fail(code: str, message: str, status: int = 1, **details: Any) -> int:
    print(json.dumps({"error": code, "message": message, **details}), file=sys.stderr)
    return status


def parse(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    """The arguments, with `--argv` split off by hand: its words run to the next of exec's own
    options, or to the end after `--` (argparse would take a word such as `-c` for an option)."""
    if "--argv" not in words:
        return parser.parse_args(words)
    at = words.index("--argv")
    head, rest = words[:at], words[at + 1 :]
    flags = {flag for action in parser._actions for flag in action.option_strings} - {"--argv", "-h", "--help"}
    program: list[str] = []
    while rest:
        word = rest.pop(0)
        if word == "--":
            program.extend(rest)
            break
        if word.split("=", 1)[0] in flags:  # each of exec's options takes one value
            head.append(word)
            if "=" not in word and rest:
                head.append(rest.pop(0))
            continue
        program.append(word)
    return parser.parse_args(head, namespace=argparse.Namespace(argv=program))  # --argv's words, split off above


def _program_argv(args: argparse.Namespace) -> tuple[str, ...] | None:
    """argv for the program: the file's stem as argv[0], then the `--argv` words."""
    if args.argv is None:
        return None
    return (args.file.stem.split("@")[0], *args.argv)


def _stdin(spec: str | None) -> bytes | None:
    if spec is None:
        return None
    if spec == "-":
        return sys.stdin.buffer.read()
    if spec.startswith("@"):
        return Path(spec[1:]).read_bytes()
    return spec.encode()


def run(args: argparse.Namespace) -> int:
    from edge import wasm
    from edge.errors import EdgeError
    from edge.runtime import MIB, Runtime, Sandbox

    try:
        argv = _program_argv(args)
        stdin = _stdin(args.stdin)
        env = []
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--env {item!r}: expected K=V")
            env.append((key, value))
        sandbox = Sandbox(
            memory_bytes=args.memory_mb * MIB,
            timeout_seconds=args.timeout_s,
            env=tuple(env),
            dirs=tuple(_dir(d) for d in args.dir),
            argv=(args.file.stem.split("@")[0],),
        )
        values = [_arg(i, a) for i, a in enumerate(args.args, 1)]
        data = args.file.read_bytes()
        if args.file.suffix == ".wat":
            data = wasm.compile_wat(data.decode("utf-8"))
    except wasm.WasmError as exc:
        where = f"{args.file}:{exc.line}" if exc.line else str(args.file)
        return _fail("bad_request", f"{where}: {exc.message}", 2)
    except (OSError, ValueError) as exc:
        return _fail("bad_request", str(exc), 2)
    runtime = Runtime(cache_dir=args.cache_dir)
    try:
        loaded = runtime.load_any(data, sandbox)
        export = loaded.functions.get(args.function)
        if export is not None and export.convention in ("numeric", "component"):
            call_args: Any = values
        else:
            call_args = values[0] if len(values) == 1 else (values or None)
        if (argv is not None or stdin is not None) and not values:
            call_args = None
        call = loaded.prepare(args.function, call_args, argv=argv, stdin=stdin)
        result = loaded.invoke(call)
    except EdgeError as exc:
        return _fail(exc.code, exc.message, 2 if exc.status < 500 else 1, **exc.details)
    finally:
        runtime.close()
    if result.stderr:
        print(result.stderr, file=sys.stderr)
    print(json.dumps(result.value))
    return 0
