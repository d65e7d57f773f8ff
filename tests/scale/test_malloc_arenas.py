"""The control plane caps glibc's malloc arenas (`reconciler.apply.freezing.limit_malloc_arenas`): eight
threads alive at once get two arenas between them, not one each; an operator's `MALLOC_ARENA_MAX`
stands. Each case runs in a process of its own, since glibc reads the cap once and arenas stay."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Eight threads that each allocate and stay alive until glibc has printed its arenas (malloc_stats
# writes one "Arena N:" block per arena to stderr).
PROGRAM = textwrap.dedent(
    """
    import ctypes, sys, threading
    from reconciler.apply.freezing import limit_malloc_arenas

    print(limit_malloc_arenas() if sys.argv[1] == "cap" else "-", flush=True)
    barrier = threading.Barrier(9)

    def work():
        kept = [b"x" * 1000 for _ in range(100)]
        barrier.wait()
        barrier.wait()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    barrier.wait()
    ctypes.CDLL(None).malloc_stats()
    barrier.wait()
    for thread in threads:
        thread.join()
    """
)


def arenas(mode: str, **env: str) -> tuple[str, int]:
    """What `limit_malloc_arenas` returned ("-" when not called) and how many arenas the threads got."""
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, mode],
        check=False,
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_eight_threads_share_two_arenas_once_capped() -> None:
    assert arenas("cap") == ("True", 2)


def test_without_the_cap_each_thread_gets_an_arena() -> None:
    said, count = arenas("none")
    assert said == "-" and count > 2  # what the cap saves: glibc's default, an arena per thread


def test_an_operators_setting_stands() -> None:
    said, count = arenas("cap", MALLOC_ARENA_MAX="4")
    assert said == "False" and count == 4
