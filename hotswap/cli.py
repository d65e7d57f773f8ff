"""The `hotswap` command: a table of verbs, each served by one module imported on demand.

A verb module offers `configure(parser: argparse.ArgumentParser) -> None` and
`run(args: argparse.Namespace) -> int`, and may offer `parse(parser, words) -> Namespace` when
argparse cannot read its words alone. Only the module of the verb given is imported, so
`hotswap validate` does not pay for aiohttp, and `hotswap edge` never loads the control plane.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple, Protocol, cast


class Verb(NamedTuple):
    module: str
    summary: str


VERBS: dict[str, Verb] = {
    "validate": Verb("reconciler.commands.validate", "check a fleet repository; exit 1 with path:line errors"),
    "schema": Verb("reconciler.commands.schema", "write the JSON Schemas of the fleet kinds"),
    "exec": Verb("edge.commands.exec", "run one function of a .wasm/.wat file in the edge sandbox"),
    "edge": Verb("edge.commands.edge", "run an edge node (standalone folder, or under a control plane)"),
    "serve": Verb("reconciler.commands.serve", "run the control plane on a fleet repository"),
    "up": Verb("reconciler.commands.up", "control plane and local edge nodes, all in one"),
    "status": Verb("reconciler.commands.status", "rollouts, modules, nodes and their conditions"),
    "diff": Verb("reconciler.commands.diff", "what the next reconcile pass would change"),
    "approve": Verb("reconciler.commands.approve", "make and sign an approval commit"),
    "push": Verb("reconciler.commands.push", "publish a .wasm/.wat file to an OCI registry (Wasm artifact)"),
    "token": Verb("reconciler.commands.token", "print a development token for a role"),
    "init": Verb("reconciler.commands.init", "write a minimal fleet repository (and its CI check) to start from"),
}


class VerbModule(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _usage() -> str:
    width = max(len(name) for name in VERBS)
    lines = ["usage: hotswap VERB [options]", "", "verbs:"]
    lines += [f"  {name.ljust(width)}  {verb.summary}" for name, verb in VERBS.items()]
    lines += ["", "`hotswap VERB --help` describes a verb's options."]
    return "\n".join(lines)


def _load(name: str) -> VerbModule | None:
    try:
        return cast(VerbModule, importlib.import_module(VERBS[name].module))
    except ModuleNotFoundError as exc:
        if exc.name != VERBS[name].module:
            raise
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from importlib.metadata import version

        print(f"hotswap {version('hotswap')}")
        return 0
    name, rest = args[0], args[1:]
    if name not in VERBS:
        print(f"hotswap: unknown verb {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = _load(name)
    if module is None:
        print(f"hotswap: `{name}` is not available in this build", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"hotswap {name}", description=VERBS[name].summary)
    module.configure(parser)
    parse = getattr(module, "parse", None)  # a verb that reads some words itself (exec --argv)
    try:
        code = module.run(parse(parser, rest) if parse is not None else parser.parse_args(rest))
        if name == "exec" and argv is None:  # the process is this one call: end it here, because
            sys.stdout.flush()  # wasmtime's I/O threads can panic in the interpreter's teardown
            sys.stderr.flush()
            os._exit(code)
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `hotswap status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
