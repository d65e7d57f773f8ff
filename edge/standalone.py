"""A standalone node's module table, read from a folder instead of a control plane.

Where it sits: `hotswap edge --standalone DIR` runs `edge.run.run_node` with a `Folder` as its
source: it scans DIR at start and again on SIGHUP, and hands the result to the node's
`apply_table` (one process's `Router`, or the `WorkerPool` of a node with `--workers N`), the same
entry point the control-plane agent uses. The folder is also the node's `BlobSource`: binaries are
served by digest from the last scan.

    NAME.wasm / NAME.wat          module NAME, version 0.0.0
    NAME@X.Y.Z.wasm / .wat        module NAME, version X.Y.Z
    NAME-X.Y.Z.wasm / .wat        the same (how a fleet repository names its files: calc-1.1.0.wat)
    NAME-X.Y.Z-PRE.wasm / .wat    module NAME, pre-release version X.Y.Z-PRE (calc-1.2.0-faulty.wat)

When a module has several versions, the highest release takes all traffic (weight 100) and the
others, pre-releases included, are loaded at weight 0, reachable with `X-Hotswap-Version` (a
pre-release takes traffic only when the module has nothing else). One version given by two files
(`hello-1.0.0.wasm` built from `hello-1.0.0.wat`) is served from the first in name order, so the
`.wasm`.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edge import wasm
from edge.errors import LoadError
from edge.protocol import Capabilities, Limits, ModuleEntry

if TYPE_CHECKING:
    from edge.run import Signals, Started

FILE_NAME = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*?)(?:[@-](?P<version>\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?))?$"
)


def _version_key(version: str) -> tuple[int, int, int, int, int, str]:
    """Releases above every pre-release, then by semver precedence (a close enough reading of it)."""
    core, _, pre = version.partition("+")[0].partition("-")
    major, minor, patch = (int(p) for p in core.split("."))
    release = 0 if pre else 1
    return (release, major, minor, patch, release, pre)


@dataclass
class Scan:
    entries: list[ModuleEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class DirectorySource:
    """Module binaries from a folder, by digest; `scan` lists what the folder serves."""

    def __init__(self, folder: Path, limits: Limits | None = None, capabilities: Capabilities | None = None) -> None:
        self.folder = folder
        self.limits = limits or Limits()
        self.capabilities = capabilities or Capabilities()
        self._blobs: dict[str, bytes] = {}

    async def fetch(self, digest: str) -> bytes:
        try:
            return self._blobs[digest]
        except KeyError:
            raise LoadError(f"{digest} is not in {self.folder}") from None

    def add(self, data: bytes) -> str:
        """Make a binary fetchable by digest (tests and admin tables may refer to it)."""
        digest = wasm.sha256_digest(data)
        self._blobs[digest] = data
        return digest

    def scan(self) -> Scan:
        scan = Scan()
        found: dict[str, list[tuple[str, str]]] = {}
        given: dict[str, dict[str, str]] = {}  # module -> version -> the file it is served from
        if not self.folder.is_dir():
            scan.problems.append(f"{self.folder}: not a directory")
            return scan
        for path in sorted(self.folder.iterdir()):
            if path.suffix not in (".wasm", ".wat") or not path.is_file():
                continue
            match = FILE_NAME.match(path.stem)
            if match is None:
                scan.problems.append(f"{path.name}: expected NAME.wasm, NAME@X.Y.Z.wasm or NAME-X.Y.Z.wasm")
                continue
            name, version = match.group("name"), match.group("version") or "0.0.0"
            try:
                data = path.read_bytes()
                if path.suffix == ".wat":
                    data = wasm.compile_wat(data.decode("utf-8"))
            except wasm.WasmError as exc:
                where = f"{path.name}:{exc.line}" if exc.line else path.name
                scan.problems.append(f"{where}: {exc.message}")
                continue
            except (OSError, UnicodeDecodeError) as exc:
                scan.problems.append(f"{path.name}: {exc}")
                continue
            if version in given.setdefault(name, {}):
                scan.problems.append(f"{path.name}: {name}@{version} is served from {given[name][version]}; skipped")
                continue
            given[name][version] = path.name
            found.setdefault(name, []).append((version, self.add(data)))
        for name, versions in sorted(found.items()):
            newest = max(versions, key=lambda v: _version_key(v[0]))[0]
            for version, digest in versions:
                scan.entries.append(
                    ModuleEntry(
                        module=name,
                        version=version,
                        digest=digest,
                        weight=100 if version == newest else 0,
                        limits=self.limits,
                        capabilities=self.capabilities,
                    )
                )
        return scan


class Folder:
    """A standalone node's source (`edge.run.Source`): the folder's scan at start, and again on SIGHUP."""

    conditions = None  # a standalone node says no conditions in GET /health

    def __init__(self, source: DirectorySource) -> None:
        self.blobs = source
        self.generation = 0
        self._rescans: set[asyncio.Task[None]] = set()

    async def rescan(self, node: Started) -> None:
        scan = self.blobs.scan()
        for problem in scan.problems:
            print(f"hotswap edge: {problem}", file=sys.stderr)
        self.generation += 1
        report = await node.table.apply_table(scan.entries, self.generation)
        for name, message in report.failed.items():
            print(f"hotswap edge: {name}: {message}", file=sys.stderr)

    async def first(self, node: Started) -> None:
        await self.rescan(node)

    async def follow(self, node: Started, port: int) -> Signals:
        print(
            f"hotswap edge: serving {node.versions()} module version(s) from {self.blobs.folder}{node.described} "
            f"on http://{node.host}:{port}",
            flush=True,
        )

        def on_hup() -> None:
            task = asyncio.get_running_loop().create_task(self.rescan(node))
            self._rescans.add(task)
            task.add_done_callback(self._rescans.discard)

        return {signal.SIGHUP: on_hup}

    async def close(self) -> None:
        pass
