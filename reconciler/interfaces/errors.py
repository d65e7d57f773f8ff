"""Errors of the interface registry, from running wasm-tools to reading the WIT it resolves.

    InterfaceError          anything the interface registry raises
    ├── WitError            the WIT does not parse or resolve (`line` and `file` point into the WIT)
    └── ToolError           wasm-tools is missing, crashed, or printed something unreadable

A module that does not satisfy an interface, or a breaking change, is not an exception: the checks
return their problems as data (one line each) for the fleet loader and the API to report.
"""

from __future__ import annotations

from reconciler.errors import ReconcilerError


class InterfaceError(ReconcilerError):
    """Base of every interface registry error."""


class WitError(InterfaceError, ValueError):
    """A WIT file or folder that wasm-tools refuses.

    `line` is the line in the WIT file named by `file` (the file given, or a file of its folder or its
    `deps/` folder, relative to the folder of the path given), None when wasm-tools gives no place.
    """

    def __init__(self, message: str, line: int | None = None, file: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.file = file

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line) if p is not None)
        return f"{where}: {self.message}" if where else self.message


class ToolError(InterfaceError):
    """wasm-tools could not be found or run, or its output could not be read."""
