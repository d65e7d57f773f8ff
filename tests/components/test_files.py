"""A component reads a preopened directory and is refused a write to a read-only one (wasi:filesystem)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import TrapError
from edge.runtime import DirGrant, Runtime, Sandbox
from tests.components.conftest import ALLOC, build

# The parts of wasi:filesystem@0.2.0 the component imports (types as the standard defines them).
FILESYSTEM_WIT = """package wasi:filesystem@0.2.0;

interface types {
  type filesize = u64;
  flags descriptor-flags {
    read, write, file-integrity-sync, data-integrity-sync, requested-write-sync, mutate-directory,
  }
  flags path-flags { symlink-follow }
  flags open-flags { create, directory, exclusive, truncate }
  enum error-code {
    access, would-block, already, bad-descriptor, busy, deadlock, quota, exist, file-too-large,
    illegal-byte-sequence, in-progress, interrupted, invalid, io, is-directory, loop, too-many-links,
    message-size, name-too-long, no-device, no-entry, no-lock, insufficient-memory, insufficient-space,
    not-directory, not-empty, not-recoverable, unsupported, no-tty, no-such-device, overflow,
    not-permitted, pipe, read-only, invalid-seek, text-file-busy, cross-device,
  }
  resource descriptor {
    read: func(length: filesize, offset: filesize) -> result<tuple<list<u8>, bool>, error-code>;
    write: func(buffer: list<u8>, offset: filesize) -> result<filesize, error-code>;
    open-at: func(path-flags: path-flags, path: string, open-flags: open-flags, %flags: descriptor-flags)
      -> result<descriptor, error-code>;
  }
}

interface preopens {
  use types.{descriptor};
  get-directories: func() -> list<tuple<descriptor, string>>;
}
"""

FILES_WIT = """package test:files@0.1.0;

world files {
  use wasi:filesystem/types@0.2.0.{error-code};
  import wasi:filesystem/types@0.2.0;
  import wasi:filesystem/preopens@0.2.0;
  export read: func(path: string) -> result<string, error-code>;
  export write: func(path: string, data: string) -> result<u64, error-code>;
}
"""

T = '"wasi:filesystem/types@0.2.0"'
FILES_WAT = f"""(module
  (import "wasi:filesystem/preopens@0.2.0" "get-directories" (func $dirs (param i32)))
  (import {T} "[method]descriptor.open-at" (func $open (param i32 i32 i32 i32 i32 i32 i32)))
  (import {T} "[method]descriptor.read" (func $read (param i32 i64 i64 i32)))
  (import {T} "[method]descriptor.write" (func $write (param i32 i32 i32 i64 i32)))
  (import {T} "[resource-drop]descriptor" (func $drop (param i32)))
{ALLOC}
  ;; Open `path` in the first preopened directory; the result<descriptor, error-code> lands at $tmp.
  (func $open_first (param $p i32) (param $n i32) (param $oflags i32) (param $dflags i32) (param $tmp i32)
    (local $dir i32)
    (call $dirs (local.get $tmp))
    (local.set $dir (i32.load (i32.load (local.get $tmp))))
    (call $open (local.get $dir) (i32.const 1) (local.get $p) (local.get $n)
                (local.get $oflags) (local.get $dflags) (local.get $tmp))
    (call $drop (local.get $dir)))

  (func (export "read") (param $p i32) (param $n i32) (result i32)
    (local $ret i32) (local $tmp i32) (local $fd i32)
    (local.set $ret (call $alloc (i32.const 4) (i32.const 12)))
    (local.set $tmp (call $alloc (i32.const 8) (i32.const 16)))
    (call $open_first (local.get $p) (local.get $n) (i32.const 0) (i32.const 1) (local.get $tmp))
    (if (i32.load8_u (local.get $tmp)) (then
      (i32.store8 (local.get $ret) (i32.const 1))
      (i32.store8 offset=4 (local.get $ret) (i32.load8_u offset=4 (local.get $tmp)))
      (return (local.get $ret))))
    (local.set $fd (i32.load offset=4 (local.get $tmp)))
    (call $read (local.get $fd) (i64.const 65536) (i64.const 0) (local.get $tmp))
    (call $drop (local.get $fd))
    (if (i32.load8_u (local.get $tmp)) (then
      (i32.store8 (local.get $ret) (i32.const 1))
      (i32.store8 offset=4 (local.get $ret) (i32.load8_u offset=4 (local.get $tmp)))
      (return (local.get $ret))))
    (i32.store8 (local.get $ret) (i32.const 0))
    (i32.store offset=4 (local.get $ret) (i32.load offset=4 (local.get $tmp)))
    (i32.store offset=8 (local.get $ret) (i32.load offset=8 (local.get $tmp)))
    (local.get $ret))
  (export "cabi_post_read" (func $reset))

  (func (export "write") (param $p i32) (param $n i32) (param $d i32) (param $dn i32) (result i32)
    (local $ret i32) (local $tmp i32) (local $fd i32)
    (local.set $ret (call $alloc (i32.const 8) (i32.const 16)))
    (local.set $tmp (call $alloc (i32.const 8) (i32.const 16)))
    (call $open_first (local.get $p) (local.get $n) (i32.const 9) (i32.const 2) (local.get $tmp))
    (if (i32.load8_u (local.get $tmp)) (then
      (i32.store8 (local.get $ret) (i32.const 1))
      (i32.store8 offset=8 (local.get $ret) (i32.load8_u offset=4 (local.get $tmp)))
      (return (local.get $ret))))
    (local.set $fd (i32.load offset=4 (local.get $tmp)))
    (call $write (local.get $fd) (local.get $d) (local.get $dn) (i64.const 0) (local.get $tmp))
    (call $drop (local.get $fd))
    (i64.store (local.get $ret) (i64.load (local.get $tmp)))
    (i64.store offset=8 (local.get $ret) (i64.load offset=8 (local.get $tmp)))
    (local.get $ret))
  (export "cabi_post_write" (func $reset)))
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    deps = {"filesystem": FILESYSTEM_WIT}
    return build(tmp_path_factory.mktemp("files"), FILES_WIT, FILES_WAT, "files", deps)


def test_a_component_reads_a_preopened_file_and_is_refused_a_write(
    runtime: Runtime, files: bytes, tmp_path: Path
) -> None:
    (tmp_path / "hello.txt").write_text("hello from the host")
    loaded = runtime.load_any(files, Sandbox(dirs=(DirGrant(tmp_path, "/data"),)))
    assert not loaded.may_run_inline("read")  # file access never runs on the event loop
    assert loaded.invoke(loaded.prepare("read", ["hello.txt"])).value == {"ok": "hello from the host"}
    assert loaded.invoke(loaded.prepare("read", ["missing.txt"])).value == {"err": "no-entry"}
    assert loaded.invoke(loaded.prepare("read", ["../etc/passwd"])).value == {"err": "not-permitted"}
    refused = loaded.invoke(loaded.prepare("write", ["new.txt", "data"])).value
    assert refused == {"err": "read-only"} or refused == {"err": "not-permitted"}, refused
    assert not (tmp_path / "new.txt").exists()


def test_a_read_write_grant_lets_the_component_write(runtime: Runtime, files: bytes, tmp_path: Path) -> None:
    loaded = runtime.load_any(files, Sandbox(dirs=(DirGrant(tmp_path, "/data", writable=True),)))
    assert loaded.invoke(loaded.prepare("write", ["new.txt", "written"])).value == {"ok": 7}
    assert (tmp_path / "new.txt").read_text() == "written"


def test_without_a_grant_there_is_no_directory(runtime: Runtime, files: bytes) -> None:
    loaded = runtime.load_any(files, Sandbox())
    with pytest.raises(TrapError, match="unknown handle"):  # the guest indexes an empty list of preopens
        loaded.invoke(loaded.prepare("read", ["hello.txt"]))
