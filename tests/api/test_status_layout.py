"""`hotswap status` layouts, rendered from a status document with a fixed width: the default fits
80 columns with one line per module, `-o wide` has every column, `--watch` frames never overflow."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.commands import status as status_verb
from reconciler.commands.status import frame, render, traffic


def _conditions(**true: str) -> list[dict[str, str]]:
    kinds = ("Ready", "Progressing", "Paused", "Degraded", "Stalled")
    return [
        {"type": k, "status": "True" if k in true else "False", "reason": true.get(k, "Idle"), "message": f"{k} ..."}
        for k in kinds
    ]


def _rollout(
    module: str, old: str | None, new: str, phase: str, weights: dict[str, int], **more: Any
) -> dict[str, Any]:
    return {
        "id": f"{module}-r2",
        "module": module,
        "fromVersion": old,
        "toVersion": new,
        "strategy": more.get("strategy"),
        "phase": phase,
        "step": more.get("step", -1),
        "stepKind": None,
        "percent": more.get("percent", 0),
        "message": more.get("message", ""),
        "weightsOnNodes": weights,
        "history": more.get("history", []),
    }


NODES = [
    {
        "id": f"edge-{region}-{i:02d}",
        "region": region,
        "status": "Healthy",
        "url": f"http://127.0.0.1:4{i}001",
        "generation": 7,
        "appliedGeneration": 7,
        "cpuPercent": 1.5,
        "memoryMB": 81.0,
        "modules": [
            {"module": "greeter", "version": "1.1.0", "weight": 25},
            {"module": "calc", "version": "1.0.0", "weight": 100},
        ],
    }
    for region in ("us-east", "eu-central", "apac-east")
    for i in (1, 2)
]

DOCUMENT: dict[str, Any] = {
    "source": {
        "url": "/home/someone/projects/a-rather-long-path/to/the/fleet-repository",
        "branch": "main",
        "path": "fleet-example",
        "lastAppliedRevision": "b1cf9a56370da72f4f2846e178bd3b4e517d10ef",
        "observedRevision": "b1cf9a56370da72f4f2846e178bd3b4e517d10ef",
        "conditions": _conditions(Ready="Synced"),
    },
    "warnings": [],
    "modules": [
        {
            "module": "greeter",
            "rollout": _rollout(
                "greeter",
                "1.0.0",
                "1.1.0",
                "Progressing",
                {"1.0.0": 450, "1.1.0": 150},
                strategy="canary",
                step=1,
                percent=25,
                message="step 1 of 4: 25 % of traffic on 1.1.0 " + "waiting " * 10,
                history=[{"outcome": "Passed", "requests": 61, "errorRate": 0.0, "p99Ms": 3.2}],
            ),
            "conditions": _conditions(Ready="Deployed", Progressing="StepRunning"),
        },
        {
            "module": "a-module-with-a-long-name",
            "rollout": _rollout("a-module-with-a-long-name", None, "10.20.30-rc.1", "Promoted", {"10.20.30-rc.1": 300}),
            "conditions": _conditions(Ready="Deployed", Degraded="InsufficientNodes"),
        },
        {"module": "hello", "rollout": None, "conditions": _conditions()},
    ],
    "nodes": NODES,
    "events": [
        {
            "at": 1_700_000_000 + i,
            "reason": "RolloutStarted",
            "type": "Normal",
            "message": "greeter: 1.0.0 -> 1.1.0 " + "by the canary strategy, a long explanation " * 3,
        }
        for i in range(8)
    ],
}


def test_the_default_layout_fits_80_columns_one_line_per_module() -> None:
    lines = render(DOCUMENT, width=80)
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    header = next(i for i, line in enumerate(lines) if line.startswith("MODULE"))
    assert lines[header].split() == ["MODULE", "TRAFFIC", "(FROM", "->", "TO)", "PHASE", "STATUS"]
    greeter, long_one, hello = lines[header + 1 : header + 4]
    assert greeter.split() == ["greeter", "1.0.0", "75%", "->", "1.1.0", "25%", "Progressing", "Ready"]
    assert long_one.startswith("a-module-with-…  10.20.30-rc.1 100%")  # the name gave way
    assert long_one.endswith("  Degraded InsufficientNodes")
    assert hello.split() == ["hello", "-", "-", "NotReady", "Idle"]
    nodes = next(i for i, line in enumerate(lines) if line.startswith("NODE"))
    assert lines[nodes + 1].split() == ["edge-us-east-01", "us-east", "Healthy", "7/7", "2"]
    assert sum(1 for line in lines if "RolloutStarted" in line) == status_verb.EVENTS_SHOWN


def test_a_problem_in_the_middle_of_a_rollout_still_fits_80_uncut() -> None:
    """fleet-example's names at their longest: a phase, two versions' traffic and a problem."""
    weights = {"1.10.0": 450, "1.11.0": 150, "1.9.0": 0}
    rollout = _rollout("greeter", "1.10.0", "1.11.0", "WaitingApproval", weights)
    item = {"module": "greeter", "rollout": rollout, "conditions": _conditions(Ready="Deployed", Degraded="X" * 17)}
    (line,) = [line for line in render({**DOCUMENT, "modules": [item]}, width=80) if line.startswith("greeter")]
    assert line.split() == [
        "greeter", "1.10.0", "75%", "->", "1.11.0", "25%", "WaitingApproval", "Degraded", "X" * 17
    ]  # fmt: skip
    assert len(line) <= 80


def test_a_region_override_shows_as_a_third_version() -> None:
    rollout = _rollout("greeter", None, "1.1.0", "Promoted", {"1.1.0": 400, "1.0.0": 200})
    assert status_verb.rollout_traffic(rollout) == "1.1.0 67% 1.0.0 33%"


def test_columns_give_way_with_an_ellipsis_when_even_80_is_too_narrow() -> None:
    lines = render(DOCUMENT, width=60)
    assert all(len(line) <= 60 for line in lines)
    module_lines = lines[next(i for i, line in enumerate(lines) if line.startswith("MODULE")) :][:4]
    assert any("…" in line for line in module_lines)


def test_wide_has_every_column_uncut() -> None:
    lines = render(DOCUMENT, wide=True, width=80)
    header = next(line for line in lines if line.startswith("MODULE"))
    for column in ("STRATEGY", "ANALYSIS", "CONDITIONS", "MESSAGE"):
        assert column in header
    greeter = next(line for line in lines if line.startswith("greeter"))
    assert "canary" in greeter and "Passed 61 req 0.0% err p99 3.2ms" in greeter
    assert "Ready/Deployed Progressing/StepRunning" in greeter and greeter.endswith("waiting")
    node = next(line for line in lines if line.startswith("edge-apac-east-02"))
    assert "http://127.0.0.1:42001" in node and "greeter@1.1.0:25% calc@1.0.0:100%" in node


@pytest.mark.parametrize(
    ("weights", "shown"),
    [
        ({"1.0.0": 600}, "1.0.0 100%"),  # six nodes, all on 1.0.0: not "1.0.0:600"
        ({"1.10.0": 50, "1.9.0": 250}, "1.9.0 83% 1.10.0 17%"),
        ({"1.0.0": 0, "1.1.0": 200}, "1.1.0 100%"),
        ({}, "-"),
    ],
)
def test_traffic_is_each_versions_share_not_a_sum_over_nodes(weights: dict[str, int], shown: str) -> None:
    assert traffic(weights) == shown


@pytest.mark.parametrize(("columns", "rows"), [(80, 24), (40, 10), (20, 5)])
def test_a_watch_frame_never_overflows_the_terminal(columns: int, rows: int) -> None:
    screen = frame(render(DOCUMENT, width=columns), columns, rows)
    assert screen.startswith("\x1b[H") and screen.endswith("\x1b[J")
    lines = screen.removeprefix("\x1b[H").removesuffix("\x1b[J").split("\n")
    assert lines[-1] == "" and len(lines) - 1 <= rows - 1
    assert all(len(line.removesuffix("\x1b[K")) <= columns for line in lines)
    if rows < 20:  # the document has 20 lines
        assert "more lines" in lines[-2]


def test_output_json_yaml_and_the_json_alias(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hotswap.cli import main

    monkeypatch.setattr(status_verb, "get_json", lambda control, path: DOCUMENT)
    for argv in (["status", "--json"], ["status", "-o", "json"]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out) == DOCUMENT
    assert main(["status", "-o", "yaml"]) == 0
    from ruamel.yaml import YAML

    assert YAML(typ="safe").load(capsys.readouterr().out) == DOCUMENT
    assert main(["status"]) == 0  # not a terminal: the default layout, uncut
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("applied b1cf9a56370d  Ready")  # uncut
    assert "\ngreeter                    1.0.0 75% -> 1.1.0 25%  Progressing" in out
