"""A module's limits, capabilities, health check and smoke calls are one type each (`edge.protocol`),
for a fleet's Module and a node's table alike: what a fleet may ask for is narrower than what a node
takes, and is checked only on fleet input (validation context FLEET_INPUT)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from edge.protocol import (
    FLEET_INPUT,
    MAX_SMOKE_DEPTH,
    MAX_SMOKE_JSON,
    Capabilities,
    HealthCheck,
    Limits,
    ModuleTable,
    SmokeCall,
)
from reconciler.spec import models

DIGEST = "sha256:" + "0" * 64


def errors(model: type[BaseModel], data: dict[str, Any], context: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    try:
        model.model_validate(data, context=context)
    except ValidationError as exc:
        return [(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors(include_url=False)]
    return []


@pytest.mark.parametrize(
    ("model", "data", "fleet", "node"),
    [
        (Limits, {"memoryMB": 1000}, "Input should be less than or equal to 512", None),
        (Limits, {"memoryMB": 5000}, "Input should be less than or equal to 512", "less than or equal to 4096"),
        (Limits, {"timeoutSeconds": 0.5}, "Input should be greater than or equal to 1", None),
        (Limits, {"timeoutSeconds": 0}, "Input should be greater than or equal to 1", "greater than 0"),
        (HealthCheck, {"function": ""}, "String should have at least 1 character", None),
        (HealthCheck, {"function": "f", "intervalSeconds": 0.05}, "greater than or equal to 0.1", None),
        (HealthCheck, {"function": "f", "intervalSeconds": 4000}, "less than or equal to 3600", None),
        (HealthCheck, {"function": "f", "args": 5}, "Input should be a valid list", "Input should be a valid tuple"),
        (Capabilities, {"env": {"1BAD": "x"}}, "String should match pattern", None),
        (Capabilities, {"filesystem": [{"host": "/srv/a", "guest": "data"}]}, "String should match pattern '^/'", None),
        (Capabilities, {"filesystem": [{"host": "/", "guest": "/d"}]}, "root directory is never granted", None),
        (Capabilities, {"network": {"allowHosts": "x"}}, "Input should be a valid list", "valid tuple"),
        (SmokeCall, {"function": "f", "args": list(range(MAX_SMOKE_JSON))}, f"at most {MAX_SMOKE_JSON}", None),
        (SmokeCall, {"function": "f", "expect": float("nan")}, "not plain JSON", None),
    ],
)
def test_a_fleet_may_ask_for_less_than_a_node_takes(
    model: type[BaseModel], data: dict[str, Any], fleet: str, node: str | None
) -> None:
    from_fleet = errors(model, data, FLEET_INPUT)
    assert len(from_fleet) == 1 and fleet in from_fleet[0][1], from_fleet
    from_anyone = errors(model, data, None)
    if node is None:
        assert from_anyone == []  # a node (and a stored table read back) takes it
    else:
        assert len(from_anyone) == 1 and node in from_anyone[0][1], from_anyone


def test_a_smoke_call_nesting_deeper_than_a_fleet_may_is_refused_on_fleet_input_only() -> None:
    deep: Any = []
    for _ in range(MAX_SMOKE_DEPTH):
        deep = [deep]
    assert errors(SmokeCall, {"function": "f", "args": deep}, FLEET_INPUT) == [
        ("", f"Value error, args: arrays and objects nest deeper than {MAX_SMOKE_DEPTH} levels")
    ]
    assert errors(SmokeCall, {"function": "f", "args": deep}, None) == []


def test_a_node_still_takes_what_the_wire_allows() -> None:
    entry = {
        "module": "m",
        "version": "1.0.0",
        "digest": DIGEST,
        "limits": {"memoryMB": 4096, "timeoutSeconds": 0.5},
        "healthCheck": {"function": "f", "intervalSeconds": 0.01},
    }
    table = ModuleTable.model_validate_json(ModuleTable.model_validate({"modules": [entry]}).model_dump_json())
    assert table.modules[0].limits.memory_mb == 4096
    with pytest.raises(ValidationError, match="less than or equal to 4096"):
        ModuleTable.model_validate({"modules": [{**entry, "limits": {"memoryMB": 4097}}]})


def test_the_fleet_names_the_protocol_types_it_uses() -> None:
    """One definition: the Module kind's parts are the wire's, and the JSON Schema shows a fleet's bounds."""
    assert (models.Limits, models.Capabilities, models.HealthCheck, models.SmokeCall) == (
        Limits,
        Capabilities,
        HealthCheck,
        SmokeCall,
    )
    schema = models.Module.model_json_schema(by_alias=True)["$defs"]
    assert schema["Limits"]["properties"]["memoryMB"]["maximum"] == 512
    assert schema["Limits"]["properties"]["timeoutSeconds"] == {
        "default": 30,
        "maximum": 300,
        "minimum": 1,
        "title": "Timeoutseconds",
        "type": "number",
    }
