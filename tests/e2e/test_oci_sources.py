"""Modules from an OCI registry, end to end: a real registry on 127.0.0.1 (Debian's docker-registry), the
control plane following a bare repository under a signing policy, an edge node.

`hotswap push` publishes calc's builds; a fleet commit naming the artifact by digest rolls it out; a
digest the registry does not have and a registry that is down stall the revision with a reason while
the node keeps serving the last good one; and a ModuleUpdate turns a newer tag into a commit, signed
by the control plane, that bumps the Module (comments kept) and rolls out like any other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.cluster import Cluster, poll, stop_cluster
from tests.e2e.signed import People, push, start_signed_cluster, use_key
from tests.git.gitutil import free_port, git

ROOT = Path(__file__).resolve().parents[2]
WASM = ROOT / "fleet-example" / "wasm"
NODES = [("edge-us-east-1", "us-east")]


def hotswap_push(file: Path, target: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hotswap", "push", str(file), target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def set_source(cluster: Cluster, people: People, version: str, oci: str) -> str:
    lines = []
    for line in (cluster.repo.fleet / "modules" / "calc.yaml").read_text().splitlines():
        if line.startswith("  version: "):
            lines.append(f"  version: {version}")
        elif line.startswith("  source: "):
            lines.append(f"  source: {{oci: {oci}}}")
        else:
            lines.append(line)
    (cluster.repo.fleet / "modules" / "calc.yaml").write_text("\n".join(lines) + "\n")
    cluster.repo.commit(f"calc {version} from {oci}", key=people.alice.private)
    return push(cluster.repo)


async def add(cluster: Cluster) -> Any:
    url = next(iter(cluster.node_urls().values()))
    body = {"module": "calc", "function": "add", "args": [3, 2]}
    async with (
        aiohttp.ClientSession(headers=cluster.edge_headers()) as session,
        session.post(f"{url}/api/v1/wasm/execute", json=body) as response,
    ):
        return await response.json(content_type=None)


async def test_oci_artifacts_roll_out_stall_with_a_reason_and_update_from_new_tags(
    tmp_path: Path, oci_registry: Any
) -> None:
    host = oci_registry.host
    v110 = hotswap_push(WASM / "calc-1.1.0.wat", f"{host}/team/calc:1.1.0")
    assert v110.startswith(f"{host}/team/calc:1.1.0@sha256:")

    cluster, people = await start_signed_cluster(tmp_path, NODES)
    try:
        use_key(cluster.repo, people.alice)
        await cluster.wait_ready(len(NODES))
        await cluster.wait_all_serving("calc", "1.0.0", [n for n, _ in NODES])

        # a commit naming the artifact by digest: pulled, verified, registered and rolled out
        set_source(cluster, people, "1.1.0", v110)
        await cluster.wait_all_serving("calc", "1.1.0", [n for n, _ in NODES])
        assert (await add(cluster))["result"] == 5
        controller = cluster.plane.controller
        pulled = controller.binaries._with_artifacts  # the fleet with its pulled binaries, made once per revision
        assert pulled is not None and pulled[0] is controller.source.latest.fleet  # type: ignore[union-attr]
        passes = controller.state.passes
        controller.poke()
        assert await controller.wait_for_pass(passes, 30.0)
        assert controller.binaries._with_artifacts is pulled  # the same object every pass: the planner's caches hold

        # a digest the registry does not have: the revision stalls, 1.1.0 keeps serving
        missing = f"{host}/team/calc:1.1.1@sha256:" + "0" * 64
        set_source(cluster, people, "1.1.1", missing)
        await poll(lambda: controller.state.stalled is not None, "the revision with a missing digest to stall")
        stalled = controller.state.stalled
        assert stalled is not None and stalled.reason == "ArtifactPullFailed"
        assert "calc@1.1.1" in stalled.message and "not found" in stalled.message, stalled.message
        assert cluster.serving("calc")["edge-us-east-1"] == {("1.1.0", 100)}

        # a registry that is down: the same, saying it cannot be reached
        down = f"127.0.0.1:{free_port()}/team/calc:1.1.2@sha256:" + "1" * 64
        set_source(cluster, people, "1.1.2", down)
        await poll(
            lambda: controller.state.stalled is not None and "calc@1.1.2" in controller.state.stalled.message,
            "the revision naming a registry that is down to stall",
        )
        assert "unreachable" in controller.state.stalled.message  # type: ignore[union-attr]
        assert (await add(cluster))["version"] == "1.1.0"

        # back to the good artifact, then let the automation take newer tags
        set_source(cluster, people, "1.1.0", v110)
        await poll(lambda: controller.state.stalled is None, "the stall to clear")
        (cluster.repo.fleet / "updates").mkdir()
        (cluster.repo.fleet / "updates" / "calc.yaml").write_text(
            "apiVersion: hotswap.dev/v1\nkind: ModuleUpdate\nmetadata: {name: calc}\nspec:\n"
            f"  module: calc\n  repository: {host}/team/calc\n  semver: '^1.0.0'\n  intervalSeconds: 1\n"
            "  author: alice@example.com\n"
        )
        cluster.repo.edit("modules/calc.yaml", "rollout: blue-green", "rollout: canary")
        cluster.repo.edit(
            "strategies/canary.yaml", "minRequests: 20, onNoTraffic: pause", "minRequests: 0, onNoTraffic: proceed"
        )
        cluster.repo.commit("update calc from its OCI repository, by canary", key=people.alice.private)
        push(cluster.repo)
        hotswap_push(WASM / "calc-1.0.0.wat", f"{host}/team/calc:2.0.0")  # outside the range: never taken
        v120 = hotswap_push(WASM / "calc-1.0.0.wat", f"{host}/team/calc:1.2.0")

        record = await cluster.wait_ended("calc", "1.2.0")
        assert (record.phase.value, record.strategy_type.value) == ("Promoted", "Canary"), record.message
        await cluster.wait_all_serving("calc", "1.2.0", [n for n, _ in NODES])
        remote = tmp_path / "fleet.git"
        log = git(remote, "log", "-1", "--format=%an%n%s%n%b", "main")
        assert log.startswith("hotswap control plane\ncalc: 1.2.0 from "), log
        assert "Hotswap-Module-Update: calc" in log and v120 in log
        calc_yaml = git(remote, "show", "main:fleet/modules/calc.yaml")
        assert f"  version: 1.2.0\n  source: {{oci: {v120}}}\n" in calc_yaml
        assert "# Every node calls this on a new version" in calc_yaml  # the comments survive
        reasons = [e.reason for e in controller.events]
        assert "ModuleUpdateCommitted" in reasons
        audit = cluster.plane.store.audit_log(subject="calc", limit=200)
        assert any(a.action == "module.updateCommitted" and a.subject == "calc" for a in audit)
    finally:
        await stop_cluster(cluster)


def test_validate_resolve_names_each_artifact_the_registry_lacks(tmp_path: Path, oci_registry: Any) -> None:
    host = oci_registry.host
    good = hotswap_push(WASM / "calc-1.0.0.wat", f"{host}/check/calc:1.0.0")
    fleet = tmp_path / "fleet"
    (fleet / "modules").mkdir(parents=True)
    (fleet / "fleet.yaml").write_text(
        "apiVersion: hotswap.dev/v1\nkind: Fleet\nmetadata: {name: f}\nspec:\n  regions: [{name: us-east}]\n"
    )
    module = "apiVersion: hotswap.dev/v1\nkind: Module\nmetadata: {{name: {name}}}\nspec:\n  version: 1.0.0\n"
    (fleet / "modules" / "calc.yaml").write_text(module.format(name="calc") + f"  source: {{oci: {good}}}\n")
    (fleet / "modules" / "gone.yaml").write_text(
        module.format(name="gone") + f"  source: {{oci: {host}/check/gone:1.0.0}}\n"
    )

    def validate(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "hotswap", "validate", str(fleet), *flags]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)

    assert validate().returncode == 0  # offline: the references are well formed
    done = validate("--resolve")
    assert done.returncode == 1
    assert f"modules/gone.yaml:6: spec.source.oci: 1.0.0: {host}/check/gone:1.0.0: not found" in done.stdout
    assert "calc.yaml" not in done.stdout


def test_push_refuses_a_reference_with_a_digest_and_a_broken_file(tmp_path: Path, oci_registry: Any) -> None:
    host = oci_registry.host
    command = [sys.executable, "-m", "hotswap", "push"]
    done = subprocess.run(
        [*command, str(WASM / "calc-1.0.0.wat"), f"{host}/x/calc@sha256:" + "0" * 64],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "push to a tag" in done.stderr
    (tmp_path / "bad.wat").write_text('(module (func (export "f") (result i32) i64.const 1))')
    done = subprocess.run(
        [*command, str(tmp_path / "bad.wat"), f"{host}/x/bad:1.0.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "bad.wat" in done.stderr
