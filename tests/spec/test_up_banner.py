"""What `hotswap up` tells a user to try names a module of the fleet it runs (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

from reconciler.commands.init import files
from reconciler.commands.up import example_call
from reconciler.spec.loader import load_fleet


def test_the_example_fleet_is_greeted(example_fleet: Path) -> None:
    module, body, path = example_call(load_fleet(example_fleet).fleet)
    assert (module, path) == ("greeter", "modules/greeter.yaml")
    assert json.loads(body)["function"] == "greet"


def test_a_fleet_from_hotswap_init_is_called_through_its_own_module(tmp_path: Path) -> None:
    for rel, text in files("mine").items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    module, body, path = example_call(load_fleet(tmp_path).fleet)
    assert (module, path) == ("adder", "modules/adder.yaml")
    assert json.loads(body) == {"module": "adder", "function": "add", "args": [1, 1]}


def test_no_fleet_no_example() -> None:
    assert example_call(None) == ("", "", "")
