;; Limit probes: `spin` never returns; `grow(pages)` returns memory.grow's answer (-1 when refused);
;; `grow_or_trap(pages)` traps when refused, as a Rust or C program aborts on out of memory.
(module
  (memory (export "memory") 1)
  (func (export "spin") (result i32)
    (loop $forever (br $forever))
    i32.const 0)
  (func (export "fast") (result i32) i32.const 7)
  (func (export "grow") (param i32) (result i32)
    local.get 0 memory.grow)
  (func (export "grow_or_trap") (param i32) (result i32)
    local.get 0 memory.grow
    i32.const -1 i32.eq
    (if (then unreachable))
    memory.size))
