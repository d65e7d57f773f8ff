"""A breaking interface change holds back the modules that implement it until it is approved."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.cluster import Cluster, Load, poll, start_cluster, stop_cluster
from tests.git.gitutil import key_entry, make_key, trust_yaml

REGIONS = [("edge-us-east-1", "us-east"), ("edge-eu-central-1", "eu-central")]
NODES = [n for n, _ in REGIONS]


def conditions(cluster: Cluster, module: str) -> dict[str, str]:
    return {c.type.value: c.reason for c in cluster.plane.controller.module_conditions(module) if c.status}


async def test_breaking_change_waits_for_approval_then_rolls_out(tmp_path: Path) -> None:
    alice = make_key(tmp_path / "keys", "alice")
    bob = make_key(tmp_path / "keys", "bob")
    trust = tmp_path / "trust.yaml"
    trust.write_text(
        trust_yaml(
            ("alice@example.com", ["admin"], key_entry(alice)), ("bob@example.com", ["developer"], key_entry(bob))
        )
    )
    cluster = await start_cluster(tmp_path, REGIONS, trust=trust)
    try:
        repo = cluster.repo
        await cluster.wait_ready(len(REGIONS))
        await cluster.wait_all_serving("greeter", "1.1.0", NODES)
        # 2.0.0 drops `health` (breaking, with a major bump); greeter 1.3.0 implements it.
        wit = repo.fleet / "interfaces/greeter.wit"
        wit.write_text(
            wit.read_text()
            .replace("@1.0.0", "@2.0.0")
            .replace("  /// 1 when the module is healthy.\n  health: func() -> s32;\n", "")
        )
        repo.edit("interfaces/greeter.yaml", "example:greeter@1.0.0", "example:greeter@2.0.0")
        repo.edit("modules/greeter.yaml", "greet@1.0.0", "greet@2.0.0")
        repo.edit("modules/greeter.yaml", "version: 1.1.0 ", "version: 1.3.0 ")
        repo.edit("modules/greeter.yaml", "greeter-1.1.0.wat", "greeter-1.3.0.wat")
        repo.derive_wat("greeter-1.1.0.wat", "greeter-1.3.0.wat", **{"1.1.0": "1.3.0"})
        repo.edit("modules/calc.yaml", "calc-1.0.0.wat", "calc-1.1.0.wat")
        repo.edit("modules/calc.yaml", "version: 1.0.0", "version: 1.1.0")
        repo.commit("greeter interface 2.0.0")

        await poll(
            lambda: conditions(cluster, "greeter").get("Paused") == "AwaitingInterfaceApproval",
            "greeter to wait for the interface approval",
        )
        # The rest of the revision goes ahead; greeter stays where it was.
        await cluster.wait_phase("calc", "1.1.0", ["Promoted"])
        assert cluster.latest("greeter").target.version == "1.1.0"
        assert all(s == {("1.1.0", 100)} for n, s in cluster.serving("greeter").items())

        # A developer's approval does not count; an admin's does.
        head = repo.commit("approve", key=bob.private, trailers=["Hotswap-Approve: example:greeter@2.0.0"])
        await poll(lambda: cluster.plane.controller.state.revision == head, "the developer's approval commit")
        controller = cluster.plane.controller
        await controller.wait_for_pass(controller.state.passes, timeout=10)
        assert conditions(cluster, "greeter").get("Paused") == "AwaitingInterfaceApproval"
        assert cluster.latest("greeter").target.version == "1.1.0"
        async with Load(cluster, "greeter", "greet", lambda i: {"name": "x" * (i % 5)}) as load:
            repo.commit("approve", key=alice.private, trailers=["Hotswap-Approve: example:greeter@2.0.0"])
            record = await cluster.wait_phase("greeter", "1.3.0", ["Promoted", "RolledBack"])
            assert record.phase.value == "Promoted", record
            await cluster.wait_all_serving("greeter", "1.3.0", NODES)
        assert load.result.failures == []
        events = [e.reason for e in cluster.plane.controller.events if e.module == "greeter"]
        assert events.count("AwaitingInterfaceApproval") == 1
    finally:
        await stop_cluster(cluster)
