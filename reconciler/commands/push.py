"""`hotswap push FILE.wasm|.wat REGISTRY/REPO:TAG`: publish a module as a Wasm OCI artifact.

The CNCF layout (config `application/vnd.wasm.config.v0+json`, one `application/wasm` layer), with
annotations for the version (`org.opencontainers.image.version`: `--version`, else the tag when it is
semver), the source (`org.opencontainers.image.source`: `--source`) and the exports
(`dev.hotswap.exports`). Prints the reference with its digest, ready for a Module's `source.oci`.
Credentials: a Docker config file (`$DOCKER_CONFIG/config.json`, `~/.docker/config.json`,
`$REGISTRY_AUTH_FILE`) or `HOTSWAP_OCI_USERNAME`/`HOTSWAP_OCI_PASSWORD` for the registries
`HOTSWAP_OCI_REGISTRY` names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="a .wasm binary or .wat text")
    parser.add_argument(
        "target", metavar="REGISTRY/REPO:TAG", help="where to push, e.g. 127.0.0.1:5000/team/calc:1.2.0"
    )
    parser.add_argument("--version", help="the module version it carries (default: the tag, when semver)")
    parser.add_argument("--source", help="where it was built from (a repository URL)")


def run(args: argparse.Namespace) -> int:
    from edge import wasm
    from reconciler.gitsource.oci import OciClient, OciError
    from reconciler.spec.ocireference import Reference
    from reconciler.spec.updates import parse_version

    try:
        ref = Reference.parse(args.target)
        if ref.tag is None or ref.digest is not None:
            raise ValueError(f"{args.target}: push to a tag, REGISTRY/REPO:TAG, without a digest")
        data = args.file.read_bytes()
        if args.file.suffix == ".wat":
            data = wasm.compile_wat(data.decode("utf-8"))
        info = wasm.inspect(data)
    except wasm.WasmError as exc:
        where = f"{args.file}:{exc.line}" if exc.line else str(args.file)
        print(f"hotswap push: {where}: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"hotswap push: {exc}", file=sys.stderr)
        return 2
    annotations = {"dev.hotswap.exports": ",".join(f.name for f in info.exports if f.kind == "func")}
    version = args.version or (ref.tag.removeprefix("v") if parse_version(ref.tag) else None)
    if version:
        annotations["org.opencontainers.image.version"] = version
    if args.source:
        annotations["org.opencontainers.image.source"] = args.source
    try:
        digest = OciClient().push(data, ref, annotations=annotations)
    except OciError as exc:
        print(f"hotswap push: {exc}", file=sys.stderr)
        return 1
    print(ref.with_digest(digest))
    return 0
