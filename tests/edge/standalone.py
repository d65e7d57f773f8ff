"""A standalone node process (`hotswap edge --standalone DIR`) on 127.0.0.1 for tests: started with
the flags a test gives, ready once it prints where it serves, called with plain HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StandaloneNode:
    proc: subprocess.Popen[str]
    url: str

    def request(self, method: str, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
        """(status, JSON body) of one call; a 4xx or 5xx is an answer too."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    def apply(self, modules: list[dict[str, Any]], generation: int, token: str | None = None) -> tuple[int, Any]:
        """PUT a full table to the admin endpoint."""
        return self.request("PUT", "/api/v1/wasm/admin/table", {"generation": generation, "modules": modules}, token)

    def execute(self, module: str, function: str, args: Any = None, token: str | None = None) -> tuple[int, Any]:
        body = {"module": module, "function": function, "args": args if args is not None else []}
        return self.request("POST", "/api/v1/wasm/execute", body, token)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout=30) == 0
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL if it still runs, and close its output (safe to call after `stop` or twice)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_standalone(folder: Path, cache: Path, *flags: str) -> StandaloneNode:
    """`hotswap edge --standalone folder --port 0 --cache-dir cache *flags`, once it serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hotswap", "edge", "--standalone", str(folder), "--port", "0",
         "--cache-dir", str(cache), "--log-level", "WARNING", *flags],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the node prints where it listens once it serves
    if "serving" not in line:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the node did not start (exit {proc.returncode}): {line!r}")
    return StandaloneNode(proc, line.strip().rsplit(" ", 1)[1])
