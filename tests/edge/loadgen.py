"""Continuous load against an edge node, run as its own process by the hot-swap test.

    python tests/edge/loadgen.py URL OUT_DIR [CONCURRENCY]

Sends `greeter.version()` calls with CONCURRENCY connections until OUT_DIR/stop exists (or 120 s
pass), rewriting OUT_DIR/progress with the count so far, and writes OUT_DIR/result.json at the
end: responses by (status, header version, body version) and a sample of failures.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

REQUEST = {"module": "greeter", "function": "version", "args": []}


async def worker(
    session: aiohttp.ClientSession, url: str, out: Path, counts: Counter[str], failures: list[str]
) -> None:
    stop = out / "stop"
    deadline = time.monotonic() + 120
    while not stop.exists() and time.monotonic() < deadline:
        try:
            async with session.post(url, json=REQUEST) as resp:
                body = await resp.json()
                header = resp.headers.get("X-Hotswap-Version", "")
                key = f"{resp.status} {header} {body.get('version', '')} {body.get('result', '')}"
                counts[key] += 1
                if resp.status != 200 and len(failures) < 20:
                    failures.append(f"{resp.status} {body}")
        except (aiohttp.ClientError, ValueError) as exc:
            counts[f"error {type(exc).__name__}"] += 1
            if len(failures) < 20:
                failures.append(repr(exc))
        total = sum(counts.values())
        if total % 25 == 0:
            tmp = out / "progress.tmp"
            tmp.write_text(str(total))
            tmp.replace(out / "progress")


async def main(url: str, out: Path, concurrency: int) -> None:
    counts: Counter[str] = Counter()
    failures: list[str] = []
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session, url, out, counts, failures) for _ in range(concurrency)))
    (out / "result.json").write_text(json.dumps({"counts": counts, "failures": failures}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 4))
