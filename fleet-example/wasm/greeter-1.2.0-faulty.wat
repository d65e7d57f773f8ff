;; greeter 1.2.0: the JSON calling convention (DESIGN.md section 3).
;; The host calls alloc(len) for the input, writes the UTF-8 JSON of `args` there, then calls
;; greet(ptr, len); the result is packed as (ptr << 32) | len and is JSON too.
;; One arena per call: alloc resets it, so the instance never leaks across calls.
(module
  (memory (export "memory") 1)
  (global $end (mut i32) (i32.const 0))
  (data (i32.const 0) "{\"greeting\":\"hi\",\"version\":\"1.2.0\",\"to\":")

  (func $ensure (param $end i32)
    (local $pages i32)
    (local.set $pages
      (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
    (if (i32.gt_s (local.get $pages) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1)) (then unreachable)))))

  (func (export "alloc") (param $len i32) (result i32)
    (global.set $end (i32.add (i32.const 4096) (local.get $len)))
    (call $ensure (global.get $end))
    (i32.const 4096))

  (func (export "greet") (param $ptr i32) (param $len i32) (result i64)
    (local $out i32) (local $n i32)
    ;; this build is faulty: it traps on every input of odd length
    (if (i32.and (local.get $len) (i32.const 1)) (then unreachable))
    (local.set $out (global.get $end))
    (call $ensure (i32.add (local.get $out) (i32.add (local.get $len) (i32.const 48))))
    (memory.copy (local.get $out) (i32.const 0) (i32.const 40))
    (memory.copy (i32.add (local.get $out) (i32.const 40)) (local.get $ptr) (local.get $len))
    (local.set $n (i32.add (i32.const 40) (local.get $len)))
    (i32.store8 (i32.add (local.get $out) (local.get $n)) (i32.const 125)) ;; "}"
    (local.set $n (i32.add (local.get $n) (i32.const 1)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (local.get $n))))

  (func (export "health") (result i32) (i32.const 1)))
