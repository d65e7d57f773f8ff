;; hello 1.0.0: the core module of a WASI preview 2 component (the `component` convention).
;; scripts/build-component.sh embeds interfaces/hello.wit and wraps it with `wasm-tools component
;; new` into hello-1.0.0.wasm. The canonical ABI: `greet` gets the name as (ptr, len) in memory the
;; host filled through cabi_realloc, and answers a pointer to the record {text: (ptr, len), length}.
;; A bump allocator; the post-return function resets it, so no call leaks into the next.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 0) "hello, ")

  (func $alloc (param $align i32) (param $size i32) (result i32)
    (local $p i32) (local $end i32) (local $pages i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $pages
      (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)) (memory.size)))
    (if (i32.gt_s (local.get $pages) (i32.const 0))
      (then (if (i32.eq (memory.grow (local.get $pages)) (i32.const -1)) (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $p))

  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (call $alloc (local.get 2) (local.get 3)))

  (func (export "example:hello/greet@1.0.0#greet") (param $ptr i32) (param $len i32) (result i32)
    (local $text i32) (local $n i32) (local $ret i32)
    (local.set $n (i32.add (local.get $len) (i32.const 7)))
    (local.set $text (call $alloc (i32.const 1) (local.get $n)))
    (memory.copy (local.get $text) (i32.const 0) (i32.const 7))
    (memory.copy (i32.add (local.get $text) (i32.const 7)) (local.get $ptr) (local.get $len))
    (local.set $ret (call $alloc (i32.const 4) (i32.const 12)))
    (i32.store (local.get $ret) (local.get $text))
    (i32.store offset=4 (local.get $ret) (local.get $n))
    (i32.store offset=8 (local.get $ret) (local.get $n))
    (local.get $ret))

  (func (export "cabi_post_example:hello/greet@1.0.0#greet") (param i32)
    (global.set $heap (i32.const 1024)))

  (func (export "example:hello/greet@1.0.0#health") (result i32) (i32.const 1)))
