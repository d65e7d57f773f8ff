"""`hotswap exec`, `hotswap edge` argument handling, and the standalone folder scan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.commands.edge import standalone_capabilities
from edge.standalone import DirectorySource
from hotswap.cli import main
from tests.edge.conftest import MODULES

ARITH = str(MODULES / "arith.wat")
EXAMPLE_WASM = Path(__file__).resolve().parents[2] / "fleet-example" / "wasm"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- hotswap exec ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((ARITH, "add", "2", "3"), 5),
        ((ARITH, "half", "5"), 2.5),
        ((str(MODULES / "echo.wat"), "echo", '{"a": [1, 2]}'), {"a": [1, 2]}),
        ((str(MODULES / "echo.wat"), "echo", "plain text"), "plain text"),
        ((str(MODULES / "echo.wat"), "echo", "1", "2"), [1, 2]),
        ((str(MODULES / "cat.wat"), "_start"), None),
        ((str(MODULES / "env.wat"), "_start", "--env", "A=1"), "A=1\0"),
        ((str(EXAMPLE_WASM / "hello-1.0.0.wasm"), "greet", "world"), {"text": "hello, world", "length": 12}),
    ],
)
def test_exec_prints_the_result_as_json(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], expected: object
) -> None:
    code, out, _ = run(capsys, "exec", *argv)
    assert code == 0
    assert json.loads(out) == expected


def test_exec_reads_a_granted_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "inside.txt").write_text("Z")
    code, out, _ = run(capsys, "exec", str(MODULES / "files.wat"), "read_inside", "--dir", f"{tmp_path}:/data")
    assert (code, json.loads(out)) == (0, ord("Z"))
    code, out, _ = run(capsys, "exec", str(MODULES / "files.wat"), "write_new", "--dir", f"{tmp_path}:/data:rw")
    assert (code, json.loads(out), (tmp_path / "new.txt").read_text()) == (0, 0, "hi")


@pytest.mark.parametrize(
    ("argv", "code", "error", "message"),
    [
        ((ARITH, "add", "1"), 2, "bad_request", "takes 2 argument"),
        ((ARITH, "nope"), 2, "not_found", "not an export"),
        ((ARITH, "crash"), 1, "trap", "unreachable"),
        ((str(MODULES / "limits.wat"), "spin", "--timeout-s", "0.05"), 1, "timeout", "0.05s"),
        (("missing.wasm", "f"), 2, "bad_request", "missing.wasm"),
        ((ARITH, "add", "--env", "novalue"), 2, "bad_request", "expected K=V"),
        ((ARITH, "add", "--dir", "a:b:xx"), 2, "bad_request", "HOST:GUEST"),
        ((ARITH, "add", "--dir", "/nonexistent:/data"), 1, "load", "not a directory"),
    ],
)
def test_exec_failures_print_json_to_stderr(
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int, error: str, message: str
) -> None:
    got, out, err = run(capsys, "exec", *argv)
    assert (got, out) == (code, "")
    body = json.loads(err)
    assert body["error"] == error and message in body["message"]


def test_exec_names_the_line_of_a_wat_syntax_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.wat"
    bad.write_text('(module\n  (func (export "f")\n    i32.bogus))\n')
    code, _, err = run(capsys, "exec", str(bad), "f")
    assert code == 2 and f"{bad}:3:" in json.loads(err)["message"]


# -- hotswap edge ---------------------------------------------------------------------------------


def test_edge_refuses_a_public_address_without_a_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "edge", "--standalone", str(tmp_path), "--host", "0.0.0.0")
    assert code == 2 and "refusing to listen on 0.0.0.0 without --key" in err


def test_edge_needs_an_existing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "edge", "--standalone", str(tmp_path / "nope"))
    assert code == 2 and "not a directory" in err


def test_edge_under_a_control_plane_needs_a_region(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "edge", "--control", "http://127.0.0.1:1")
    assert code == 2 and "--region" in err


def test_edge_checks_its_limits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "edge", "--standalone", str(tmp_path), "--cpu-percent", "0")
    assert code == 2 and "cpu_percent" in err


def test_standalone_capabilities_from_the_command_line(tmp_path: Path) -> None:
    caps = standalone_capabilities(["A=1", "B="], [f"{tmp_path}:/data", f"{tmp_path}:/out:rw"])
    assert caps.env == {"A": "1", "B": ""}
    assert [(g.guest, g.mode) for g in caps.filesystem] == [("/data", "ro"), ("/out", "rw")]
    with pytest.raises(ValueError, match="expected K=V"):
        standalone_capabilities(["novalue"], [])
    with pytest.raises(ValueError, match="HOST:GUEST"):
        standalone_capabilities([], ["a:b:c:d"])


def test_edge_reports_bad_capabilities(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "edge", "--standalone", str(tmp_path), "--dir", "x")
    assert code == 2 and "--dir 'x'" in err


# -- the standalone folder ------------------------------------------------------------------------


def test_the_folder_scan_names_modules_and_versions(tmp_path: Path) -> None:
    wat = (MODULES / "arith.wat").read_text()
    names = ("plain.wat", "greeter@1.0.0.wat", "greeter@1.10.0.wat", "greeter@1.9.0-rc.1.wat", "notes.txt")
    for name in (*names, "calc-2.0.0.wat", "calc-2.1.0-rc.1.wat", "pre@3.0.0-beta.wat"):
        (tmp_path / name).write_text(wat)
    (tmp_path / "bin.wasm").write_bytes(_binary(wat))
    scan = DirectorySource(tmp_path).scan()
    assert scan.problems == []
    table = {(e.module, e.version): e.weight for e in scan.entries}
    assert table == {
        ("bin", "0.0.0"): 100,
        ("greeter", "1.0.0"): 0,
        ("greeter", "1.10.0"): 100,
        ("greeter", "1.9.0-rc.1"): 0,
        ("plain", "0.0.0"): 100,
        ("calc", "2.0.0"): 100,  # NAME-X.Y.Z is a version too; a pre-release never outranks a release
        ("calc", "2.1.0-rc.1"): 0,
        ("pre", "3.0.0-beta"): 100,  # ... unless the module has nothing else
    }


def _binary(wat: str) -> bytes:
    from edge.wat import compile_wat

    return compile_wat(wat)


def test_the_folder_scan_reports_bad_files_and_goes_on(tmp_path: Path) -> None:
    (tmp_path / "good.wat").write_text((MODULES / "arith.wat").read_text())
    (tmp_path / "broken.wat").write_text('(module\n (func (export "f") i32.nope))')
    (tmp_path / "bad name!.wasm").write_bytes(b"\0asm")
    (tmp_path / "twice@1.0.0.wat").write_text("(module)")
    (tmp_path / "twice@1.0.0.wasm").write_bytes(_binary("(module)"))
    scan = DirectorySource(tmp_path).scan()
    assert [e.module for e in scan.entries] == ["good", "twice"]
    assert any(p.startswith("broken.wat:2:") for p in scan.problems)
    assert any(p.startswith("bad name!.wasm: expected NAME.wasm") for p in scan.problems)
    assert "twice@1.0.0.wat: twice@1.0.0 is served from twice@1.0.0.wasm; skipped" in scan.problems


def test_the_fleet_examples_wasm_folder_serves_each_module_by_name_with_every_version() -> None:
    """`hotswap edge --standalone fleet-example/wasm`: NAME-X.Y.Z files are versions of NAME; the
    highest release takes the traffic, a faulty pre-release (calc-1.2.0-faulty) is loaded at 0 %."""
    scan = DirectorySource(Path(__file__).parents[2] / "fleet-example" / "wasm").scan()
    table = {(e.module, e.version): e.weight for e in scan.entries}
    assert {k: w for k, w in table.items() if k[0] == "calc"} == {
        ("calc", "1.0.0"): 0,
        ("calc", "1.1.0"): 100,
        ("calc", "1.2.0-faulty"): 0,
    }
    assert {module for module, _ in table} == {"calc", "greeter", "hello", "wc"}
    assert scan.problems == ["hello-1.0.0.wat: hello@1.0.0 is served from hello-1.0.0.wasm; skipped"]


def test_a_missing_folder_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    scan = DirectorySource(tmp_path / "nope").scan()
    assert scan.entries == [] and "not a directory" in scan.problems[0]
