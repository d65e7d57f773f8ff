"""Building real fleet repositories with real signed commits, for tests (and bench/gitsource.py).

Keys are real ed25519 keys from `ssh-keygen -t ed25519 -N ''`; commits are signed by git itself
(`git -c gpg.format=ssh -c user.signingkey=KEY commit -S`). A `Workspace` holds keys, a working
repository and optional remotes (a bare repository fetched by path, or `git daemon` on 127.0.0.1).

    ws = Workspace(tmp_path)
    alice = ws.key("alice")
    repo = ws.repo()
    repo.write("fleet.yaml", fleet_yaml(require_signed=True))
    repo.commit("first", key=alice)
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DIGEST = "sha256:" + "0" * 64

# Commits must not depend on the user's own git configuration.
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
}


def git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Key:
    name: str
    private: Path

    @property
    def public(self) -> str:
        return self.private.with_suffix(".pub").read_text().strip()


def make_key(directory: Path, name: str) -> Key:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True, timeout=30)
    return Key(name, path)


def _date_env(date: datetime | None) -> dict[str, str]:
    if date is None:
        return {}
    stamp = f"{int(date.timestamp())} +0000"
    return {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}


def _message(subject: str, trailers: Sequence[tuple[str, str]]) -> list[str]:
    args = ["-m", subject]
    if trailers:
        args += ["-m", "\n".join(f"{k}: {v}" for k, v in trailers)]
    return args


class Repo:
    """A working repository on branch `main`."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "-q", "-b", branch)
        git(path, "config", "gpg.format", "ssh")
        git(path, "config", "commit.gpgsign", "false")

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        return git(self.path, *args, env=env)

    def write(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def remove(self, rel: str) -> None:
        (self.path / rel).unlink()

    def _sign(self, key: Key | None) -> list[str]:
        return ["-c", f"user.signingkey={key.private}"] if key else []

    def commit(
        self,
        subject: str,
        *,
        key: Key | None = None,
        trailers: Sequence[tuple[str, str]] = (),
        date: datetime | None = None,
        allow_empty: bool = False,
    ) -> str:
        self.git("add", "-A")
        args = [*self._sign(key), "commit", "-q", *(["-S"] if key else []), *_message(subject, trailers)]
        if allow_empty:
            args.append("--allow-empty")
        self.git(*args, env=_date_env(date))
        return self.head()

    def approve(self, target: str, key: Key | None, *, date: datetime | None = None) -> str:
        return self.commit(
            f"approve {target}", key=key, trailers=[("Hotswap-Approve", target)], allow_empty=True, date=date
        )

    def merge(
        self, branch: str, *, key: Key | None = None, trailers: Sequence[tuple[str, str]] = (), subject: str = ""
    ) -> str:
        args = [*self._sign(key), "merge", "-q", "--no-ff", *(["-S"] if key else [])]
        self.git(*args, *_message(subject or f"Merge branch {branch!r}", trailers), branch)
        return self.head()

    def checkout(self, branch: str, *, new: bool = False) -> None:
        self.git("checkout", "-q", *(["-b"] if new else []), branch)

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref).strip()

    def push(self, remote: str, *, force: bool = False) -> None:
        self.git("push", "-q", *(["--force"] if force else []), remote, "HEAD:refs/heads/main")

    def reset_hard(self, ref: str) -> None:
        self.git("reset", "-q", "--hard", ref)


def bare_remote(path: Path) -> Path:
    """An empty bare repository that accepts pushes (and `git daemon` may serve)."""
    git(path.parent, "init", "-q", "--bare", "-b", "main", str(path))
    (path / "git-daemon-export-ok").touch()
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def git_daemon(base: Path) -> Iterator[str]:
    """`git daemon` serving every repository under `base` on 127.0.0.1; yields `git://127.0.0.1:PORT`."""
    port = free_port()
    process = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--enable=receive-pack",
            f"--base-path={base}",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("git daemon did not start") from None
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def key_entry(key: Key, valid_after: datetime | None = None, valid_before: datetime | None = None) -> str:
    if valid_after is None and valid_before is None:
        return f"      - {key.public}\n"
    text = f"      - key: {key.public}\n"
    if valid_after is not None:
        text += f"        validAfter: {valid_after.astimezone(UTC).isoformat()}\n"
    if valid_before is not None:
        text += f"        validBefore: {valid_before.astimezone(UTC).isoformat()}\n"
    return text


def trust_yaml(*principals: tuple[str, Sequence[str], str], require_signed: bool = False) -> str:
    """`principals` as (name, roles, key entries from `key_entry`)."""
    text = "requireSignedCommits: true\n" if require_signed else ""
    text += "principals:\n"
    for name, roles, keys in principals:
        text += f"  - name: {name}\n    roles: [{', '.join(roles)}]\n    keys:\n{keys}"
    return text


def fleet_yaml(
    *,
    require_signed: bool = False,
    merges_approve: bool = False,
    roles: Sequence[str] = ("admin",),
    count: int = 1,
) -> str:
    return (
        "apiVersion: hotswap.dev/v1\n"
        "kind: Fleet\n"
        "metadata: {name: test}\n"
        "spec:\n"
        "  environment: production\n"
        "  regions: [{name: us-east}]\n"
        "  policy:\n"
        f"    requireSignedCommits: {str(require_signed).lower()}\n"
        f"    mergedPullRequestsApprove: {str(merges_approve).lower()}\n"
        "    approvals:\n"
        f"      rollouts: {{roles: [{', '.join(roles)}], count: {count}}}\n"
    )


def module_yaml(name: str, version: str) -> str:
    return (
        "apiVersion: hotswap.dev/v1\n"
        "kind: Module\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"  version: {version}\n"
        f'  source: {{digest: "{DIGEST}"}}\n'
    )


class Workspace:
    """Keys, a working repository and remotes under one temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys_dir = root / "keys"

    def key(self, name: str) -> Key:
        return make_key(self.keys_dir, name)

    def repo(self, name: str = "work") -> Repo:
        return Repo(self.root / name)

    def remote(self, name: str = "fleet.git") -> Path:
        return bare_remote(self.root / name)

    def trust(self, text: str) -> Path:
        path = self.root / "trust.yaml"
        path.write_text(text)
        return path
