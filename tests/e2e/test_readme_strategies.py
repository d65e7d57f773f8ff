"""End to end: every rollout strategy written in README.md works as README says, read from README itself.

The strategies are the fenced ```yaml blocks of README.md whose first line is `# strategies/NAME.yaml`,
taken at test time, so the documentation cannot drift from what works. The fleet around them is the
smallest a user would write from README: a Fleet with two regions and nothing else (plus the approval
rule, for the test of approvals), and Modules with `version`, `source: {path: ...}` and `rollout:` only.

Real processes: the control plane in this event loop, one edge node process in each region, a fleet
Git repository. README's promises checked here:
- BlueGreen, Rolling and Regional (blue-green in each region) finish with no traffic at all;
- Canary and ABTest finish under a light, paced load, and a faulty version under the same load is
  rolled back by the Canary after a handful of errors, quoting the module's own error;
- the Fleet's `policy.approvals.rollouts` holds a Rolling rollout until a principal with the role
  approves it (`hotswap approve MODULE@VERSION`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from reconciler.spec.limits import yaml_reader
from reconciler.spec.loader import load_fleet
from reconciler.spec.strategies import StrategyType
from tests.e2e.cluster import EXAMPLE, ROOT, Cluster, Load, poll, start_cluster, stop_cluster
from tests.git.gitutil import GIT_ENV, key_entry, make_key, trust_yaml

README = ROOT / "README.md"
REGIONS = [("edge-us-east-1", "us-east"), ("edge-eu-central-1", "eu-central")]
NODES = [n for n, _ in REGIONS]
FINISHED = ("Promoted", "RolledBack", "Aborted", "Superseded")
DEADLINE = 90.0  # for a group of rollouts that run at once (README has 0-second steps: they take seconds)

FLEET = """\
apiVersion: hotswap.dev/v1
kind: Fleet
metadata: {name: readme}
spec:
  regions: [{name: us-east}, {name: eu-central}]
"""
APPROVALS = "  policy:\n    approvals: {rollouts: {roles: [admin], count: 1}}\n"

# A light load: a few requests a second to every node, from a few users (README's A/B split is
# sticky by user); the pause between requests is the load's pace, not a wait for anything.
PER_NODE_RATE = 5.0
USERS = 16
USER_HEADER = "X-Hotswap-User"  # ABTest's default stickyHeader


# --- README's strategies ---------------------------------------------------------------------------

_FENCE = re.compile(r"^```yaml[ \t]*\n(?P<body># strategies/(?P<file>[^\s:]+\.yaml)\b.*?)^```[ \t]*$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    """One strategy as README writes it: its file, its text and the README line it starts on."""

    file: str  # strategies/NAME.yaml
    text: str
    line: int  # of the `# strategies/...` comment in README.md
    name: str = ""  # metadata.name, once the block has validated
    type: StrategyType | None = None


def readme_blocks(readme: str) -> list[Block]:
    """The fenced ```yaml blocks whose first line is `# strategies/NAME.yaml`, in README order."""
    blocks = [
        Block(f"strategies/{m['file']}", m["body"], readme.count("\n", 0, m.start("body")) + 1)
        for m in _FENCE.finditer(readme)
    ]
    assert blocks, "README.md has no strategy block (a ```yaml block starting with `# strategies/NAME.yaml`)"
    files = [b.file for b in blocks]
    assert len(set(files)) == len(files), f"README.md writes one strategy file twice: {files}"
    return blocks


def module_yaml(name: str, version: str, wat: str, rollout: str) -> str:
    """A Module with every optional field left out."""
    return (
        "apiVersion: hotswap.dev/v1\n"
        "kind: Module\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f"  version: {version}\n"
        f"  source: {{path: ../wasm/{wat}}}\n"
        f"  rollout: {rollout}\n"
    )


def fleet_files(
    blocks: list[Block], modules: Mapping[str, tuple[str, str]], *, approvals: bool = False
) -> dict[str, str]:
    """A fleet repository's files: the Fleet, README's strategies, `modules` (name -> (strategy
    name, WAT file of version 1.0.0)) and the example's WAT sources."""
    files = {"fleet.yaml": FLEET + (APPROVALS if approvals else "")}
    files.update({b.file: b.text for b in blocks})
    for name, (strategy, wat) in modules.items():
        files[f"modules/{name}.yaml"] = module_yaml(name, "1.0.0", wat, strategy)
    files.update({f"wasm/{p.name}": p.read_text() for p in (EXAMPLE / "wasm").glob("*.wat")})
    return files


def validated(blocks: list[Block]) -> list[Block]:
    """README's blocks, checked as `hotswap validate` checks a fleet made of them (no error and no
    warning, each located at its README line), with their names and types."""
    with tempfile.TemporaryDirectory(prefix="readme-fleet-") as tmp:
        root = Path(tmp)
        for rel, text in fleet_files(blocks, {}).items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        result = load_fleet(root)
    starts = {b.file: b.line for b in blocks}
    problems = [
        f"README.md:{starts[p.path] + p.line - 1}: {p}" if p.path in starts else str(p) for p in result.problems
    ]
    assert result.fleet is not None and not problems, "README's strategies do not validate:\n" + "\n".join(problems)
    out = []
    for block in blocks:
        name = yaml_reader("safe").load(block.text)["metadata"]["name"]
        strategy = result.fleet.strategies[name]
        out.append(Block(block.file, block.text, block.line, name, strategy.spec.type))
    return out


def readme_strategies() -> list[Block]:
    return validated(readme_blocks(README.read_text()))


def of_type(blocks: list[Block], *types: StrategyType) -> list[Block]:
    found = [b for b in blocks if b.type in types]
    assert found, f"README.md has no {' or '.join(types)} strategy block"
    return found


# --- the cluster, the load and the outcomes ---------------------------------------------------------


@contextlib.asynccontextmanager
async def readme_cluster(
    tmp: Path,
    blocks: list[Block],
    modules: Mapping[str, tuple[str, str]],
    *,
    approvals: bool = False,
    trust: Path | None = None,
) -> AsyncIterator[Cluster]:
    """A cluster on a fleet written from README, every module serving its version 1.0.0 everywhere."""
    cluster = await start_cluster(tmp, REGIONS, trust=trust, files=fleet_files(blocks, modules, approvals=approvals))
    try:
        await cluster.wait_ready(len(REGIONS))
        for module in modules:
            await cluster.wait_all_serving(module, "1.0.0", NODES)
        yield cluster
    finally:
        await stop_cluster(cluster)


class PacedLoad(Load):
    """`Load`'s checked requests, one at a time, PER_NODE_RATE a second to every node (in turn), each
    from one of USERS users (a session with its own X-Hotswap-User)."""

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        auth = self.cluster.edge_headers("developer")
        async with contextlib.AsyncExitStack() as stack:
            users = [
                await stack.enter_async_context(
                    aiohttp.ClientSession(timeout=timeout, headers={**auth, USER_HEADER: f"user-{k}"})
                )
                for k in range(USERS)
            ]
            for i in itertools.count():
                urls = list(self.targets())
                if urls:
                    await self._one(users[i % USERS], urls[i % len(urls)], i)
                try:  # the load's pace
                    await asyncio.wait_for(self._stop.wait(), 1 / (PER_NODE_RATE * max(1, len(urls))))
                    return
                except TimeoutError:
                    pass


def describe(record: Any) -> str:
    if record is None:
        return "no rollout"
    at = f"{record.kind.value} {record.percent}%" if record.kind is not None else "no step"
    steps = ", ".join(f"{h.kind.value if h.kind else '-'}:{h.outcome}" for h in record.history)
    return f"{record.target.version} {record.phase.value} at {at} ({record.reason}: {record.message}) [{steps}]"


async def outcomes(cluster: Cluster, targets: Mapping[str, str], timeout: float = DEADLINE) -> dict[str, Any]:
    """Each module's latest record once every module's rollout to its target version has finished,
    or when `timeout` is up (the caller asserts on what the records say)."""

    def finished() -> bool:
        records = {m: cluster.latest(m) for m in targets}
        return all(
            r is not None and r.target.version == targets[m] and r.phase.value in FINISHED for m, r in records.items()
        )

    with contextlib.suppress(AssertionError):
        await poll(finished, "every rollout to finish", timeout)
    return {m: cluster.latest(m) for m in targets}


def phases(records: Mapping[str, Any]) -> dict[str, str]:
    return {m: r.phase.value if r is not None else "none" for m, r in records.items()}


def report(records: Mapping[str, Any]) -> str:
    return "\n".join(f"{m}: {describe(r)}" for m, r in records.items())


def greeting(i: int) -> dict[str, str]:
    return {"name": "x" * (i % 7)}  # greeter-1.2.0-faulty traps on odd lengths: 3 requests in 7


# --- the tests -------------------------------------------------------------------------------------


def test_readme_strategy_blocks_validate_and_cover_every_strategy_type() -> None:
    blocks = readme_strategies()
    assert {b.type for b in blocks} == set(StrategyType), [(b.file, b.type) for b in blocks]


async def test_readme_canary_and_ab_test_finish_under_light_load_and_a_faulty_canary_rolls_back(
    tmp_path: Path,
) -> None:
    blocks = of_type(readme_strategies(), StrategyType.CANARY, StrategyType.AB_TEST)
    canaries = {f"greeter-{b.name}" for b in blocks if b.type is StrategyType.CANARY}
    modules = {
        f"greeter-{b.name}" if b.type is StrategyType.CANARY else f"calc-{b.name}": (
            b.name,
            "greeter-1.0.0.wat" if b.type is StrategyType.CANARY else "calc-1.0.0.wat",
        )
        for b in blocks
    }
    async with readme_cluster(tmp_path, blocks, modules) as cluster, contextlib.AsyncExitStack() as stack:
        loads = {
            m: await stack.enter_async_context(
                PacedLoad(cluster, m, "greet", greeting)
                if m in canaries
                else PacedLoad(cluster, m, "add", lambda i: [i, 1])
            )
            for m in modules
        }
        for module in modules:
            source = "greeter-1.1.0.wat" if module in canaries else "calc-1.1.0.wat"
            cluster.repo.set_module(module, "1.1.0", source)
        records = await outcomes(cluster, dict.fromkeys(modules, "1.1.0"))
        assert phases(records) == dict.fromkeys(modules, "Promoted"), report(records)
        for module, record in records.items():
            judged = [h for h in record.history if h.kind is not None and h.outcome == "Passed"]
            if module in canaries:  # every step passed on the default's 50 requests to the new version
                assert [h.kind.value for h in judged] == ["Weight"] * len(judged) and judged, describe(record)
                assert all(h.requests >= 50 for h in judged), [h.requests for h in judged]
            else:  # B stays: it did no worse
                assert record.ab_result is not None and record.ab_result.winner == "B", record.ab_result
            await cluster.wait_all_serving(module, "1.1.0", NODES)
        assert all(not load.result.module_errors for load in loads.values()), {m: x.result for m, x in loads.items()}

        # A faulty version under the same load: rolled back, in the module's own words.
        for module in canaries:
            cluster.repo.set_module(module, "1.2.0", "greeter-1.2.0-faulty.wat")
        faulty = await outcomes(cluster, dict.fromkeys(canaries, "1.2.0"))
        assert phases(faulty) == dict.fromkeys(canaries, "RolledBack"), report(faulty)
        for module in canaries:
            assert "last error: trap:" in faulty[module].message, describe(faulty[module])
            await cluster.wait_all_serving(module, "1.1.0", NODES)
    for module, load in loads.items():
        assert load.result.failures == [], (module, load.result.failures[:5])
        served = load.result.versions
        assert served["1.0.0"] > 0 and served["1.1.0"] > 0, (module, load.result)
        if module in canaries:
            assert set(load.result.module_errors) == {"1.2.0:trap"}, (module, load.result)
            assert load.result.module_errors["1.2.0:trap"] <= 10, (module, load.result)  # a handful


async def test_readme_fleet_approval_rule_holds_a_rolling_rollout_until_an_admin_approves(tmp_path: Path) -> None:
    rolling = of_type(readme_strategies(), StrategyType.ROLLING)[0]
    module = f"calc-{rolling.name}"
    target = f"{module}@1.1.0"
    alice = make_key(tmp_path / "keys", "alice")
    bob = make_key(tmp_path / "keys", "bob")
    trust = tmp_path / "trust.yaml"
    trust.write_text(
        trust_yaml(
            ("alice@example.com", ["admin"], key_entry(alice)), ("bob@example.com", ["developer"], key_entry(bob))
        )
    )
    modules = {module: (rolling.name, "calc-1.0.0.wat")}
    async with readme_cluster(tmp_path, [rolling], modules, approvals=True, trust=trust) as cluster:
        repo, controller = cluster.repo, cluster.plane.controller
        repo.set_module(module, "1.1.0", "calc-1.1.0.wat")
        held = await cluster.wait_phase(module, "1.1.0", ["WaitingApproval", *FINISHED])
        assert held.phase.value == "WaitingApproval", describe(held)
        assert all(cluster.serving(module)[n] == {("1.0.0", 100)} for n in NODES), cluster.serving(module)

        # A developer's signed approval does not hold the role the rule asks for: still held.
        head = repo.commit(f"approve {target}", key=bob.private, trailers=[f"Hotswap-Approve: {target}"])
        await poll(lambda: controller.state.revision == head, "the developer's approval commit")
        await controller.wait_for_pass(controller.state.passes, timeout=10)
        assert cluster.latest(module).phase.value == "WaitingApproval", describe(cluster.latest(module))
        assert all(cluster.serving(module)[n] == {("1.0.0", 100)} for n in NODES), cluster.serving(module)

        # An admin's, made by `hotswap approve` with the admin's own signing setup: it rolls out.
        await hotswap_approve(repo.root, target, alice.private)
        record = await cluster.wait_phase(module, "1.1.0", FINISHED)
        assert record.phase.value == "Promoted", describe(record)
        await cluster.wait_all_serving(module, "1.1.0", NODES)
    assert record.history[0].outcome == "Approved", describe(record)


async def test_readme_blue_green_rolling_and_regional_finish_without_any_traffic(tmp_path: Path) -> None:
    blocks = of_type(readme_strategies(), StrategyType.BLUE_GREEN, StrategyType.ROLLING, StrategyType.REGIONAL)
    modules = {f"calc-{b.name}": (b.name, "calc-1.0.0.wat") for b in blocks}
    async with readme_cluster(tmp_path, blocks, modules) as cluster:
        for module in modules:
            cluster.repo.set_module(module, "1.1.0", "calc-1.1.0.wat")
        records = await outcomes(cluster, dict.fromkeys(modules, "1.1.0"))
        assert phases(records) == dict.fromkeys(modules, "Promoted"), report(records)
        for module in modules:
            await cluster.wait_all_serving(module, "1.1.0", NODES)
    for block in blocks:
        record = records[f"calc-{block.name}"]
        assert all(h.requests == 0 for h in record.history), report(records)  # nobody sent a request
        kinds = [h.kind.value for h in record.history if h.kind is not None and h.outcome == "Passed"]
        regions = [h.region for h in record.history if h.region is not None]
        if block.type is StrategyType.BLUE_GREEN:  # loaded next to the old one at 0 %, then all traffic
            assert kinds[:2] == ["Preview", "Switch"], describe(record)
        elif block.type is StrategyType.ROLLING:  # node by node (batchSize 1)
            assert kinds.count("Batch") == len(NODES), describe(record)
        else:  # one region after another, in the Fleet's order, blue-green inside each
            assert list(dict.fromkeys(regions)) == ["us-east", "eu-central"], describe(record)
            assert kinds.count("Preview") == kinds.count("Switch") == 2, describe(record)


async def hotswap_approve(repo: Path, target: str, key: Path) -> None:
    """`hotswap approve TARGET` in a checkout whose git signs with the SSH key `key`."""
    signing = {"gpg.format": "ssh", "user.signingkey": str(key)}
    env = {**os.environ, **GIT_ENV, "GIT_CONFIG_COUNT": str(len(signing))}
    for i, (name, value) in enumerate(signing.items()):
        env |= {f"GIT_CONFIG_KEY_{i}": name, f"GIT_CONFIG_VALUE_{i}": value}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotswap", "approve", target, "--repo", str(repo),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
