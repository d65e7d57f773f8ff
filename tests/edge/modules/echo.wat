;; JSON convention: `alloc(len) -> ptr`, then `f(ptr, len) -> (ptr << 32) | len`.
;; `echo` returns its input unchanged; `answer` ignores it and returns {"answer":42};
;; `garbage` returns bytes that are not JSON; `outside` points past the end of memory.
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))
  (data (i32.const 16) "{\"answer\":42}")
  (data (i32.const 64) "not json")
  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    global.get $next
    local.set $ptr
    global.get $next local.get $len i32.add global.set $next
    ;; grow when the bump pointer passes the end of memory
    (block $ok
      global.get $next memory.size i32.const 65536 i32.mul i32.le_u br_if $ok
      global.get $next i32.const 65535 i32.add i32.const 16 i32.shr_u
      memory.size i32.sub memory.grow drop)
    local.get $ptr)
  (func $pack (param $ptr i32) (param $len i32) (result i64)
    local.get $ptr i64.extend_i32_u i64.const 32 i64.shl
    local.get $len i64.extend_i32_u i64.or)
  (func (export "echo") (param $ptr i32) (param $len i32) (result i64)
    global.get $next i32.const 1024 i32.gt_u
    (if (then i32.const 1024 global.set $next))
    local.get $ptr local.get $len call $pack)
  (func (export "answer") (param i32 i32) (result i64)
    i32.const 1024 global.set $next
    i32.const 16 i32.const 13 call $pack)
  (func (export "garbage") (param i32 i32) (result i64)
    i32.const 64 i32.const 8 call $pack)
  (func (export "outside") (param i32 i32) (result i64)
    i32.const 65530 i32.const 100 call $pack))
