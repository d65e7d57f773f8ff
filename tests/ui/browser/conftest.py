"""The console in a real browser: Debian's Chromium driven by Playwright, on a live `hotswap up`.

One `hotswap up` process per module of tests (`console`): a copy of fleet-example in a Git repository
whose `main` is not checked out (so the API may commit approvals to it, as it may to any remote), a
trust file that lists the control plane's signing key (so those approvals count), two edge nodes,
and strategies slow enough to watch and quick enough to finish. Tests change the fleet with
`console.commit_module(...)`, the way a person pushes a commit.

Each test gets a fresh browser context (`page`), saves a screenshot of where it ended into
`$HOTSWAP_SCREENSHOTS` (or the session's temp dir), and fails when the page asked any host but
the control plane for anything.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from reconciler.api.auth import AuthOptions, TokenAuthority
from tests.e2e.cluster import FleetRepo
from tests.git.gitutil import free_port, git, make_key

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
START_SECONDS = 90.0
WAIT_MS = 30_000  # the longest a test waits for the page to show something (a deadline, not a pause)

# Strategies a person can watch: a canary's steps last a few seconds each; every gate proceeds
# without traffic (no load generator here). `gated` holds for an approval before it starts.
STRATEGIES = {
    "strategies/canary.yaml": """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: canary}
spec:
  type: Canary
  canary: {steps: [25, 50, 100], stepSeconds: 3}
  analysis: {maxErrorRate: 0.05, maxLatencyP99Ms: 200, minRequests: 0, onNoTraffic: proceed}
  autoRollback: true
""",
    "strategies/blue-green.yaml": """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: blue-green}
spec:
  type: BlueGreen
  blueGreen: {previewSeconds: 0.5, autoPromote: true, keepPreviousSeconds: 1}
  analysis: {maxErrorRate: 0.05, minRequests: 0, onNoTraffic: proceed}
""",
    "strategies/gated.yaml": """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata: {name: gated}
spec:
  type: Rolling
  rolling: {batchSize: 1, batchSeconds: 0.5}
  analysis: {maxErrorRate: 0.05, minRequests: 0, onNoTraffic: proceed}
  approval: {beforeStart: true}
""",
}


@dataclass
class Console:
    """A running `hotswap up` and the repository it follows."""

    url: str
    data_dir: Path
    repo: FleetRepo
    log: Path
    process: subprocess.Popen[bytes]
    login_link: str
    admin_token: str
    _authority: TokenAuthority | None = field(default=None, repr=False)

    def token(self, role: str, subject: str | None = None) -> str:
        """An API token from the keys of this control plane (what `hotswap token --role ROLE` prints)."""
        if self._authority is None:
            self._authority = TokenAuthority.load(AuthOptions(), self.data_dir)
        return self._authority.mint(subject or role, [role], ttl_seconds=3600)

    def on_branch(self, commit: Callable[[], str], branch: str = "main") -> str:
        """Make `commit()` on top of `main`, point `branch` (main by default) at it, return its SHA.
        `main` is never checked out: the control plane's own commits (approvals) land on it too."""
        git(self.repo.root, "checkout", "-q", "--detach", "main")
        sha = commit()
        git(self.repo.root, "update-ref", f"refs/heads/{branch}", sha)
        git(self.repo.root, "checkout", "-q", "--detach", "main")
        return sha

    def set_module(self, name: str, version: str, source: str, branch: str = "main") -> str:
        return self.on_branch(lambda: self.repo.set_module(name, version, source), branch)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _start(tmp: Path) -> Console:
    repo = FleetRepo(tmp / "repo", files=None)
    for rel, text in STRATEGIES.items():
        (repo.fleet / rel).write_text(text)
    wc = repo.fleet / "modules" / "wc.yaml"
    wc.write_text(wc.read_text().replace("  rollout: rolling", "  rollout: gated"))
    greeter = repo.fleet / "modules" / "greeter.yaml"  # starts at 1.0.0, so 1.1.0 is a canary to watch
    text = greeter.read_text().replace("1.1.0", "1.0.0")
    kept = [
        line
        for line in text.splitlines()
        if not line.startswith(("  versions:", "    - {version: 1.0.0", "    versionOverrides:", "      - {regions"))
    ]
    greeter.write_text("\n".join(kept) + "\n")
    repo.commit("strategies a person can watch; greeter at 1.0.0; wc waits for an approval")
    git(repo.root, "checkout", "-q", "--detach", "main")

    data = tmp / "data"
    signing = make_key(data / "auth", "git-signing-key")  # the control plane signs API commits with it
    admin = make_key(tmp / "keys", "admin")  # the principal `up`'s admin token names (subject "admin")
    trust = tmp / "trust.yaml"
    trust.write_text(
        "requireSignedCommits: false\n"
        "principals:\n"
        f'  - {{name: admin, roles: [admin], keys: ["{admin.public}"]}}\n'
        "  - {name: hotswap-control-plane, actsFor: [admin, developer, operator], "
        f'keys: ["{signing.public}"]}}\n'
    )
    port = free_port()
    log = tmp / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hotswap", "up", "--repo", str(repo.root), "--path", "fleet", "--branch", "main",
             "--nodes", "2", "--port", str(port), "--data-dir", str(data), "--trust", str(trust),
             "--heartbeat-seconds", "0.5", "--interval", "1"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    deadline = time.monotonic() + START_SECONDS
    while "Admin token (also in" not in log.read_text(errors="replace"):  # after the banner, with its link
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)  # SIGINT: up stops the nodes it started (a kill would leave them running)
            raise AssertionError(f"hotswap up did not come up:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.1)
    text = log.read_text(errors="replace")
    link = re.search(r"http://127\.0\.0\.1:\d+/ui/login/[A-Za-z0-9_-]+", text)
    assert link is not None, f"the banner prints no one-time login link:\n{text}"
    return Console(
        url=f"http://127.0.0.1:{port}",
        data_dir=data,
        repo=repo,
        log=log,
        process=process,
        login_link=link.group(0),
        admin_token=(data / "admin.token").read_text().strip(),
    )


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    running = _start(tmp_path_factory.mktemp("console"))
    try:
        yield running
    finally:
        stop(running.process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop `hotswap up` the way Ctrl-C does, so it stops its nodes; kill it only if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")  # closed with the module: sync Playwright holds an event loop on this thread
def browser() -> Iterator[Browser]:
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = Path(os.environ.get("HOTSWAP_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def page(browser: Browser, console: Console, screenshots: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh context and page; afterwards a screenshot, and a check that every request went to
    the control plane and that the page logged no error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    elsewhere: list[str] = []
    errors: list[str] = []
    opened.on(
        "request",
        lambda r: None if r.url.startswith((console.url + "/", "data:")) else elsewhere.append(r.url),
    )
    opened.on("pageerror", lambda e: errors.append(str(e)))
    # The browser also logs every 4xx answer as an error; the page shows those itself (a 409 of a
    # refused approval, the 401 of the first visit): only what a script logged counts.
    opened.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" and not m.text.startswith("Failed to load resource") else None
        ),
    )
    try:
        yield opened
    finally:
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)
        opened.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)
        context.close()
    assert not elsewhere, f"the page asked other hosts: {elsewhere}"
    assert not errors, f"the page logged errors: {errors}"


def sign_in(page: Page, console: Console, token: str) -> None:
    """Paste `token` into the sign-in form, as a person would."""
    page.goto(console.url + "/ui/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Screens").wait_for()
