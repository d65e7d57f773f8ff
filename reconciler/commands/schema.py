"""`hotswap schema [--out schemas/]`: write one JSON Schema per fleet kind, from the models.

Editors pick them up through the `# yaml-language-server: $schema=` line of each example file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every kind."""
    from reconciler.spec.alerts import FLEET_KINDS as KINDS

    out: dict[str, dict[str, Any]] = {}
    for kind, model in KINDS.items():
        schema = model.model_json_schema(by_alias=True, mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://hotswap.dev/schemas/{kind.lower()}.schema.json"
        schema["title"] = f"hotswap {kind}"
        out[f"{kind.lower()}.schema.json"] = schema
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="schemas", help="folder to write into (default: schemas/)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (out / name).write_text(render(schema), encoding="utf-8")
        print(out / name)
    return 0
