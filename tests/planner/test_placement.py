"""Placement: stable, minimal churn on failover and on join, spread, capacity, regions and replicas."""

from __future__ import annotations

import dataclasses
from collections import Counter

from reconciler.planner import NodeStatus, ObservedNode, place
from reconciler.planner.placement import ModulePlacement
from reconciler.spec.fleet import DesiredFleet
from reconciler.spec.models import Module

from .driver import example, with_module


def many_modules(count: int, replicas: int | str = 1, regions: list[str] | None = None) -> DesiredFleet:
    base = example().modules["wc"]
    placement = base.spec.placement.model_copy(update={"replicas": replicas, "regions": regions})
    spec = base.spec.model_copy(update={"placement": placement})
    modules = {
        f"m{i:04d}": Module(metadata=base.metadata.model_copy(update={"name": f"m{i:04d}"}), spec=spec)
        for i in range(count)
    }
    return dataclasses.replace(example(), modules=modules)


def region_nodes(count: int, region: str = "us-east", **kw: object) -> list[ObservedNode]:
    return [ObservedNode(f"{region}-{i:03d}", region, **kw) for i in range(count)]  # type: ignore[arg-type]


def holders(placement: dict[str, ModulePlacement], region: str = "us-east") -> dict[str, tuple[str, ...]]:
    return {m: p.regions.get(region, ()) for m, p in placement.items()}


def test_same_inputs_give_the_same_nodes_whatever_the_node_order() -> None:
    desired = many_modules(200, replicas=2, regions=["us-east"])
    nodes = region_nodes(10)
    assert holders(place(desired, nodes)) == holders(place(desired, list(reversed(nodes))))


def test_unhealthy_node_moves_only_its_own_modules() -> None:
    desired = many_modules(500, replicas=2, regions=["us-east"])
    nodes = region_nodes(10)
    before = holders(place(desired, nodes))
    lost = nodes[3].id
    nodes[3] = dataclasses.replace(nodes[3], status=NodeStatus.UNHEALTHY)
    after = holders(place(desired, nodes))
    for module, was in before.items():
        if lost in was:
            kept = set(was) - {lost}
            assert kept < set(after[module]) and len(after[module]) == 2
        else:
            assert after[module] == was
    assert all(lost not in h for h in after.values())


def test_deleted_node_moves_only_its_own_modules() -> None:
    desired = many_modules(300, regions=["us-east"])
    nodes = region_nodes(8)
    before = holders(place(desired, nodes))
    after = holders(place(desired, nodes[1:]))
    moved = {m for m in before if before[m] != after[m]}
    assert moved == {m for m, h in before.items() if nodes[0].id in h}


def test_joining_node_takes_only_its_fair_share() -> None:
    desired = many_modules(1000, regions=["us-east"])
    nodes = region_nodes(9)
    before = holders(place(desired, nodes))
    joined = ObservedNode("us-east-new", "us-east")
    after = holders(place(desired, [*nodes, joined]))
    moved = [m for m in before if before[m] != after[m]]
    assert all(after[m] == (joined.id,) for m in moved)  # nothing moves between old nodes
    assert 50 <= len(moved) <= 150  # about 1000 / 10


def test_modules_spread_evenly_over_the_nodes_of_a_region() -> None:
    desired = many_modules(3000, regions=["us-east"])
    load = Counter(h[0] for h in holders(place(desired, region_nodes(10))).values())
    assert len(load) == 10
    assert max(load.values()) < 1.35 * 300 and min(load.values()) > 0.65 * 300


def test_replicas_of_a_module_land_on_distinct_nodes_in_every_region() -> None:
    desired = many_modules(50, replicas=3)
    nodes = [n for r in ("us-east", "eu-central", "apac-east") for n in region_nodes(5, r)]
    for p in place(desired, nodes).values():
        assert set(p.regions) == {"us-east", "eu-central", "apac-east"}
        for region, ids in p.regions.items():
            assert len(set(ids)) == 3 and all(i.startswith(region) for i in ids)


def test_full_node_is_skipped_for_the_next_best() -> None:
    desired = many_modules(40, regions=["us-east"])
    nodes = [ObservedNode("us-east-000", "us-east", max_modules=5), *region_nodes(4)[1:]]
    placement = place(desired, nodes)
    load = Counter(p.regions["us-east"][0] for p in placement.values())
    assert load["us-east-000"] == 5
    assert sum(load.values()) == 40


def test_region_without_room_reports_the_missing_replicas() -> None:
    desired = many_modules(3, replicas=2, regions=["us-east"])
    placement = place(desired, region_nodes(1))
    assert all(p.missing == {"us-east": 1} for p in placement.values())
    assert all(len(p.regions["us-east"]) == 1 for p in placement.values())


def test_replicas_all_uses_every_healthy_node_of_the_region() -> None:
    desired = many_modules(2, replicas="all", regions=["eu-central"])
    nodes = [*region_nodes(4, "eu-central"), ObservedNode("eu-central-x", "eu-central", NodeStatus.DRAINING)]
    for p in place(desired, nodes).values():
        assert p.regions == {"eu-central": tuple(f"eu-central-{i:03d}" for i in range(4))}


def test_module_is_placed_only_in_its_regions_and_nodes_of_unknown_regions_hold_nothing() -> None:
    nodes = [*region_nodes(2, "us-east"), *region_nodes(2, "mars")]
    placement = place(example(), nodes)
    assert set(placement["wc"].regions) == {"us-east", "eu-central"}
    assert all(not n.startswith("mars") for p in placement.values() for n in p.nodes())


def test_pin_places_the_module_on_the_pinned_node_even_outside_the_replicas() -> None:
    desired = with_module(example(), "wc", placement={"pins": {"us-east-002": "1.0.0"}})
    placement = place(desired, region_nodes(3))["wc"]
    assert placement.pins == {"us-east-002": "1.0.0"}
    assert "us-east-002" not in placement.regions["us-east"]
    assert len(placement.regions["us-east"]) == 1
