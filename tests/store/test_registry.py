"""The registry over real stores: the embedded pair (SQLite + a directory) and the production pair
(PostgreSQL + an S3 server). Crashes and races use real processes."""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge import wasm
from edge.wat import compile_wat
from reconciler.apply.registry import (
    Registry,
    RegistryLimits,
    expired_versions,
    module_id,
    module_json,
    semver_key,
)
from reconciler.spec.loader import load_fleet
from reconciler.store.blobs import BLOBS_PREFIX, digest_hex, open_blob_store
from reconciler.store.errors import (
    InvalidModuleError,
    ModuleConflictError,
    ModuleInUseError,
    UnknownModuleError,
)
from reconciler.store.records import BuildInfo, ModuleRecord
from reconciler.store.state import StateStore, connect_state_store, open_state_store
from tests.spec.fleets import ADDER_WAT, write_fleet
from tests.store.test_blobs import overwrite_object

ADD = compile_wat(
    '(module (memory (export "memory") 1)'
    ' (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))'
)
ADD2 = compile_wat('(module (func (export "add") (param i32 i32) (result i32) local.get 0))')
HELLO = compile_wat(
    '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
    ' (memory (export "memory") 1) (func (export "_start")))'
)
SOCKET = compile_wat('(module (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32))))')
UNSTABLE = compile_wat('(module (import "wasi_unstable" "fd_write" (func (param i32 i32 i32 i32) (result i32))))')
HOST_IMPORT = compile_wat('(module (import "env" "launch_missiles" (func)))')
HUGE_MEMORY = compile_wat('(module (memory (export "memory") 10000))')  # 625 MB initial


@dataclass(frozen=True)
class Stores:
    state_url: str
    blob_url: str


@pytest.fixture(params=["embedded", "production"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    if request.param == "embedded":
        return Stores(f"sqlite:{tmp_path / 'state.db'}", str(tmp_path / "blobs"))
    return Stores(str(request.getfixturevalue("database_url")), str(request.getfixturevalue("blob_url")))


def make_registry(stores: Stores, state: StateStore | None = None) -> Registry:
    return Registry(state or open_state_store(database_url=stores.state_url), open_blob_store(stores.blob_url))


@pytest.fixture
def registry(stores: Stores) -> Iterator[Registry]:
    built = make_registry(stores)
    yield built
    built.state.close()


def test_a_new_module_is_described_stored_and_audited(registry: Registry) -> None:
    registration = registry.register("hello", "1.0.0", HELLO, BuildInfo("abc123", "2026-01-31T12:00:00Z"), actor="ci")
    record = registration.module
    assert registration.created
    assert record.id == "hello-v1.0.0" and record.size == len(HELLO) and record.compressed_size > 0
    assert record.wasi_imports == ("fd_write",) and record.capabilities == ("stdio",)
    assert {e.name: e.convention for e in record.exports} == {"memory": None, "_start": "command"}
    assert registry.get("hello-v1.0.0") == record
    assert registry.blobs.read(record.digest) == HELLO
    assert registry.blobs.read_metadata("hello", "1.0.0") == module_json(record)
    [audit] = registry.state.audit_log(subject="hello-v1.0.0")
    assert (audit.actor, audit.action, audit.detail["digest"]) == ("ci", "module.register", record.digest)
    described = module_json(record)
    assert described["wasi"] == {"version": "preview1", "imports": ["fd_write"], "capabilities": ["stdio"]}
    assert described["build"] == {"commit": "abc123", "timestamp": "2026-01-31T12:00:00Z"}


def test_registration_is_traced_with_the_spec_span_names(stores: Stores) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    base = make_registry(stores)
    registry = Registry(base.state, base.blobs, tracer=provider.get_tracer("test"))
    record = registry.register("adder", "1.0.0", ADD).module
    with pytest.raises(InvalidModuleError):
        registry.register("bad", "1.0.0", UNSTABLE)
    spans = [(s.name, dict(s.attributes or {}), s.status.status_code.name) for s in exporter.get_finished_spans()]
    assert [(name, status) for name, _, status in spans] == [
        ("wasm.module.validate", "UNSET"),
        ("wasm.module.register", "UNSET"),
        ("wasm.module.validate", "ERROR"),
        ("wasm.module.register", "ERROR"),
    ]
    assert spans[1][1]["wasm.module.id"] == "adder-v1.0.0" and spans[1][1]["wasm.module.digest"] == record.digest
    assert spans[1][1]["wasm.module.created"] is True
    base.state.close()


def test_registering_the_same_bytes_again_is_idempotent(registry: Registry) -> None:
    first = registry.register("adder", "1.0.0", ADD)
    again = registry.register("adder", "1.0.0", ADD)
    assert not again.created and again.module == first.module
    assert len(registry.modules()) == 1
    assert len(registry.state.audit_log()) == 1


def test_a_version_is_immutable(registry: Registry) -> None:
    registry.register("adder", "1.0.0", ADD)
    with pytest.raises(ModuleConflictError, match=r"adder-v1\.0\.0"):
        registry.register("adder", "1.0.0", ADD2)
    assert registry.blobs.read(registry.get("adder-v1.0.0").digest) == ADD


def test_the_same_bytes_under_two_versions_are_stored_once(registry: Registry) -> None:
    one = registry.register("adder", "1.0.0", ADD).module
    two = registry.register("adder", "1.0.1", ADD).module
    assert one.digest == two.digest
    assert list(registry.blobs.digests()) == [one.digest]
    assert sorted(registry.blobs.versions()) == [("adder", "1.0.0"), ("adder", "1.0.1")]


def test_a_binary_the_fleet_loader_inspected_is_registered_without_parsing_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Git -> loader -> controller -> registry: the bytes are validated and described once, by digest."""
    unique = ADDER_WAT.replace("(i32.const 1)", f"(i32.const {uuid.uuid4().int % 2**31})")  # not cached yet
    parsed: list[str] = []
    inspect = wasm.inspect

    def counted(data: bytes, digest: str | None = None) -> wasm.ModuleInfo:
        info = inspect(data, digest)
        parsed.append(info.digest)
        return info

    monkeypatch.setattr(wasm, "inspect", counted)  # every parse, through the cache or around it
    before = wasm.DESCRIPTIONS.parses
    loaded = load_fleet(write_fleet(tmp_path / "fleet", {"wasm/adder.wat": unique}))
    assert loaded.fleet is not None, loaded.problems
    binary = loaded.fleet.binaries[("adder", "1.0.0")]
    assert wasm.DESCRIPTIONS.parses == before + 1
    registry = make_registry(Stores(f"sqlite:{tmp_path / 'state.db'}", str(tmp_path / "blobs")))
    try:
        record = registry.register("adder", "1.0.0", binary.data, actor="git").module
    finally:
        registry.state.close()
    assert wasm.DESCRIPTIONS.parses == before + 1
    assert parsed == [binary.digest]
    assert record.digest == binary.digest == wasm.sha256_digest(binary.data)
    assert list(registry.blobs.digests()) == [binary.digest]
    assert [e.name for e in record.exports] == ["add", "health"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "wasm: is empty"),
        (b"MZ\x90\x00 an exe", "wasm: not valid WebAssembly: not a WebAssembly binary"),
        (ADD[:-3], "wasm: not valid WebAssembly"),
        (UNSTABLE, "wasm: imports the edge sandbox cannot grant: import wasi_unstable.fd_write: the old WASI"),
        (HOST_IMPORT, "import env.launch_missiles"),
        (HUGE_MEMORY, "declares 625 MB of initial memory .10000 pages., over its 512 MB limit"),
    ],
    ids=["empty", "not-wasm", "truncated", "wasi-unstable", "host-import", "huge-memory"],
)
def test_bad_binaries_are_refused_with_the_reason(registry: Registry, data: bytes, message: str) -> None:
    with pytest.raises(InvalidModuleError, match=message) as caught:
        registry.register("bad", "1.0.0", data)
    assert caught.value.field == "wasm"
    assert registry.modules() == [] and list(registry.blobs.digests()) == []


def test_a_binary_importing_the_socket_functions_registers(registry: Registry) -> None:
    """wasi-libc programs import sock_*; they are linked, and no socket is ever handed in."""
    record = registry.register("net", "1.0.0", SOCKET).module
    assert "sockets" in record.capabilities


def test_limits_are_configurable(registry: Registry) -> None:
    with pytest.raises(InvalidModuleError, match=r"initial memory \(1 pages\), over its 1 byte limit"):
        registry.register("adder", "1.0.0", ADD, memory_limit_bytes=1)
    small = Registry(registry.state, registry.blobs, limits=RegistryLimits(max_module_bytes=10))
    with pytest.raises(InvalidModuleError, match="modules are limited to 10 bytes"):
        small.register("adder", "1.0.0", ADD)


@pytest.mark.parametrize(
    ("name", "version", "build", "field"),
    [
        ("", "1.0.0", None, "name"),
        ("Greeter", "1.0.0", None, "name"),
        ("greeter-", "1.0.0", None, "name"),
        ("a" * 64, "1.0.0", None, "name"),
        ("greeter", "", None, "version"),
        ("greeter", "1.0", None, "version"),
        ("greeter", "v1.0.0", None, "version"),
        ("greeter", "01.0.0", None, "version"),
        ("greeter", "1.0.0-", None, "version"),
        ("-greeter", "1.0.0", None, "name"),
        ("greeter", "1.0.0", BuildInfo(commit=""), "build.commit"),
        ("greeter", "1.0.0", BuildInfo(timestamp="yesterday"), "build.timestamp"),
    ],
)
def test_bad_names_versions_and_build_info_name_the_field(
    registry: Registry, name: str, version: str, build: BuildInfo | None, field: str
) -> None:
    with pytest.raises(InvalidModuleError) as caught:
        registry.register(name, version, ADD, build)
    assert caught.value.field == field
    assert caught.value.message.startswith(f"{field}: ")


def test_prerelease_versions_are_accepted_and_ordered() -> None:
    versions = ["1.0.0", "1.0.0-alpha", "0.9.9", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-alpha.beta", "1.10.0", "1.2.0"]
    assert sorted(versions, key=semver_key) == [
        "0.9.9",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0",
        "1.2.0",
        "1.10.0",
    ]
    with pytest.raises(ValueError, match="not semver"):
        semver_key("1")
    assert module_id("greeter", "1.0.0-rc.1") == "greeter-v1.0.0-rc.1"
    assert semver_key("1.0.0+build.5") == semver_key("1.0.0")


def test_delete_refuses_a_module_in_use_and_frees_unshared_bytes(registry: Registry) -> None:
    one = registry.register("adder", "1.0.0", ADD).module
    registry.register("adder", "1.0.1", ADD)
    other = registry.register("adder", "2.0.0", ADD2).module
    with pytest.raises(ModuleInUseError, match=r"adder-v1\.0\.0"):
        registry.delete("adder-v1.0.0", in_use={"adder-v1.0.0"})
    registry.delete("adder-v1.0.0", in_use=set())
    assert registry.blobs.exists(one.digest)  # still used by 1.0.1
    registry.delete("adder-v1.0.1", in_use=set())
    assert not registry.blobs.exists(one.digest)
    registry.delete("adder-v2.0.0", in_use=set())
    assert not registry.blobs.exists(other.digest)
    assert registry.modules() == [] and list(registry.blobs.versions()) == []
    with pytest.raises(UnknownModuleError):
        registry.delete("adder-v2.0.0", in_use=set())
    assert [e.action for e in registry.state.audit_log()][-3:] == ["module.delete"] * 3


def test_retention_keeps_five_newest_and_everything_in_use(registry: Registry) -> None:
    versions = ["1.0.0", "1.1.0", "1.2.0", "1.10.0", "2.0.0-rc.1", "2.0.0", "2.1.0", "1.9.0"]
    for index, version in enumerate(versions):
        registry.register("adder", version, compile_wat(f'(module (func (export "v{index}")))'))
    registry.register("other", "0.1.0", ADD)
    removed = registry.prune(in_use={"adder-v1.0.0"})
    assert sorted(removed) == ["adder-v1.1.0", "adder-v1.2.0"]
    assert sorted(m.version for m in registry.modules("adder")) == sorted(
        ["1.0.0", "1.9.0", "1.10.0", "2.0.0-rc.1", "2.0.0", "2.1.0"]
    )
    assert [m.id for m in registry.modules("other")] == ["other-v0.1.0"]
    assert len(list(registry.blobs.digests())) == 7
    assert registry.prune(in_use={"adder-v1.0.0"}) == []


def test_expired_versions_is_a_pure_choice() -> None:
    def record(name: str, version: str) -> ModuleRecord:
        base = ModuleRecord(
            id="",
            name=name,
            version=version,
            digest="sha256:" + "0" * 64,
            size=1,
            compressed_size=1,
            imports=(),
            exports=(),
            wasi_imports=(),
            capabilities=(),
            component=False,
            memory_min_pages=0,
            build=BuildInfo(),
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        return replace(base, id=module_id(name, version))

    modules = [record("a", f"1.{n}.0") for n in range(4)] + [record("b", "1.0.0")]
    assert [m.id for m in expired_versions(modules, in_use=(), keep=2)] == ["a-v1.1.0", "a-v1.0.0"]
    assert [m.id for m in expired_versions(modules, in_use={"a-v1.0.0"}, keep=2)] == ["a-v1.1.0"]
    assert expired_versions(modules, in_use=(), keep=5) == []


def test_a_damaged_blob_is_refused_and_an_upload_repairs_it(registry: Registry) -> None:
    record = registry.register("adder", "1.0.0", ADD).module
    overwrite_object(registry.blobs, BLOBS_PREFIX + digest_hex(record.digest), b"garbage")
    with pytest.raises(Exception, match="corrupted"), registry.open_binary("adder-v1.0.0"):
        pytest.fail("served a corrupted binary")
    registry.blobs.delete_metadata("adder", "1.0.0")
    assert not registry.register("adder", "1.0.0", ADD).created
    with registry.open_binary("adder-v1.0.0") as blob:
        assert blob.digest == record.digest and b"".join(blob.chunks()) == ADD
    with registry.open_blob(record.digest) as blob:
        assert blob.file.read() == ADD
    assert registry.blobs.read_metadata("adder", "1.0.0") is not None
    with pytest.raises(UnknownModuleError), registry.open_binary("nope-v1.0.0"):
        pass


# -- real processes --------------------------------------------------------------------------


def _register_in_child(stores: Stores, start: Any, results: Any) -> None:
    registry = make_registry(stores)
    start.wait()
    results.put(registry.register("adder", "1.0.0", ADD).created)
    registry.state.close()


def test_two_processes_registering_the_same_module_end_with_one_row(stores: Stores) -> None:
    open_state_store(database_url=stores.state_url).close()  # migrated before the race
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results = context.Queue()
    children = [context.Process(target=_register_in_child, args=(stores, start, results)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    assert sorted([results.get(timeout=5), results.get(timeout=5)]) == [False, True]
    registry = make_registry(stores)
    assert [m.id for m in registry.modules()] == ["adder-v1.0.0"]
    assert len(list(registry.blobs.digests())) == 1
    registry.state.close()


class _CrashBeforeCommit(StateStore):
    def add_module(self, record: ModuleRecord) -> tuple[ModuleRecord, bool]:
        os._exit(17)  # the process dies with the blob written and the row not


def _register_and_crash(stores: Stores) -> None:
    state = _CrashBeforeCommit(connect_state_store(database_url=stores.state_url).dialect)
    make_registry(stores, state).register("adder", "1.0.0", ADD)


def test_a_crash_between_blob_and_row_leaves_no_visible_module(stores: Stores) -> None:
    open_state_store(database_url=stores.state_url).close()
    child = multiprocessing.get_context("spawn").Process(target=_register_and_crash, args=(stores,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 17
    registry = make_registry(stores)
    assert registry.modules() == []
    with pytest.raises(UnknownModuleError):
        registry.get("adder-v1.0.0")
    assert list(registry.blobs.versions()) == []  # no metadata.json either
    # The orphaned blob is harmless: registering again succeeds and reuses it.
    registration = registry.register("adder", "1.0.0", ADD)
    assert registration.created and registry.blobs.read(registration.module.digest) == ADD
    registry.state.close()
