"""The interface registry: WIT packages, module compatibility with them, and how they evolve.

parse_wit(path) -> WitPackage                     wasm-tools resolves the WIT; cached by content
check_module(info, package, interface, granted, wasi_level) -> problems
compare(old, new) -> Evolution                    changes, version problems, needs_approval
breaking_changes(old, new) -> [Change]            the changes alone
version_bump_problems(old, new, changes) -> problems
"""

from reconciler.interfaces.compat import check_component, check_module, clear_cache, export_names
from reconciler.interfaces.errors import InterfaceError, ToolError, WitError
from reconciler.interfaces.evolution import (
    Change,
    Evolution,
    breaking_changes,
    compare,
    version_bump_problems,
)
from reconciler.interfaces.model import WitFunction, WitInterface, WitPackage, WitParam, WitType, WitWorld
from reconciler.interfaces.wit import parse_wit, parse_wit_text, wasm_tools

__all__ = [
    "Change",
    "Evolution",
    "InterfaceError",
    "ToolError",
    "WitError",
    "WitFunction",
    "WitInterface",
    "WitPackage",
    "WitParam",
    "WitType",
    "WitWorld",
    "breaking_changes",
    "check_component",
    "check_module",
    "clear_cache",
    "compare",
    "export_names",
    "parse_wit",
    "parse_wit_text",
    "version_bump_problems",
    "wasm_tools",
]
