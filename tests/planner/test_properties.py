"""Properties over random histories: replay plans nothing new, weights always add up, one step per pass,
Promoted only once every node given the new release reports running it alone."""

from __future__ import annotations

import hypothesis
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.planner import AdvanceStep, NodeStatus, Phase, Release, RunningEntry, Snapshot, plan

from .driver import Driver, approval, example, healthy_metrics, with_module

EVENTS = st.lists(
    st.sampled_from(["tick", "tick", "good", "bad", "quiet", "lose", "heal", "approve", "bump", "hold", "release"]),
    max_size=14,
)
ROLLOUTS = {
    "canary": ("greeter", "1.1.0"),
    "regional": ("greeter", "1.1.0"),
    "ab-test": ("greeter", "1.1.0"),
    "blue-green": ("calc", "1.0.0"),
    "rolling": ("wc", "1.0.0"),
}


def assert_every_holder_reports_only(seen: Snapshot, module: str, target: Release) -> None:
    """Promoted was recorded from `seen`: every healthy node given the target reports it alone."""
    alone = {RunningEntry(module, target.version, target.digest, 100)}
    for node in seen.nodes:
        given = {e.version for e in node.assigned if e.module == module}
        if node.status is NodeStatus.HEALTHY and target.version in given:
            assert {e for e in node.running if e.module == module} == alone, (node.id, node.running)


@settings(max_examples=60, deadline=None)
@given(strategy=st.sampled_from(sorted(ROLLOUTS)), events=EVENTS)
@hypothesis.example(strategy="regional", events=["bad", "approve"])  # an approved gate enters a step under bad metrics
def test_any_history_replays_to_nothing_and_keeps_weights_whole(strategy: str, events: list[str]) -> None:
    module, stable = ROLLOUTS[strategy]
    d = Driver(example())
    d.run()
    version = "2.0.0"
    d.desired = with_module(example(), module, version=version, rollout=strategy)
    metrics = healthy_metrics(module, stable) + healthy_metrics(module, version)
    d.run(at=0.0)
    lost: list[str] = []
    for event in events:
        if event == "good":
            metrics = healthy_metrics(module, stable) + healthy_metrics(module, version)
        elif event == "bad":
            metrics = healthy_metrics(module, stable) + healthy_metrics(module, version, errors=500)
        elif event == "quiet":
            metrics = []
        elif event == "lose":
            victim = sorted(d.holders(module) - set(lost))[:1]
            for node_id in victim:
                d.set_status(node_id, NodeStatus.UNHEALTHY)
                lost.append(node_id)
        elif event == "heal" and lost:
            d.set_status(lost.pop(), NodeStatus.HEALTHY)
        elif event == "approve":
            d.approvals = (*d.approvals, approval(module, version, f"admin{len(d.approvals)}", n=len(d.approvals)))
        elif event == "bump":
            version = f"2.{int(version.split('.')[1]) + 1}.0"
            d.desired = with_module(example(), module, version=version, rollout=strategy)
        elif event in ("hold", "release") and d.record(module).active:
            d.update_record(module, held=event == "hold")
        d.prompt = event != "tick"  # on ticks the nodes report their tables one pass late
        d.later(700.0, metrics)

        for seen, one in d.passes:
            assert sum(isinstance(a, AdvanceStep) for a in one.actions) <= 1
            for record in one.records:
                if record.phase is Phase.PROMOTED and record.strategy_type is not None:
                    assert_every_holder_reports_only(seen, module, record.target)
        # The same inputs as the last pass (a pass after one that entered a step sees no metrics yet).
        again = plan(d.snapshot(d.passes[-1][0].metrics))
        assert again.actions == () and again.records == (), (event, d.record(module))
        for node_id, weights in d.weights(module).items():
            assert sum(weights.values()) == 100, (node_id, weights)
            assert all(0 <= w <= 100 for w in weights.values())
