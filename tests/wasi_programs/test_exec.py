"""`hotswap exec` on the interpreters, as a user types it: `--argv` words, `--stdin`, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def hotswap_exec(*words: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hotswap", "exec", *words],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_argv_then_exec_options_then_stdin_from_a_file(python_wasm: Path, program_cache: Path, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from a file")
    code = "import os, sys; print(sys.argv, os.environ['WHO'], sys.stdin.read())"
    done = hotswap_exec(
        str(python_wasm), "_start", "--cache-dir", str(program_cache),
        "--argv", "-c", code, "x", "--stdin", f"@{tmp_path / 'in.txt'}", "--env", "WHO=me",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "['-c', 'x'] me from a file\n"


def test_words_after_a_double_dash_are_the_programs_even_if_they_look_like_options(
    python_wasm: Path, program_cache: Path
) -> None:
    code = "import sys; print(sys.argv[1:], sys.stdin.read())"
    done = hotswap_exec(
        str(python_wasm), "_start", "--cache-dir", str(program_cache), "--stdin", "-",
        "--argv", "--", "-c", code, "--stdin", "--env",
        stdin="piped",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "['--stdin', '--env'] piped\n"


def test_a_nonzero_exit_prints_the_status_and_stderr(quickjs_wasm: Path, program_cache: Path) -> None:
    done = hotswap_exec(
        str(quickjs_wasm),
        "_start",
        "--cache-dir",
        str(program_cache),
        "--argv",
        "--std",
        "-e",
        "std.err.puts('no'); std.exit(5)",
    )
    assert done.returncode == 1
    error = json.loads(done.stderr.strip().splitlines()[-1])
    assert (error["error"], error["exitCode"], error["stderr"]) == ("exit", 5, "no")


def test_stderr_of_a_successful_command_goes_to_stderr(quickjs_wasm: Path, program_cache: Path) -> None:
    done = hotswap_exec(
        str(quickjs_wasm), "_start", "--cache-dir", str(program_cache),
        "--argv", "--std", "-e", "std.err.puts('a warning'); console.log(JSON.stringify([1, 2]))",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [1, 2]
    assert "a warning" in done.stderr
