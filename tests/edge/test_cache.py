"""The precompiled module cache: reused across a restart, never trusted when damaged or stale."""

from __future__ import annotations

from pathlib import Path

from edge.cache import ModuleCache, artifact_sum, engine_key
from edge.runtime import Runtime, Sandbox
from edge.wasminfo import sha256_digest
from tests.edge.conftest import module_bytes


def load_once(cache: Path) -> tuple[bool, int]:
    """Load arith in a fresh runtime (a node restart); return (came from cache, add(2, 3))."""
    with Runtime(cache_dir=cache) as rt:
        loaded = rt.load(module_bytes("arith"), Sandbox())
        return loaded.from_cache, loaded.invoke(loaded.prepare("add", [2, 3])).value


def artifact(cache: Path) -> Path:
    (path,) = cache.glob("*.cwasm")
    return path


def test_the_cache_survives_a_restart(tmp_path: Path) -> None:
    assert load_once(tmp_path) == (False, 5)
    assert load_once(tmp_path) == (True, 5)
    assert artifact(tmp_path).name.startswith(sha256_digest(module_bytes("arith")).removeprefix("sha256:"))


def test_a_corrupted_entry_is_rebuilt(tmp_path: Path) -> None:
    load_once(tmp_path)
    path = artifact(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the compiled code
    path.write_bytes(bytes(data))
    assert load_once(tmp_path) == (False, 5)
    assert load_once(tmp_path) == (True, 5)  # and the rebuilt entry is good again


def test_a_truncated_entry_with_a_matching_sum_is_rebuilt(tmp_path: Path) -> None:
    """Even when the checksum agrees, wasmtime's own check refuses a broken artifact."""
    load_once(tmp_path)
    path = artifact(tmp_path)
    path.write_bytes(b"\x7fELF not really")
    ModuleCache.sum_path(path).write_text(artifact_sum(path.read_bytes()))
    assert load_once(tmp_path) == (False, 5)
    assert load_once(tmp_path) == (True, 5)


def test_a_truncated_artifact_is_rebuilt(tmp_path: Path) -> None:
    """A write cut short (a crash, a full disk) leaves a prefix: its length alone no longer matches."""
    load_once(tmp_path)
    path = artifact(tmp_path)
    path.write_bytes(path.read_bytes()[:4096])
    assert load_once(tmp_path) == (False, 5)
    path.write_bytes(b"")
    assert load_once(tmp_path) == (False, 5)
    assert load_once(tmp_path) == (True, 5)


def test_a_sum_in_another_format_is_not_trusted(tmp_path: Path) -> None:
    """Entries written with a SHA-256 sum (before XXH3) are rebuilt once, not read."""
    import hashlib

    load_once(tmp_path)
    path = artifact(tmp_path)
    ModuleCache.sum_path(path).write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    assert load_once(tmp_path) == (False, 5)
    assert ModuleCache.sum_path(path).read_text().startswith("xxh3-128:")


def test_a_missing_sum_means_no_cache_hit(tmp_path: Path) -> None:
    load_once(tmp_path)
    ModuleCache.sum_path(artifact(tmp_path)).unlink()
    assert load_once(tmp_path) == (False, 5)


def test_entries_of_other_engine_settings_are_never_loaded(tmp_path: Path) -> None:
    load_once(tmp_path)
    with Runtime(cache_dir=tmp_path) as rt:
        settings = {**rt.settings, "wasmtime": "0.0.0-other"}
        other = ModuleCache(tmp_path, engine_key(settings))
        assert other.key != rt.cache.key if rt.cache else False
        assert other.load(rt.engine, sha256_digest(module_bytes("arith"))) is None


def test_the_cache_directory_is_private(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    load_once(cache)
    assert cache.stat().st_mode & 0o077 == 0


def test_a_version_loaded_again_in_the_same_process_reuses_its_compiled_module() -> None:
    with Runtime() as rt:
        first = rt.load(module_bytes("arith"), Sandbox())
        second = rt.load(module_bytes("arith"), Sandbox(memory_bytes=1024 * 1024))
        assert (first.from_cache, second.from_cache) == (False, True)
        assert second.module is first.module and second.sandbox.memory_bytes == 1024 * 1024
        assert second.invoke(second.prepare("add", [1, 2])).value == 3
