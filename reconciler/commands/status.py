"""`hotswap status [--watch] [--json]`: the Git source, every module's rollout and conditions, the nodes.

Reads `GET /api/v1/wasm/status`. `--watch` redraws every second with a progress bar per rollout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from reconciler.commands.client import ClientError, add_control_argument, get_json

PHASE_STYLE = {
    "Promoted": "green",
    "Progressing": "cyan",
    "WaitingApproval": "yellow",
    "Paused": "yellow",
    "RolledBack": "red",
    "Aborted": "red",
    "Superseded": "dim",
    "Pending": "cyan",
}


def configure(parser: argparse.ArgumentParser) -> None:
    add_control_argument(parser)
    parser.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")
    parser.add_argument("--json", action="store_true", help="print the status document as JSON")


def _conditions(items: list[dict[str, Any]]) -> Text:
    text = Text()
    for c in items:
        if c["status"] != "True":
            continue
        style = "red" if c["type"] in ("Degraded", "Stalled") else "yellow" if c["type"] == "Paused" else "green"
        text.append(f"{c['type']}", style=style)
        text.append(f" {c['reason']}  ")
    return text


def _analysis(rollout: dict[str, Any]) -> Text:
    """The last step's verdict: requests, error rate and p99 of the new version."""
    history = rollout.get("history") or []
    if not history:
        return Text("")
    last = history[-1]
    p99 = last.get("p99Ms", last.get("p99_ms"))
    rate = last.get("errorRate", last.get("error_rate")) or 0.0
    style = "red" if last.get("outcome") == "Failed" else "green" if last.get("outcome") == "Passed" else "yellow"
    text = f"{last.get('outcome')}: {last.get('requests', 0)} req, {100 * rate:.1f}% err"
    if p99 is not None:
        text += f", p99 {p99:g} ms"
    return Text(text, style=style)


def _progress(rollout: dict[str, Any]) -> ProgressBar:
    phase = rollout["phase"]
    done = 100.0 if phase == "Promoted" else float(rollout.get("percent") or 0)
    style = "red" if phase in ("RolledBack", "Aborted") else "green" if phase == "Promoted" else "cyan"
    return ProgressBar(total=100, completed=done, width=20, complete_style=style)


def render(status: dict[str, Any]) -> Group:
    source = status.get("source") or {}
    head = Text()
    head.append("source ", style="bold")
    head.append(f"{source.get('url')} {source.get('branch')}/{source.get('path') or ''}  ")
    applied = source.get("lastAppliedRevision") or "-"
    head.append(f"applied {applied[:12]}  ", style="green")
    observed = source.get("observedRevision") or "-"
    if observed != applied:
        head.append(f"observed {observed[:12]}  ", style="yellow")
    head.append_text(_conditions(source.get("conditions", [])))
    parts: list[Any] = [head]
    for warning in status.get("warnings", []):
        parts.append(Text(f"warning: {warning}", style="yellow"))
    if status.get("stalled"):
        parts.append(Text(f"Stalled {status['stalled']['reason']}: {status['stalled']['message']}", style="red"))

    modules = Table(title="modules", title_justify="left", expand=False)
    for column in ("module", "rollout", "strategy", "phase", "step", "progress", "weights", "analysis", "conditions"):
        modules.add_column(column)
    for item in status.get("modules", []):
        rollout = item.get("rollout")
        if rollout is None:
            modules.add_row(item["module"], "-", "-", "-", "-", "", "", "", _conditions(item["conditions"]))
            continue
        weights = ", ".join(f"{v}:{w}" for v, w in sorted(rollout.get("weightsOnNodes", {}).items()))
        step = (
            "-" if rollout["step"] < 0 else f"{rollout['step']} {rollout.get('stepKind') or ''} {rollout['percent']}%"
        )
        modules.add_row(
            item["module"],
            f"{rollout['fromVersion'] or '-'} -> {rollout['toVersion']}",
            rollout.get("strategy") or "at once",
            Text(rollout["phase"], style=PHASE_STYLE.get(rollout["phase"], "")),
            step,
            _progress(rollout),
            weights,
            _analysis(rollout),
            _conditions(item["conditions"]),
        )
    parts.append(modules)

    nodes = Table(title="nodes", title_justify="left")
    for column in ("node", "region", "status", "url", "generation", "modules", "cpu %", "mem MB"):
        nodes.add_column(column)
    for node in status.get("nodes", []):
        style = "green" if node["status"] == "Healthy" else "red"
        running = ", ".join(f"{m['module']}@{m['version']}:{m['weight']}" for m in node["modules"])
        generation = f"{node['appliedGeneration']}/{node['generation']}"
        nodes.add_row(
            node["id"],
            node["region"],
            Text(node["status"], style=style),
            node["url"],
            generation,
            running,
            f"{node['cpuPercent']:.1f}",
            f"{node['memoryMB']:.0f}",
        )
    parts.append(nodes)
    events = status.get("events", [])[-8:]
    if events:
        lines = Text()
        for event in events:
            when = time.strftime("%H:%M:%S", time.localtime(event["at"]))
            style = "yellow" if event["type"] == "Warning" else ""
            lines.append(f"{when} {event['reason']}: {event['message']}\n", style=style)
        parts.append(lines)
    return Group(*parts)


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        if args.json:
            print(json.dumps(get_json(args.control, "/api/v1/wasm/status"), indent=2))
            return 0
        if not args.watch:
            console.print(render(get_json(args.control, "/api/v1/wasm/status")))
            return 0
        with Live(console=console, refresh_per_second=4, screen=False) as live:
            while True:
                live.update(render(get_json(args.control, "/api/v1/wasm/status")))
                time.sleep(1.0)
    except ClientError as exc:
        print(f"hotswap status: {exc}", file=sys.stderr)
        return 1
