"""README.md: every shell command it shows is run, against a live `hotswap up` (issue 18).

The commands are read from README.md at test time:
- every command of a fenced (or indented) code block: a line starting with `hotswap`, `curl`, `git`,
  `bash`, `python3`, `podman`, ... (or `$ `), with `\\` continuations; lines after a command that are
  not commands are its output as README shows it (`...` stands for anything);
- every line of the Commands block (`hotswap VERB SYNOPSIS   what it does`), run as the concrete
  calls in SYNOPSES below;
- the Runbook's `hotswap ...` and `GET|POST|DELETE $CP/...` spans (with README's token header).

A command is run unless ALLOW_LIST names it (production infrastructure), so a new README command is
run unless someone lists it here. They run as a reader would run them: from a clone of this repository
(`git clone` of HEAD, with a bare clone as its origin, so `--push` never reaches this checkout), with
`hotswap` on PATH, where README's first block started `hotswap up --path fleet-example` (on a free
port, `--data-dir .hotswap` of the clone). README's placeholders become the live values:
`localhost:PORT` a node serving the module called, `$CP` and `127.0.0.1:8080` the control plane,
`.hotswap/` its data dir, `$HOTSWAP_TOKEN` its admin token, `fleet/` the fleet folder, `{id}` the
rollout README approves (`greeter-v1.2.0`, made to wait for approval by the Fleet's approval rule) or
a node. Each command must exit 0 (a curl must answer 2xx), and print what README shows, if it shows
anything; a command that runs until Ctrl-C must come up, then stop on SIGINT.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.git.gitutil import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = ROOT / ".venv" / "bin"
DEADLINE = 90.0  # seconds for anything to come up (a control plane, a rollout, a node)

# What is not run, and why: each entry is the start of a README command (after `$ ` and continuation
# lines are joined) and the reason. Anything else README shows is run.
ALLOW_LIST: dict[str, str] = {
    "python3 -m venv .venv && .venv/bin/pip install -e .": "installs from the package index; its last part, "
    "`.venv/bin/hotswap up --path fleet-example`, is the live `up` every other command runs against",
    "bash .ci/run": "runs the whole suite (this test included) and installs PostgreSQL",
    "hotswap push ": "needs an OCI registry; tests/e2e/test_oci_sources.py pushes to a real one",
    "hotswap serve --repo https://": "production: a forge, PostgreSQL, S3/MinIO and TLS files",
    "podman ": "a container engine and an image build",
    "POST $CP/api/v1/wasm/deployments/greeter-v1.2.0/execute": "an API approval is a commit signed by the "
    "control plane, which must be in a trust file (`up --trust`); `up --path fleet-example` has none (409)",
    "POST $CP/api/v1/wasm/source/accept-rewrite": "needs a force-push held by a signing policy "
    "(requireSignedCommits and a trust file); tests/e2e/test_git_trust.py covers it",
}

# The Commands block's synopses (keyed by their words before the first placeholder or `[`), as
# concrete calls: {work} is a scratch folder, {port} a free port, $CP/$HOTSWAP_TOKEN the live ones.
SYNOPSES: dict[str, list[str]] = {
    "hotswap init": ["hotswap init {work}/synopsis-fleet"],
    "hotswap validate": ["hotswap validate fleet-example --base HEAD"],
    "hotswap schema": ["hotswap schema --out {work}/schemas"],
    "hotswap exec": ["hotswap exec fleet-example/wasm/calc-1.1.0.wat add 3 2"],
    "hotswap edge --standalone": ["hotswap edge --standalone fleet-example/wasm --port {port}"],
    "hotswap edge --control": [
        "HOTSWAP_NODE_TOKEN=$(hotswap token --role node --subject edge-readme-01) "
        "hotswap edge --control $CP --region apac-east --id edge-readme-01 --port {port}"
    ],
    "hotswap serve --repo": ["hotswap serve --repo . --path fleet-example --port {port} --data-dir {work}/serve"],
    "hotswap up": [],  # the live `up` itself
    "hotswap status": [
        "hotswap status",
        "hotswap status -o wide",
        "hotswap status -o json",
        "hotswap status -o yaml",
        "hotswap status --watch",
    ],
    "hotswap diff": ["hotswap diff fleet-example"],
    "hotswap approve": ["hotswap approve greeter@1.1.0"],
    "hotswap push": [],  # needs an OCI registry: tests/e2e/test_oci_sources.py runs it against one
    "hotswap token --role": [
        'curl -s -H "Authorization: Bearer $(hotswap token --role admin)" $CP/api/v1/wasm/nodes',
        'curl -s -H "Authorization: Bearer $(hotswap token --role developer --audience edge)" '
        'localhost:PORT/api/v1/wasm/execute -d \'{"module": "calc", "function": "add", "args": [3, 2]}\'',
    ],
}
# What the calls of SYNOPSES print, where it is known: the exact output.
SYNOPSIS_OUTPUT = {"hotswap exec fleet-example/wasm/calc-1.1.0.wat add 3 2": "5"}

COMMAND_WORDS = {"hotswap", "curl", "git", "bash", "sh", "python3", "pip", "podman", "docker", "kubectl"}
UP_PRINTED = ("(hotswap token --subject NAME)", "API commits are signed as")  # up's last line, either way
WAITING = "greeter-v1.2.0"  # the rollout the runbook approves, pauses and rolls back


# --- README's commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What README shows at one line: shell commands (one script), or a synopsis, or a runbook span."""

    line: int
    kind: str  # "block", "synopsis" or "runbook"
    commands: tuple[str, ...]
    shown: str = ""  # the output README shows after the command, if any
    skipped: tuple[str, ...] = ()  # commands of the block ALLOW_LIST names

    @property
    def id(self) -> str:
        text = " && ".join(c.split("  ", 1)[0] for c in self.commands)  # a synopsis without its description
        return f"README.md:{self.line} {text[:60]}"


_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
_SPAN = re.compile(r"`((?:GET|POST|DELETE) [^`]+|\.\.\./[^`\s]+|(?:hotswap|git) [^`]+)`")
NAMES = {"hotswap up", "hotswap serve", "hotswap edge"}  # a runbook span that only names a server, not a call


def is_command(line: str) -> bool:
    words = line.removeprefix("$ ").split()
    return bool(words) and (words[0] in COMMAND_WORDS or words[0].startswith(".venv/bin/"))


def allowed(command: str) -> str | None:
    return next((why for start, why in ALLOW_LIST.items() if command.startswith(start)), None)


def code_blocks(readme: str) -> Iterator[tuple[int, str, list[str]]]:
    """(README line of the first body line, language, body lines) of every fenced and indented block."""
    masked = readme
    for m in _FENCE.finditer(readme):
        indent = len(m["indent"])
        lines = [line[indent:] for line in m["body"].splitlines()]
        yield readme.count("\n", 0, m.start("body")) + 1, m["lang"], lines
        masked = masked[: m.start()] + re.sub(r"[^\n]", " ", m.group()) + masked[m.end() :]
    all_lines = masked.splitlines()
    i = 0
    while i < len(all_lines):
        if all_lines[i].startswith("    ") and all_lines[i].strip() and i > 0 and not all_lines[i - 1].strip():
            start = i
            while i < len(all_lines) and (all_lines[i].startswith("    ") or not all_lines[i].strip()):
                i += 1
            yield start + 1, "", [line[4:] for line in all_lines[start:i]]
        i += 1


def commands_of(lines: list[str]) -> list[tuple[int, str, str]]:
    """(offset, command, output shown after it) in a block's lines."""
    found: list[tuple[int, str, list[str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if is_command(line):
            offset, parts = i - 1, [line.removeprefix("$ ")]
            while parts[-1].endswith("\\") and i < len(lines):
                parts[-1] = parts[-1][:-1].rstrip()
                parts.append(lines[i].strip())
                i += 1
            command = re.sub(r"\s{2,}#.*$", "", " ".join(parts))
            found.append((offset, command, []))
        elif found:
            found[-1][2].append(line)
    return [(offset, command, "\n".join(out)) for offset, command, out in found]


def synopsis_key(line: str) -> str:
    words = []
    for word in line.split("  ", maxsplit=1)[0].split():
        if word.startswith("[") or word[0].isupper():
            break
        words.append(word)
    return " ".join(words)


def readme_steps(readme: str) -> list[Step]:
    steps = []
    for first, lang, lines in code_blocks(readme):
        if lang not in ("", "sh"):
            continue  # yaml: files, not commands
        body = [line for line in lines if line.strip()]
        if lang == "" and body and all(line.startswith("hotswap ") for line in body):
            steps += [Step(first + lines.index(line), "synopsis", (line,)) for line in body]
            continue
        found = commands_of(lines)
        if not found:
            continue
        run = [(offset, command, out) for offset, command, out in found if not allowed(command)]
        skipped = tuple(command for _, command, _ in found if allowed(command))
        if lang == "sh" and len(run) > 1:  # one script: `cd` carries over
            assert not any(out for _, _, out in run), f"README.md:{first}: output inside a script"
            steps.append(Step(first + run[0][0], "block", tuple(c for _, c, _ in run), skipped=skipped))
        else:
            steps += [Step(first + offset, "block", (command,), out, skipped) for offset, command, out in run]
            if not run:
                steps.append(Step(first + found[0][0], "block", (), skipped=skipped))
    runbook = readme.index("\n## Runbook")
    end = readme.index("\n## ", runbook + 1)
    for m in _SPAN.finditer(readme, runbook, end):
        command = " ".join(m[1].split())
        if command in NAMES:
            continue
        steps.append(Step(readme.count("\n", 0, m.start()) + 1, "runbook", (command,)))
    return sorted(steps, key=lambda s: s.line)


STEPS = readme_steps(README.read_text())
RUN = [s for s in STEPS if s.commands and not (s.kind == "runbook" and allowed(s.commands[0]))]


def test_readme_commands_are_found_and_the_allow_list_names_only_readme_commands() -> None:
    commands = [c for s in STEPS for c in (*s.commands, *s.skipped)]
    assert any(c.startswith("curl ") for c in commands) and any(s.kind == "synopsis" for s in STEPS)
    unused = [start for start in ALLOW_LIST if not any(c.startswith(start) for c in commands)]
    assert not unused, f"ALLOW_LIST names commands README no longer shows: {unused}"
    unknown = [s.commands[0] for s in STEPS if s.kind == "synopsis" and synopsis_key(s.commands[0]) not in SYNOPSES]
    assert not unknown, f"README's Commands block lists commands this test does not run: {unknown}"


# --- the live `hotswap up` -----------------------------------------------------------------------------


@dataclass
class Live:
    work: Path
    clone: Path
    control: str
    nodes: list[tuple[str, int]]  # (id, port) in the banner's order
    env: dict[str, str]
    waiting: str = ""  # the commit that made the runbook's rollout wait
    methods: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # the runbook's HTTP paths so far, for `.../x`


def sh(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout


def up_command() -> list[str]:
    """README's first command's last part: `.venv/bin/hotswap up --path fleet-example`."""
    first = next(c for s in STEPS for c in s.skipped if "hotswap up" in c)
    last = first.split("&&")[-1].strip()
    assert last.startswith(".venv/bin/hotswap up"), first
    return shlex.split(last.removeprefix(".venv/bin/"))


def is_up(out: str) -> bool:
    """Whether `hotswap up` printed all it prints once up: the banner, then how API commits are signed
    (a Ctrl-C before that also reaches the ssh-keygen making the control plane's key, and `up` fails)."""
    return "Ctrl-C stops everything." in out and any(end in out for end in UP_PRINTED)


def poll_output(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + DEADLINE
    while not is_up(out := log.read_text(errors="replace")):
        assert process.poll() is None, f"`hotswap up` exited with {process.returncode}:\n{out}"
        assert time.monotonic() < deadline, f"`hotswap up` not up within {DEADLINE:.0f} s:\n{out}"
        time.sleep(0.1)
    return out


# Runs the command after it with Ctrl-C doing what it does at a terminal. A job started in the
# background by a non-interactive shell (a CI runner's, say) has SIGINT ignored, its children inherit
# that, and Python then installs no KeyboardInterrupt handler: `hotswap status --watch` went on through
# every Ctrl-C. (A disposition set before exec stays; preexec_fn would do it too, but not safely in a
# process with threads.)
AS_IN_A_TERMINAL = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])",
)


def stop(process: subprocess.Popen[bytes]) -> int:
    """Ctrl-C: SIGINT to the process group, as a terminal sends it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    work = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTSWAP_")}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Reader",
        "GIT_AUTHOR_EMAIL": "reader@example.com",
        "GIT_COMMITTER_NAME": "Reader",
        "GIT_COMMITTER_EMAIL": "reader@example.com",
    }
    sh(["git", "clone", "-q", "--bare", str(ROOT), str(work / "origin.git")], work, env)
    clone = work / "hotswap"
    sh(["git", "clone", "-q", str(work / "origin.git"), str(clone)], work, env)
    # The reader's own signing setup, as `hotswap approve` asks for it.
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "reader", "-f", str(work / "id_ed25519")], work, env)
    sh(["git", "config", "gpg.format", "ssh"], clone, env)
    sh(["git", "config", "user.signingkey", str(work / "id_ed25519")], clone, env)
    shutil.copytree(clone / "fleet-example", work / "pristine" / "fleet-example")
    log = work / "up.log"
    command = [*up_command(), "--port", str(free_port()), "--data-dir", str(clone / ".hotswap")]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*AS_IN_A_TERMINAL, *command], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        banner = poll_output(process, log)
        match = re.search(r"control plane (http://\S+),", banner)
        assert match, banner
        nodes = [(m[1], int(m[2])) for m in re.finditer(r"edge node (\S+)\s+\S+\s+http://127\.0\.0\.1:(\d+)", banner)]
        assert nodes, banner
        env |= {"CP": match[1], "HOTSWAP_TOKEN": (clone / ".hotswap" / "admin.token").read_text().strip()}
        yield Live(work, clone, match[1], nodes, env)
    finally:
        code = stop(process)
        assert code == 0, f"`hotswap up` exited with {code} on Ctrl-C:\n{log.read_text()}"


def api(live: Live, path: str) -> object:
    bearer = f"Authorization: Bearer {live.env['HOTSWAP_TOKEN']}"
    out = sh(["curl", "-sf", "-H", bearer, live.control + path], live.work)
    return json.loads(out)


def node_serving(live: Live, module: str | None) -> int:
    """The port of the first node of the banner that serves `module` (any node when None)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        listed = api(live, "/api/v1/wasm/nodes")
        assert isinstance(listed, dict)
        serving = {
            n["id"]
            for n in listed["nodes"]
            if n["status"] == "Healthy" and (module is None or any(m["module"] == module for m in n["modules"]))
        }
        ports = [port for node, port in live.nodes if node in serving]
        if ports:
            return ports[0]
        assert time.monotonic() < deadline, f"no node serves {module} within {DEADLINE:.0f} s: {listed}"
        time.sleep(0.2)


def make_rollout_wait(live: Live) -> str:
    """greeter 1.2.0 committed under the Fleet's approval rule (README's Approvals), so the runbook's
    rollout exists and waits (WaitingApproval) until someone acts on it; the commit."""
    if live.waiting:
        return live.waiting
    fleet = live.clone / "fleet-example"
    text = (fleet / "fleet.yaml").read_text()
    assert "approvals: {}" in text
    rule = "approvals: {rollouts: {roles: [admin], count: 1}}"
    (fleet / "fleet.yaml").write_text(text.replace("approvals: {}", rule))
    greeter = (fleet / "modules" / "greeter.yaml").read_text()
    greeter = re.sub(r"(?m)^  version: \S+", "  version: 1.2.0", greeter, count=1)
    greeter = greeter.replace("../wasm/greeter-1.1.0.wat", "../wasm/greeter-1.2.0-faulty.wat")
    (fleet / "modules" / "greeter.yaml").write_text(greeter)
    sh(["git", "commit", "-qam", "greeter 1.2.0, under the approval rule"], live.clone, live.env)
    deadline = time.monotonic() + DEADLINE
    while True:
        done = subprocess.run(
            ["curl", "-s", "-H", f"Authorization: Bearer {live.env['HOTSWAP_TOKEN']}",
             f"{live.control}/api/v1/wasm/deployments/{WAITING}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if '"phase": "WaitingApproval"' in done.stdout:
            break
        assert time.monotonic() < deadline, f"{WAITING} does not wait for approval: {done.stdout}"
        time.sleep(0.2)
    live.waiting = sh(["git", "rev-parse", "HEAD"], live.clone, live.env).strip()
    return live.waiting


# --- running a step ------------------------------------------------------------------------------------


@dataclass
class Run:
    script: str
    cwd: Path
    shown: str = ""
    codes: tuple[int, ...] = (0,)


LONG = re.compile(r"(^|\s)hotswap (up|serve|edge)\b|hotswap status\b.*--watch")
STATUS = "\nHTTPSTATUS:"


def rewrite(live: Live, command: str) -> str:
    command = command.replace(".venv/bin/hotswap", "hotswap")
    command = command.replace(".hotswap/", f"{live.clone / '.hotswap'}/")
    command = command.replace("127.0.0.1:8080", live.control.removeprefix("http://"))
    command = command.replace("localhost:8080", live.control.removeprefix("http://"))
    if "localhost:PORT" in command:
        module = re.search(r"\"module\":\s*\"([^\"]+)\"", command)
        command = command.replace("localhost:PORT", f"localhost:{node_serving(live, module and module[1])}")
    if command.startswith("curl "):  # its HTTP status too
        command = "curl -w '\\nHTTPSTATUS:%{http_code}' " + command.removeprefix("curl ")
    return command


def runbook_runs(live: Live, step: Step, paths: list[str]) -> list[Run]:
    command = step.commands[0]
    if "<sha>" in command:  # the commit to undo or vouch for: the runbook's own rollout's
        command = command.replace("<sha>", make_rollout_wait(live))
    command = command.replace("~/.ssh/id_ed25519", str(live.work / "id_ed25519"))  # the reader's key
    if not command.startswith((".../", "GET ", "POST ", "DELETE ")):
        return [Run(command.replace(" fleet/", " fleet-example/"), live.clone)]
    method, path = command.split(" ", 1) if " " in command else (live.methods[-1], command)  # `then .../resume`
    live.methods.append(method)
    if path.startswith(".../"):  # an earlier span's path with that ending, else the previous one's sibling
        tail = path.removeprefix("...")
        path = next((p for p in paths if p.endswith(tail)), paths[-1].rsplit("/", 1)[0] + tail)
    paths.append(path)
    if "/deployments/{id}" in path:
        make_rollout_wait(live)
        path = path.replace("{id}", WAITING)
    path = path.replace("{id}", live.nodes[-1][0])  # a node
    curl = f'curl -s -X {method} -H "Authorization: Bearer $HOTSWAP_TOKEN" {path}'
    return [Run(curl, live.clone)]


def setup_shown_problems(live: Live, step: Step) -> Path:
    """The README example of `hotswap validate` with problems: the mistakes its output names, made
    in a copy of the fleet; the folder to run it from."""
    folder = live.work / f"validate-{step.line}"
    shutil.copytree(live.work / "pristine", folder)
    for line in step.shown.splitlines():
        m = re.match(r"(?P<file>\S+?):\d+: spec\.(?P<field>\w+): (?P<message>.*)$", line)
        if not m:
            continue
        path = folder / m["file"]
        text = path.read_text()
        if hint := re.search(r"unknown field; did you mean '(\w+)'", m["message"]):
            new = re.sub(rf"(?m)^(\s+){hint[1]}:", rf"\g<1>{m['field']}:", text, count=1)
        elif value := re.match(r"'([^']*)' is not semver", m["message"]):
            new = re.sub(rf"(?m)^(\s+){m['field']}: .*$", rf"\g<1>{m['field']}: '{value[1]}'", text, count=1)
        else:
            raise AssertionError(f"README.md:{step.line}: no way to make the mistake {line!r}")
        assert new != text, line
        path.write_text(new)
    return folder


def runs_of(live: Live, step: Step, paths: list[str]) -> list[Run]:
    if step.kind == "runbook":
        return runbook_runs(live, step, paths)
    if step.kind == "synopsis":
        calls = SYNOPSES[synopsis_key(step.commands[0])]
        return [Run(c, live.clone, SYNOPSIS_OUTPUT.get(c, "")) for c in calls]
    first = step.commands[0]
    if first.startswith("hotswap init"):  # a fleet of one's own: in a folder of one's own
        (workspace := live.work / f"workspace-{step.line}").mkdir()
        return [Run("set -e\n" + "\n".join(step.commands), workspace)]
    if first.startswith("hotswap validate") and "invalid:" in step.shown:
        return [Run(first, setup_shown_problems(live, step), step.shown, (1,))]  # exit 1, README says
    return [Run("set -e\n" + "\n".join(step.commands), live.clone, step.shown)]


def matches(shown: str, actual: str) -> bool:
    """`actual` is what README shows, `...` standing for anything; JSON is compared as README writes it."""
    try:
        actual = json.dumps(json.loads(actual))
    except ValueError:
        pass
    pattern = ".*".join(re.escape(part) for part in shown.strip().split("..."))
    return re.fullmatch(pattern, actual.strip(), re.S) is not None


def ready(live: Live, script: str, out: str) -> bool:
    """Whether a command that runs until Ctrl-C is up (from its output, or by calling it)."""
    if "hotswap up" in script:
        return is_up(out)
    if "status" in script:
        return "MODULE" in out
    port = re.search(r"--port (\d+)", script)
    assert port, script
    if "--standalone" in script:
        body = '{"module": "calc", "function": "add", "args": [3, 2]}'
        probe = ["curl", "-sf", f"localhost:{port[1]}/api/v1/wasm/execute", "-d", body]
    elif "--control" in script:
        node = re.search(r"--id (\S+)", script)
        assert node, script
        probe = ["curl", "-sf", "-H", f"Authorization: Bearer {live.env['HOTSWAP_TOKEN']}"]
        probe.append(f"{live.control}/api/v1/wasm/nodes/{node[1]}")
        done = subprocess.run(probe, capture_output=True, text=True, check=False)
        return done.returncode == 0 and json.loads(done.stdout)["status"] == "Healthy"
    else:
        probe = ["curl", "-sf", f"localhost:{port[1]}/health"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def execute(live: Live, run: Run) -> None:
    script = run.script.replace("{work}", str(live.work)).replace("{port}", str(free_port()))
    script = "\n".join(rewrite(live, line) for line in script.splitlines())
    if LONG.search(script.splitlines()[-1]):
        log = live.work / f"long-{time.monotonic_ns()}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*AS_IN_A_TERMINAL, "bash", "-c", script], cwd=run.cwd, env=live.env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + DEADLINE
        try:
            while not ready(live, script, out_text := log.read_text(errors="replace")):
                assert process.poll() is None, f"{script}\nexited with {process.returncode}:\n{out_text}"
                assert time.monotonic() < deadline, f"{script}\nnot up within {DEADLINE:.0f} s:\n{out_text}"
                time.sleep(0.1)
        finally:
            code = stop(process)
        # Ctrl-C: 0, or 130 (128 + SIGINT, a shell's code for an interrupted command) for a watch.
        codes = (0, 130) if "--watch" in script else (0,)
        assert code in codes, f"{script}\nexited with {code} on Ctrl-C:\n{log.read_text(errors='replace')}"
        return

    def once() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", script], cwd=run.cwd, env=live.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=120, check=False,
        )  # fmt: skip

    done = once()
    # `hotswap diff` of the unchanged fleet says "no change" once the fleet has settled. It is live:
    # the node README's `hotswap edge --control` started (and Ctrl-C stopped) turns Unhealthy after
    # three missed heartbeats, and until the pass that follows has published, the diff rightly shows
    # its placements moving. So a diff that sees change is asked again until the fleet settles.
    deadline = time.monotonic() + DEADLINE
    while script.startswith("hotswap diff") and run.codes == (0,) and done.returncode == 1:
        assert time.monotonic() < deadline, (
            f"{script}\nthe fleet did not settle within {DEADLINE:.0f} s:\n{done.stdout}"
        )
        time.sleep(0.5)
        done = once()
    out = done.stdout  # with its errors, in the order a terminal shows them
    assert done.returncode in run.codes, f"{script}\n(in {run.cwd}) exited with {done.returncode}:\n{out}"
    if STATUS in out:
        out, status = out.rsplit(STATUS, 1)
        assert status.strip().startswith("2"), f"{script}\nanswered HTTP {status.strip()}: {out}"
    if run.shown:
        assert matches(run.shown, out), f"{script}\nREADME shows:\n{run.shown}\nbut it prints:\n{out}"


@pytest.mark.parametrize("step", RUN, ids=[s.id for s in RUN])
def test_readme_command_runs_as_readme_shows(live: Live, step: Step) -> None:
    for run in runs_of(live, step, live.paths):
        execute(live, run)
