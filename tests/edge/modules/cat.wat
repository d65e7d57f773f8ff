;; Command convention: a WASI program whose `_start` copies stdin to stdout (so the result is
;; the args) and writes a line to stderr.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 200) "cat ran\n")
  (func (export "_start")
    (local $n i32)
    (loop $more
      ;; iovec at 0: buffer at 1024, 4096 bytes
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 4096))
      (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (if (i32.gt_u (local.get $n) (i32.const 0))
        (then
          (i32.store (i32.const 16) (i32.const 1024))
          (i32.store (i32.const 20) (local.get $n))
          (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
          (br $more))))
    (i32.store (i32.const 32) (i32.const 200))
    (i32.store (i32.const 36) (i32.const 8))
    (drop (call $fd_write (i32.const 2) (i32.const 32) (i32.const 1) (i32.const 24)))))
