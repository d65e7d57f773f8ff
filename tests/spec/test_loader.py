"""The fleet loader reports every problem, each at the file, line and field that causes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec.loader import load_fleet
from tests.spec.fleets import ADDER_WAT, MODULE, STRATEGY, write_fleet


def problems(root: Path) -> list[str]:
    return [str(p) for p in load_fleet(root).problems]


def test_example_fleet_is_valid(example_fleet: Path) -> None:
    result = load_fleet(example_fleet)
    assert result.problems == ()
    assert result.ok
    fleet = result.fleet
    assert fleet is not None
    assert set(fleet.modules) == {"greeter", "calc", "wc", "hello"}
    assert {s.spec.type.value for s in fleet.strategies.values()} == {
        "Canary",
        "BlueGreen",
        "Rolling",
        "Regional",
        "ABTest",
    }
    conventions = {
        (name, e.name): e.convention
        for (name, _), b in fleet.binaries.items()
        for e in b.info.exports
        if e.kind == "func"
    }
    assert conventions[("calc", "add")] == "numeric"
    assert conventions[("greeter", "greet")] == "json"
    assert conventions[("wc", "_start")] == "command"


def test_a_valid_fleet_resolves_binaries_and_defaults(tmp_path: Path) -> None:
    result = load_fleet(write_fleet(tmp_path))
    assert result.ok, result.problems
    assert result.fleet is not None
    module = result.fleet.modules["adder"]
    assert module.id == "adder-v1.0.0"
    assert (module.spec.limits.memory_mb, module.spec.limits.cpu_percent, module.spec.limits.timeout_seconds) == (
        128,
        50,
        30,
    )
    assert module.spec.placement.replicas == 1
    binary = result.fleet.binaries[("adder", "1.0.0")]
    assert binary.digest.startswith("sha256:") and binary.data[:4] == b"\0asm"
    assert result.fleet.digest_of("adder", "1.0.0") == binary.digest


@pytest.mark.parametrize(
    ("module_yaml", "expected"),
    [
        (MODULE.replace("1.0.0", "1.2"), "modules/adder.yaml:6: spec.version: '1.2' is not semver"),
        (
            MODULE + "  limits: {memoryMB: 600}\n",
            "modules/adder.yaml:9: spec.limits.memoryMB: Input should be less than or equal to 512",
        ),
        (
            MODULE + "  limits: {cpuPercent: 0}\n",
            "modules/adder.yaml:9: spec.limits.cpuPercent: Input should be greater than or equal to 1",
        ),
        (
            MODULE + "  limits: {timeoutSeconds: 301}\n",
            "modules/adder.yaml:9: spec.limits.timeoutSeconds: Input should be less than or equal to 300",
        ),
        (
            MODULE + "  placement: {replicas: 4}\n",
            'modules/adder.yaml:9: spec.placement.replicas: replicas must be 1, 2, 3 or "all"',
        ),
        (
            MODULE + "  limts: {memoryMB: 64}\n",
            "modules/adder.yaml:9: spec.limts: unknown field; did you mean 'limits'?",
        ),
        (MODULE.replace("name: adder", "name: Adder_1"), "modules/adder.yaml:4: metadata.name: String should match"),
        (
            MODULE.replace("  source: {path: ../wasm/adder.wat}\n", ""),
            "modules/adder.yaml:5: spec.source: required field is missing",
        ),
        (
            MODULE.replace("{path: ../wasm/adder.wat}", "{path: ../wasm/adder.wat, digest: sha256:" + "a" * 64 + "}"),
            "modules/adder.yaml:7: spec.source: give exactly one of `path`, `digest` or `oci`",
        ),
        (
            MODULE + "  sha256: xyz\n",
            "modules/adder.yaml:9: spec.sha256: must be 64 lowercase hex digits",
        ),
    ],
    ids=["semver", "memory", "cpu", "timeout", "replicas", "unknown-field", "name", "missing", "source", "sha"],
)
def test_schema_errors_name_file_line_and_field(tmp_path: Path, module_yaml: str, expected: str) -> None:
    found = problems(write_fleet(tmp_path, {"modules/adder.yaml": module_yaml}))
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    bad_module = MODULE.replace("1.0.0", "one").replace("canary", "nope") + "  limits: {memoryMB: 0, bogus: 1}\n"
    bad_strategy = STRATEGY.replace("stepSeconds: 1", "stepSeconds: -1")
    found = problems(write_fleet(tmp_path, {"modules/adder.yaml": bad_module, "strategies/canary.yaml": bad_strategy}))
    fields = {p.split(": ")[1] for p in found}
    assert {"spec.version", "spec.limits.memoryMB", "spec.limits.bogus", "spec.canary.stepSeconds"} <= fields
    assert "spec.rollout" not in fields  # a document that fails its schema is not cross-checked


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"modules/broken.yaml": "kind: Module\nmetadata: {name: x\nspec: 1\n"}))
    assert any(p.startswith("modules/broken.yaml:3: yaml:") for p in found), found


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"modules/adder.yaml": MODULE + "  version: 2.0.0\n"}))
    assert any(p.startswith("modules/adder.yaml:") and "duplicate" in p for p in found), found


def test_unknown_kind_and_missing_kind(tmp_path: Path) -> None:
    found = problems(
        write_fleet(
            tmp_path,
            {"extra.yaml": "kind: Deployment\nmetadata: {name: x}\n---\nmetadata: {name: y}\nspec: {}\n"},
        )
    )
    kinds = "Fleet, Module, RolloutStrategy, Interface, Alert, ModuleUpdate"
    assert f"extra.yaml:1: kind: unknown kind 'Deployment'; one of {kinds}" in found
    assert any(p.startswith("extra.yaml:4: kind: missing") for p in found), found


def test_wrong_api_version(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"modules/adder.yaml": "apiVersion: v2\n" + MODULE.split("\n", 1)[1]}))
    assert "modules/adder.yaml:1: apiVersion: 'v2' is not hotswap.dev/v1" in found


def test_duplicate_names_point_at_the_first(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"modules/again.yaml": MODULE}))
    assert "modules/again.yaml:4: metadata.name: Module 'adder' is already defined at modules/adder.yaml:4" in found


def test_more_than_one_fleet(tmp_path: Path) -> None:
    from tests.spec.fleets import FLEET

    found = problems(write_fleet(tmp_path, {"other/fleet.yaml": FLEET}))
    assert any(p.startswith("other/fleet.yaml:2: kind: a second Fleet; the first is at fleet.yaml:1") for p in found)


def test_no_fleet(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"fleet.yaml": None}))
    assert ".: kind: no Fleet document found; a fleet root needs exactly one" in found


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"modules/adder.yaml": MODULE.replace("rollout: canary", "rollout: blue")},
            "modules/adder.yaml:8: spec.rollout: no RolloutStrategy named 'blue'",
        ),
        (
            {"modules/adder.yaml": MODULE + "  placement: {regions: [us-east, mars]}\n"},
            "modules/adder.yaml:9: spec.placement.regions[1]: unknown region 'mars'",
        ),
        (
            {"modules/adder.yaml": MODULE + "  implements: acme:thing/api@1.0.0\n"},
            "modules/adder.yaml:9: spec.implements: no Interface declares package 'acme:thing@1.0.0'",
        ),
        (
            {"modules/adder.yaml": MODULE + "  placement:\n    pins: {edge-1: 9.9.9}\n"},
            "modules/adder.yaml:10: spec.placement.pins.edge-1: pins unknown version 9.9.9 (1.0.0 are declared)",
        ),
        (
            {
                "modules/adder.yaml": MODULE
                + "  placement:\n    versionOverrides:\n      - {regions: [eu-central], version: 0.9.0}\n"
            },
            "modules/adder.yaml:11: spec.placement.versionOverrides[0].version: version 0.9.0 is not one of",
        ),
        (
            {
                "strategies/regional.yaml": STRATEGY.replace("name: canary", "name: regional")
                .replace("type: Canary", "type: Regional")
                .replace("canary: {steps: [50, 100], stepSeconds: 1}", "regional: {perRegion: nope, order: [moon]}")
            },
            "strategies/regional.yaml:7: spec.regional.order[0]: unknown region 'moon'",
        ),
        (
            {"strategies/canary.yaml": STRATEGY + "  approval: {gates: [5]}\n"},
            "strategies/canary.yaml:8: spec.approval.gates[0]: step 5 does not exist (2 steps)",
        ),
        (
            {"strategies/canary.yaml": STRATEGY + "  blueGreen: {previewSeconds: 5}\n"},
            "strategies/canary.yaml:8: spec.blueGreen: `blueGreen` is set but the type is Canary",
        ),
    ],
    ids=["strategy", "region", "interface", "pin", "override", "regional", "gate", "params-for-other-type"],
)
def test_references_between_documents(tmp_path: Path, files: dict[str, str | None], expected: str) -> None:
    found = problems(write_fleet(tmp_path, files))
    assert any(p.startswith(expected) for p in found), found


def test_paths_may_not_leave_the_fleet_root(tmp_path: Path) -> None:
    (tmp_path / "outside.wat").write_text(ADDER_WAT)
    root = write_fleet(
        tmp_path / "fleet", {"modules/adder.yaml": MODULE.replace("../wasm/adder.wat", "../../outside.wat")}
    )
    assert "modules/adder.yaml:7: spec.source.path: '../../outside.wat' leaves the fleet root" in problems(root)


def test_missing_source_file(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"wasm/adder.wat": None}))
    assert "modules/adder.yaml:7: spec.source.path: '../wasm/adder.wat' does not exist" in found


def test_wat_syntax_error_names_the_wat_line(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"wasm/adder.wat": '(module\n  (func (export "x")\n   (bogus)))\n'}))
    assert any(p.startswith("modules/adder.yaml:7: spec.source.path: wasm/adder.wat:3:") for p in found), found


def test_invalid_binary(tmp_path: Path) -> None:
    module = MODULE.replace("adder.wat", "adder.wasm")
    found = problems(write_fleet(tmp_path, {"modules/adder.yaml": module, "wasm/adder.wasm": b"\0asm\x01\0\0\0\x05"}))
    assert any(p.startswith("modules/adder.yaml:7: spec.source.path: wasm/adder.wasm:") for p in found), found
    found = problems(write_fleet(tmp_path, {"modules/adder.yaml": module, "wasm/adder.wasm": b"not wasm"}))
    assert any("not a WebAssembly binary" in p for p in found), found


def test_sha256_pin_is_checked(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"modules/adder.yaml": MODULE + "  sha256: " + "ab" * 32 + "\n"}))
    assert any(p.startswith("modules/adder.yaml:9: spec.sha256: pinned sha256:abab") for p in found), found


def test_initial_memory_over_the_limit_is_refused(tmp_path: Path) -> None:
    wat = '(module (memory (export "memory") 40) (func (export "health") (result i32) (i32.const 1)))'
    found = problems(
        write_fleet(tmp_path, {"wasm/adder.wat": wat, "modules/adder.yaml": MODULE + "  limits: {memoryMB: 1}\n"})
    )
    refused = "adder.wat: declares 2.5 MB of initial memory (40 pages), over its 1 MB limit"
    assert any(refused in p for p in found), found


def test_unsatisfiable_imports_are_refused_by_name(tmp_path: Path) -> None:
    wat = (
        '(module (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))'
        ' (import "wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
        ' (import "wasi_snapshot_preview1" "sock_connect" (func))'
        ' (import "env" "host_thing" (func)))'
    )
    found = problems(write_fleet(tmp_path, {"wasm/adder.wat": wat}))
    assert any("env.host_thing: only WASI preview 1 imports can be satisfied" in p for p in found), found
    assert any("wasi_unstable.fd_write: the old WASI snapshot" in p for p in found), found
    assert any("wasi_snapshot_preview1.sock_connect: not a WASI preview 1 function" in p for p in found), found
    # sock_accept is linked (wasi-libc imports it in most programs); no socket is ever handed in
    assert not any("sock_accept" in p for p in found), found


def test_health_check_must_name_an_export(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"modules/adder.yaml": MODULE + "  healthCheck: {function: ping}\n"}))
    assert "modules/adder.yaml:9: spec.healthCheck.function: the binary exports no function 'ping'" in found


def test_extra_versions_resolve_their_own_binaries(tmp_path: Path) -> None:
    module = (
        MODULE
        + "  versions:\n    - {version: 0.9.0, source: {path: ../wasm/adder.wat}}\n"
        + "  placement:\n    pins: {edge-1: 0.9.0}\n"
    )
    result = load_fleet(write_fleet(tmp_path, {"modules/adder.yaml": module}))
    assert result.ok, result.problems
    assert result.fleet is not None
    assert ("adder", "0.9.0") in result.fleet.binaries


def test_hidden_folders_are_skipped(tmp_path: Path) -> None:
    result = load_fleet(write_fleet(tmp_path, {".github/workflow.yaml": "on: push\njobs: {}\n"}))
    assert result.ok, result.problems


def test_a_document_that_is_not_a_mapping(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"list.yaml": "- a\n- b\n"}))
    assert any(p.startswith("list.yaml:1: (document): a document must be a mapping") for p in found), found


def test_deprecated_interface_warns_but_passes(tmp_path: Path) -> None:
    iface = (
        "apiVersion: hotswap.dev/v1\nkind: Interface\nmetadata: {name: adder}\nspec:\n"
        "  package: test:adder@1.0.0\n  wit: adder.wit\n  deprecated: true\n  deprecationMessage: use 2.x\n"
    )
    files: dict[str, str | bytes | None] = {
        "interfaces/adder.yaml": iface,
        "interfaces/adder.wit": "package test:adder@1.0.0;\ninterface api { add: func(a: s32, b: s32) -> s32; }\n",
        "modules/adder.yaml": MODULE + "  implements: test:adder/api@1.0.0\n",
    }
    result = load_fleet(write_fleet(tmp_path, files))
    assert result.ok
    assert [str(p) for p in result.warnings] == [
        "modules/adder.yaml:9: spec.implements: warning: interface test:adder@1.0.0 is deprecated: use 2.x"
    ]


def test_not_a_directory(tmp_path: Path) -> None:
    result = load_fleet(tmp_path / "missing")
    assert not result.ok
    assert "is not a directory" in result.problems[0].message


IFACE = (
    "apiVersion: hotswap.dev/v1\nkind: Interface\nmetadata: {name: adder}\nspec:\n"
    "  package: test:adder@1.0.0\n  wit: adder.wit\n"
)
ADDER_WIT = "package test:adder@1.0.0;\n\ninterface api {\n  add: func(a: s32, b: s32) -> s32;\n}\n"


def test_wit_syntax_error_names_the_wit_line(tmp_path: Path) -> None:
    files: dict[str, str | bytes | None] = {
        "interfaces/adder.yaml": IFACE,
        "interfaces/adder.wit": "package test:adder@1.0.0;\n\ninterface api {\n  add: func(a: s32 -> s32;\n}\n",
    }
    found = problems(write_fleet(tmp_path, files))
    assert any(p.startswith("interfaces/adder.yaml:6: spec.wit: interfaces/adder.wit:4: ") for p in found), found


def test_wit_package_must_match_the_declared_one(tmp_path: Path) -> None:
    files: dict[str, str | bytes | None] = {
        "interfaces/adder.yaml": IFACE.replace("test:adder@1.0.0", "test:adder@2.0.0"),
        "interfaces/adder.wit": ADDER_WIT,
    }
    found = problems(write_fleet(tmp_path, files))
    assert (
        "interfaces/adder.yaml:5: spec.package: 'test:adder@2.0.0' does not match the WIT, "
        "which declares 'test:adder@1.0.0'"
    ) in found


def test_module_must_satisfy_the_interface_it_implements(tmp_path: Path) -> None:
    wit = ADDER_WIT.replace("}\n", "  sub: func(a: s32, b: s32) -> s32;\n}\n")
    files: dict[str, str | bytes | None] = {
        "interfaces/adder.yaml": IFACE,
        "interfaces/adder.wit": wit,
        "modules/adder.yaml": MODULE + "  implements: test:adder/api@1.0.0\n",
    }
    found = problems(write_fleet(tmp_path, files))
    assert any(
        p.startswith("modules/adder.yaml:9: spec.implements: wasm/adder.wat (1.0.0): sub: missing export")
        for p in found
    ), found


def test_module_that_satisfies_its_interface_passes(tmp_path: Path) -> None:
    files: dict[str, str | bytes | None] = {
        "interfaces/adder.yaml": IFACE,
        "interfaces/adder.wit": ADDER_WIT,
        "modules/adder.yaml": MODULE + "  implements: test:adder/api@1.0.0\n",
    }
    result = load_fleet(write_fleet(tmp_path, files))
    assert result.ok, result.problems
    assert result.fleet is not None
    assert result.fleet.wit_packages["adder"].name == "test:adder@1.0.0"


ALERT = (
    "apiVersion: hotswap.dev/v1\nkind: Alert\nmetadata: {name: on-call}\nspec:\n"
    "  eventTypes: [rollout.rolledBack]\n  modules: [adder, nope]\n"
    "  webhook: {url: 'https://ops.example.com/hook', secretEnv: HOOK_SECRET}\n"
)


def test_alerts_are_loaded_and_name_existing_modules(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"alerts/on-call.yaml": ALERT}))
    assert found == ["alerts/on-call.yaml:6: spec.modules[1]: no Module named 'nope'"]
    result = load_fleet(write_fleet(tmp_path, {"alerts/on-call.yaml": ALERT.replace(", nope", "")}))
    assert result.ok, result.problems
    assert result.fleet is not None
    assert list(result.fleet.alerts) == ["on-call"]


BLUE_GREEN = """\
apiVersion: hotswap.dev/v1
kind: RolloutStrategy
metadata:
  name: blue-green
spec:
  type: BlueGreen
  blueGreen: {previewSeconds: 0, autoPromote: true}
"""


@pytest.mark.parametrize(
    ("analysis", "warned"),
    [
        ("", False),  # left out: moves on once loaded and healthy
        ("  analysis: {minRequests: 0}\n", False),
        ("  analysis: {minRequests: 20, onNoTraffic: proceed}\n", False),
        ("  analysis:\n    maxErrorRate: 0.02\n    minRequests: 20\n", True),
        ("  analysis: {maxErrorRate: 0.02}\n", True),  # minRequests 50 and pause by default
    ],
)
def test_blue_green_whose_preview_waits_for_traffic_warns_that_it_cannot_progress(
    tmp_path: Path, analysis: str, warned: bool
) -> None:
    result = load_fleet(write_fleet(tmp_path, {"strategies/blue-green.yaml": BLUE_GREEN + analysis}))
    assert result.ok, result.problems  # a warning, never an error
    found = [str(p) for p in result.warnings]
    if not warned:
        assert found == []
        return
    line = 10 if "\n    minRequests" in analysis else 8
    assert len(found) == 1
    assert found[0].startswith(
        f"strategies/blue-green.yaml:{line}: spec.analysis.minRequests: warning: this strategy cannot progress"
    )
    assert "X-Hotswap-Version" in found[0] and "onNoTraffic: proceed" in found[0]


def test_a_canary_that_waits_for_traffic_does_not_warn(tmp_path: Path) -> None:
    canary = STRATEGY + "  analysis: {minRequests: 50, onNoTraffic: pause}\n"
    result = load_fleet(write_fleet(tmp_path, {"strategies/canary.yaml": canary}))
    assert result.ok and result.warnings == ()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"modules/adder.yaml": MODULE.replace("rollout: canary", "rollout: canari")},
            "modules/adder.yaml:8: spec.rollout: no RolloutStrategy named 'canari'; did you mean 'canary'?",
        ),
        (
            {"modules/adder.yaml": MODULE + "  placement: {regions: [us-east, eu-centrl]}\n"},
            "modules/adder.yaml:9: spec.placement.regions[1]: unknown region 'eu-centrl' (the Fleet has eu-central, "
            "us-east); did you mean 'eu-central'?",
        ),
        (
            {
                "interfaces/adder.yaml": IFACE,
                "interfaces/adder.wit": ADDER_WIT,
                "modules/adder.yaml": MODULE + "  implements: test:addr/api@1.0.0\n",
            },
            "modules/adder.yaml:9: spec.implements: no Interface declares package 'test:addr@1.0.0'; "
            "did you mean 'test:adder@1.0.0'?",
        ),
        (
            {"alerts/on-call.yaml": ALERT.replace(", nope", ", addr")},
            "alerts/on-call.yaml:6: spec.modules[1]: no Module named 'addr'; did you mean 'adder'?",
        ),
        (
            {"alerts/on-call.yaml": ALERT.replace("rollout.rolledBack", "rollout.rolledback")},
            "alerts/on-call.yaml:5: spec.eventTypes: 'rollout.rolledback' is not an event type; "
            "did you mean 'rollout.rolledBack'?",
        ),
        (
            {"alerts/on-call.yaml": ALERT.replace("webhook:", "webhok:")},
            "alerts/on-call.yaml:7: spec.webhok: unknown field; did you mean 'webhook'?",
        ),
    ],
    ids=["strategy", "region", "interface", "alert-module", "alert-event-type", "alert-receiver"],
)
def test_a_misspelled_reference_gets_a_did_you_mean(
    tmp_path: Path, files: dict[str, str | None], expected: str
) -> None:
    assert expected in problems(write_fleet(tmp_path, files))


def test_a_reference_close_to_nothing_gets_no_guess(tmp_path: Path) -> None:
    found = problems(write_fleet(tmp_path, {"modules/adder.yaml": MODULE.replace("rollout: canary", "rollout: zzz")}))
    assert "modules/adder.yaml:8: spec.rollout: no RolloutStrategy named 'zzz'" in found
