;; Instance state probes: `count` bumps a global and returns it (a pooled instance keeps it between
;; calls); `grow(pages)` grows memory without trapping (-1 when refused); `grow_then_trap(pages)`
;; grows, then hits `unreachable`; `recurse` never stops calling itself (a stack overflow).
(module
  (memory (export "memory") 1)
  (global $count (mut i32) (i32.const 0))
  (func (export "count") (result i32)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    global.get $count)
  (func (export "grow") (param i32) (result i32)
    local.get 0 memory.grow)
  (func (export "grow_then_trap") (param i32) (result i32)
    local.get 0 memory.grow drop unreachable)
  (func $recurse (export "recurse") (result i32)
    call $recurse))
