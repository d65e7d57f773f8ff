"""Every verb's `--help` is quick because it imports nothing heavy: counted, not timed.

Each verb runs `hotswap VERB --help` in a fresh interpreter and lists the modules it imported: only
the standard library and the verb's own command modules, never aiohttp, wasmtime, pydantic,
cryptography, ruamel or the control plane and edge runtimes (those load when the verb runs).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hotswap.cli import VERBS

PROBE = """
import contextlib, io, json, sys
before = set(sys.modules)
from hotswap.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main([sys.argv[1], "--help"])
    except SystemExit as exc:
        code = exc.code
print(json.dumps({"code": code, "help": out.getvalue(), "modules": sorted(set(sys.modules) - before)}))
"""

OURS = ("hotswap", "reconciler", "edge")
# What a verb's options may need of ours: the verb itself and small, import-free helpers (the
# `reconciler.api` package's __init__ is only its docstring).
LIGHT = {
    "reconciler.api",
    "reconciler.api.authnames",
    "reconciler.commands.client",
    "reconciler.commands.ports",
    "reconciler.errors",
}
MOST_MODULES = 150  # a verb's --help imports about 10-90 today; the control plane pulls in over 700


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_help_imports_only_the_standard_library_and_the_verb(verb: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, verb], capture_output=True, text=True, timeout=60, check=True)
    report = json.loads(done.stdout)
    assert report["code"] == 0 and f"usage: hotswap {verb}" in report["help"]
    modules: list[str] = report["modules"]
    third_party = sorted({m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - set(OURS))
    assert third_party == [], f"hotswap {verb} --help imports {third_party}"
    packages = {"hotswap", "hotswap.cli", "reconciler", "reconciler.commands", "edge", "edge.commands"}
    ours = {m for m in modules if m.split(".")[0] in OURS} - packages
    assert ours <= {VERBS[verb].module, "reconciler.commands.serve", "reconciler.commands.token"} | LIGHT, ours
    assert not {"reconciler.commands.serve", "reconciler.commands.token"} & ours or verb in ("serve", "up", "token")
    assert len(modules) <= MOST_MODULES, f"hotswap {verb} --help imports {len(modules)} modules"
