"""The example fleet's greeter: it greets the name in its JSON input with its GREETING variable.

The real `fleet-example/wasm/greeter-*.wat` files, loaded by the edge runtime in a sandbox built
the way a node builds it (`Sandbox.from_entry`), with GREETING granted or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import wasm
from edge.coremodule import LoadedModule
from edge.errors import TrapError
from edge.protocol import Capabilities, Limits
from edge.runtime import Runtime, Sandbox
from reconciler.spec.loader import load_fleet

WASM = Path(__file__).resolve().parents[2] / "fleet-example" / "wasm"
NO_NAME: list[Any] = [None, {}, "", {"name": ""}, {"name": None}, {"other": [1, {"name": "x"}]}]
NOT_A_NAME: list[Any] = [5, True, [], ["Ada"], {"name": 5}, {"name": ["Ada"]}, {"name": {"first": "Ada"}}]
SHAPE_ERROR = 'expected {"name": "..."}, a JSON string or null'


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    with Runtime() as rt:
        yield rt


def source(version: str) -> str:
    return (WASM / f"greeter-{version}.wat").read_text()


def load(runtime: Runtime, text: str, env: dict[str, str] | None = None) -> LoadedModule:
    sandbox = Sandbox.from_entry(Limits(), Capabilities(env=env or {}))
    return runtime.load(wasm.compile_wat(text), sandbox)


def greet(loaded: LoadedModule, args: Any) -> Any:
    return loaded.invoke(loaded.prepare("greet", args)).value


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
@pytest.mark.parametrize("args", [{"name": "Ada"}, "Ada", {"age": 36, "name": "Ada", "tags": ["x"]}])
def test_a_name_is_greeted_with_greeting(runtime: Runtime, version: str, args: Any) -> None:
    loaded = load(runtime, source(version), {"GREETING": "howdy", "GREETINGS": "no", "GREET": "no"})
    assert greet(loaded, args) == {"greeting": "howdy, Ada", "version": version, "to": args}


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_without_greeting_a_name_is_greeted_with_hello(runtime: Runtime, version: str) -> None:
    for env in ({}, {"GREETING": ""}, {"OTHER": "howdy"}):
        loaded = load(runtime, source(version), env)
        assert greet(loaded, {"name": "Ada"})["greeting"] == "hello, Ada", env


@pytest.mark.parametrize("args", NO_NAME)
def test_without_a_name_the_friend_is_greeted(runtime: Runtime, args: Any) -> None:
    assert greet(load(runtime, source("1.1.0"), {"GREETING": "howdy"}), args)["greeting"] == "howdy, friend"
    assert greet(load(runtime, source("1.1.0")), args) == {"greeting": "hello, friend", "version": "1.1.0", "to": args}


def test_version_1_0_0_greets_nobody_by_name_without_a_name(runtime: Runtime) -> None:
    assert greet(load(runtime, source("1.0.0"), {"GREETING": "howdy"}), None)["greeting"] == "howdy"
    assert greet(load(runtime, source("1.0.0")), {})["greeting"] == "hello"


def test_the_fleet_grants_greeting_hello(runtime: Runtime, example_fleet: Path) -> None:
    fleet = load_fleet(example_fleet).fleet
    assert fleet is not None
    spec = fleet.modules["greeter"].spec
    assert spec.capabilities.env == {"GREETING": "hello"}
    loaded = load(runtime, source(str(spec.version)), dict(spec.capabilities.env))
    assert greet(loaded, {"name": "Ada"})["greeting"] == "hello, Ada"
    assert greet(loaded, {})["greeting"] == "hello, friend"


@pytest.mark.parametrize("name", ['A"d\\a', "line\nbreak\t\x01\x1f", "Ünïcode ☃ 🎉", "</script>", "\\u0041"])
def test_names_and_greetings_are_escaped_as_json(runtime: Runtime, name: str) -> None:
    assert greet(load(runtime, source("1.1.0")), {"name": name})["greeting"] == f"hello, {name}"
    loaded = load(runtime, source("1.1.0"), {"GREETING": name})
    assert greet(loaded, "Ada")["greeting"] == f"{name}, Ada"
    assert greet(loaded, None)["greeting"] == f"{name}, friend"


def test_names_and_greetings_are_bounded_without_trapping(runtime: Runtime) -> None:
    loaded = load(runtime, source("1.1.0"))
    assert greet(loaded, "x" * 256)["greeting"] == "hello, " + "x" * 256
    assert greet(loaded, "x" * 257) == {"error": "name is longer than 256 bytes", "version": "1.1.0"}
    assert "error" in greet(loaded, "é" * 50)  # 256 bytes of JSON text: 300 as \u00e9 escapes
    assert greet(loaded, {"name": "Ada"})["greeting"] == "hello, Ada"  # the same instance goes on
    long = load(runtime, source("1.1.0"), {"GREETING": "x" * 257})
    assert greet(long, "Ada") == {"error": "GREETING is longer than 256 bytes", "version": "1.1.0"}
    assert greet(load(runtime, source("1.1.0"), {"GREETING": "x" * 256}), "Ada")["greeting"] == "x" * 256 + ", Ada"


@pytest.mark.parametrize("args", NOT_A_NAME)
def test_other_inputs_answer_an_error_without_trapping(runtime: Runtime, args: Any) -> None:
    loaded = load(runtime, source("1.1.0"), {"GREETING": "howdy"})
    assert greet(loaded, args) == {"error": SHAPE_ERROR, "version": "1.1.0"}


def test_raw_input_that_is_not_the_json_the_host_sends_answers_an_error(runtime: Runtime) -> None:
    loaded = load(runtime, source("1.1.0"))
    inst = loaded._take()
    bad = [b"", b"  ", b'"Ada', b'"A\\x"', b'"\\u12"', b'{"name"}', b'{"name":"Ada",}', b'{"name":"Ada"} x', b"nul"]
    for raw in bad:
        assert inst.run_json("greet", raw) == {"error": SHAPE_ERROR, "version": "1.1.0"}, raw
    assert inst.run_json("greet", b' {\n"name" : "Ada" }\t') == {
        "greeting": "hello, Ada",
        "version": "1.1.0",
        "to": {"name": "Ada"},
    }


def test_a_build_derived_by_replacing_the_default_and_the_version_answers_them(runtime: Runtime) -> None:
    """What the e2e and chaos tests do to make greeter 1.3.0 from 1.1.0 (`derive_wat`)."""
    for default in ("hello, fellow", "good day to you, dear stranger"):
        text = source("1.1.0").replace("1.1.0", "1.3.0").replace("hello, friend", default)
        answer = greet(load(runtime, text), None)
        assert answer == {"greeting": default, "version": "1.3.0", "to": None}
    text = source("1.1.0").replace("1.1.0", "1.3.0").replace("hello, friend", "hello, fellow")
    assert greet(load(runtime, text, {"GREETING": "hi"}), {})["greeting"] == "hi, fellow"


def test_the_faulty_build_traps_on_odd_lengths_and_greets_on_even_ones(runtime: Runtime) -> None:
    loaded = load(runtime, source("1.2.0-faulty"), {"GREETING": "hello"})
    assert greet(loaded, {"name": "Ada"}) == {"greeting": "hello, Ada", "version": "1.2.0", "to": {"name": "Ada"}}
    with pytest.raises(TrapError, match="unreachable"):
        greet(loaded, {"name": "Adam"})
    assert greet(load(runtime, source("1.2.0-faulty")), "Adam")["greeting"] == "hi, Adam"


def test_many_calls_on_one_instance_reuse_its_arena(runtime: Runtime) -> None:
    loaded = load(runtime, source("1.1.0"), {"GREETING": "howdy"})
    for i in range(300):
        name = "x" * (i % 7)
        assert greet(loaded, {"name": name})["greeting"] == f"howdy, {name or 'friend'}"
    inst = loaded._take()
    assert inst.memory is not None and inst.memory.size(inst.store) == 1  # pages: nothing leaked
