"""`hotswap status [-o wide|json|yaml] [--watch]`: the Git source, each module's rollout, the nodes.

Reads `GET /api/v1/wasm/status`. The default layout is one line per module (like `kubectl get`)
and fits 80 columns: what rolls out from which version to which, the share of traffic each takes,
the rollout's phase, and the one condition that matters. A share is of the module's traffic (its
weights averaged over the nodes that serve it), never a sum over nodes. `-o wide` shows every
column (strategy, step, analysis, every condition, the rollout's message; node URLs, load and what
each node runs); `-o json`/`-o yaml` print the document (`--json` is `-o json`). `--watch` redraws
in place every second, cut to the terminal's width and height.

`render` is a pure function of the document and a width, so layouts are tested without a terminal.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.commands.client import ClientError, add_control_argument, get_json

STATUS_PATH = "/api/v1/wasm/status"
EVENTS_SHOWN = 5
PROBLEM_TYPES = ("Stalled", "Degraded", "Paused")


def configure(parser: argparse.ArgumentParser) -> None:
    add_control_argument(parser)
    parser.add_argument(
        "-o",
        "--output",
        choices=("default", "wide", "json", "yaml"),
        default="default",
        help="default: one line per module, fits 80 columns; wide: every column; json or yaml: the document",
    )
    parser.add_argument("--json", action="store_true", help="the same as -o json")
    parser.add_argument("--watch", action="store_true", help="redraw in place every second until Ctrl-C")


def traffic(weights: Mapping[str, float]) -> str:
    """`1.0.0 75% 1.1.0 25%`: each version's share of the module's traffic, highest version last."""
    total = sum(weights.values())
    if total <= 0:
        return "-"
    shares = [(version, 100 * weight / total) for version, weight in weights.items() if weight > 0]
    return " ".join(f"{version} {share:.0f}%" for version, share in sorted(shares, key=lambda vs: _version_key(vs[0])))


def rollout_traffic(rollout: dict[str, Any]) -> str:
    """`1.0.0 75% -> 1.1.0 25%`: what rolls out, from and to, each with its share of traffic (then any
    other version still served, e.g. by a region override)."""
    weights = rollout.get("weightsOnNodes") or {}
    total = sum(weights.values())

    def share(version: str) -> str:
        return f"{version} {100 * weights.get(version, 0) / total:.0f}%" if total > 0 else version

    old, new = rollout.get("fromVersion"), rollout["toVersion"]
    text = f"{share(old)} -> {share(new)}" if old and old != new else share(new)
    others = sorted((v for v, w in weights.items() if w > 0 and v not in (old, new)), key=_version_key)
    return " ".join([text, *(share(v) for v in others)])


def _version_key(version: str) -> tuple[tuple[int, ...], str]:
    core, _, rest = version.partition("-")
    try:
        return tuple(int(p) for p in core.split(".")), rest
    except ValueError:
        return (), version


def _true(conditions: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in conditions if c.get("status") == "True"]


def headline(conditions: Sequence[dict[str, Any]]) -> str:
    """The one condition to show: a problem (Stalled, Degraded, Paused) with its reason, else Ready
    (Progressing is the phase's to say)."""
    held = {c["type"]: c for c in _true(conditions)}
    for kind in PROBLEM_TYPES:
        if kind in held:
            return f"{kind} {held[kind].get('reason', '')}".strip()
    if "Ready" in held:
        return "Ready"
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    return f"NotReady {ready.get('reason', '')}".strip() if ready else "-"


def _step(rollout: dict[str, Any]) -> str:
    if rollout.get("step", -1) < 0:
        return "-"
    return f"{rollout['step']} {rollout.get('percent') or 0}%"


def _analysis(rollout: dict[str, Any]) -> str:
    history = rollout.get("history") or []
    if not history:
        return "-"
    last = history[-1]
    rate = last.get("errorRate", last.get("error_rate")) or 0.0
    text = f"{last.get('outcome')} {last.get('requests', 0)} req {100 * rate:.1f}% err"
    p99 = last.get("p99Ms", last.get("p99_ms"))
    return text + (f" p99 {p99:g}ms" if p99 is not None else "")


def _module_row(item: dict[str, Any], wide: bool) -> list[str]:
    rollout = item.get("rollout")
    status = headline(item.get("conditions", []))
    if rollout is None:
        if wide:
            return [item["module"], "-", "-", "-", "-", "-", "-", " ".join(_condition_names(item)) or "-", "-"]
        return [item["module"], "-", "-", status]
    from_version = rollout.get("fromVersion")
    versions = f"{from_version}->{rollout['toVersion']}" if from_version else rollout["toVersion"]
    weights = traffic(rollout.get("weightsOnNodes") or {})
    if not wide:  # the step shows in the traffic
        return [item["module"], rollout_traffic(rollout), rollout["phase"], status]
    strategy = rollout.get("strategy") or "at once"
    conditions = " ".join(_condition_names(item)) or "-"
    step, analysis, message = _step(rollout), _analysis(rollout), rollout.get("message") or "-"
    return [item["module"], versions, strategy, rollout["phase"], step, weights, analysis, conditions, message]


def _condition_names(item: dict[str, Any]) -> list[str]:
    return [f"{c['type']}/{c.get('reason', '')}" for c in _true(item.get("conditions", []))]


MODULE_COLUMNS = ["MODULE", "TRAFFIC (FROM -> TO)", "PHASE", "STATUS"]
WIDE_MODULE_COLUMNS = ["MODULE", "VERSION", "STRATEGY", "PHASE", "STEP", "TRAFFIC", "ANALYSIS", "CONDITIONS", "MESSAGE"]
NODE_COLUMNS = ["NODE", "REGION", "STATUS", "APPLIED", "MODULES"]
WIDE_NODE_COLUMNS = ["NODE", "REGION", "STATUS", "APPLIED", "URL", "CPU%", "MEM-MB", "RUNNING"]


def _node_row(node: dict[str, Any], wide: bool) -> list[str]:
    applied = f"{node.get('appliedGeneration', 0)}/{node.get('generation', 0)}"
    modules = node.get("modules", [])
    row = [node["id"], node.get("region", "-"), node.get("status", "-"), applied]
    if not wide:
        return [*row, str(len({m["module"] for m in modules}))]
    running = " ".join(f"{m['module']}@{m['version']}:{m['weight']}%" for m in modules) or "-"
    cpu, memory = f"{node.get('cpuPercent', 0.0):.1f}", f"{node.get('memoryMB', 0.0):.0f}"
    return [*row, node.get("url") or "-", cpu, memory, running]


def table(header: list[str], rows: list[list[str]], width: int | None, keep: int | None = None) -> list[str]:
    """Columns two spaces apart; when wider than `width`, the widest columns give way first (cut
    with `…`) down to their header's width, column `keep` (the status) last of all."""
    sizes = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    if width is not None:
        floor = [len(h) for h in header]
        if keep is not None:
            floor[keep] = min(sizes[keep], max(width - sum(floor) + floor[keep] - 2 * (len(sizes) - 1), floor[keep]))
        while sum(sizes) + 2 * (len(sizes) - 1) > width:
            widest = max(range(len(sizes)), key=lambda i: (sizes[i] - floor[i], i))
            if sizes[widest] <= floor[widest]:
                break
            sizes[widest] -= 1
    lines = []
    for row in [header, *rows]:
        cells = [_cut(cell, size).ljust(size) for cell, size in zip(row, sizes, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render(status: dict[str, Any], *, wide: bool = False, width: int | None = 80) -> list[str]:
    """The status document as lines, each at most `width` characters (None: as long as they come)."""
    source = status.get("source") or {}
    applied = (source.get("lastAppliedRevision") or "-")[:12]
    head = f"source {source.get('url')} {source.get('branch')}/{source.get('path') or ''}  applied {applied}"
    observed = (source.get("observedRevision") or "-")[:12]
    if observed != applied:
        head += f"  observed {observed}"
    # The source verified the revision; a pass that cannot apply it (a binary it cannot get) is Stalled.
    head += "  Stalled" if status.get("stalled") else f"  {headline(source.get('conditions', []))}"
    lines = [head]
    lines += [f"warning: {warning}" for warning in status.get("warnings", [])]
    if status.get("stalled"):
        lines.append(f"Stalled {status['stalled']['reason']}: {status['stalled']['message']}")
    lines.append("")
    modules = [_module_row(item, wide) for item in status.get("modules", [])]
    lines += table(WIDE_MODULE_COLUMNS if wide else MODULE_COLUMNS, modules, None if wide else width, keep=-1)
    lines.append("")
    nodes = [_node_row(node, wide) for node in status.get("nodes", [])]
    lines += table(WIDE_NODE_COLUMNS if wide else NODE_COLUMNS, nodes, None if wide else width)
    events = status.get("events", [])[-EVENTS_SHOWN:]
    if events:
        lines.append("")
        for event in events:
            when = time.strftime("%H:%M:%S", time.localtime(event["at"]))
            kind = "warning " if event.get("type") == "Warning" else ""
            lines.append(f"{when} {kind}{event['reason']}: {event['message']}")
    if width is None or wide:
        return lines
    return [_cut(line, width) for line in lines]


def frame(lines: list[str], columns: int, rows: int) -> str:
    """One `--watch` screen: home the cursor, every line cut to the terminal, no more lines than fit
    (the last says how many were left out), and the rest of the screen cleared."""
    cut = [_cut(line, columns) for line in lines]
    if len(cut) > rows - 1:
        hidden = len(cut) - (rows - 2)
        cut = [
            *cut[: rows - 2],
            _cut(f"… {hidden} more lines (a taller terminal, or -o wide without --watch)", columns),
        ]
    return "\x1b[H" + "".join(f"{line}\x1b[K\n" for line in cut) + "\x1b[J"


def _dump(document: Any, output: str) -> str:
    if output == "json":
        return json.dumps(document, indent=2)
    import io

    from ruamel.yaml import YAML

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue().rstrip("\n")


def run(args: argparse.Namespace) -> int:
    output = "json" if args.json else args.output
    try:
        if output in ("json", "yaml"):
            print(_dump(get_json(args.control, STATUS_PATH), output))
            return 0
        if not args.watch:
            width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
            print("\n".join(render(get_json(args.control, STATUS_PATH), wide=output == "wide", width=width)))
            return 0
        sys.stdout.write("\x1b[2J")
        while True:
            size = shutil.get_terminal_size()
            lines = render(get_json(args.control, STATUS_PATH), wide=output == "wide", width=size.columns)
            sys.stdout.write(frame(lines, size.columns, size.lines))
            sys.stdout.flush()
            time.sleep(1.0)
    except ClientError as exc:
        print(f"hotswap status: {exc}", file=sys.stderr)
        return 1
