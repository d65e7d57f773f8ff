;; Limit probes: `spin` never returns; `grow(pages)` returns memory.grow's answer (-1 when refused);
;; `grow_or_trap(pages)` grows one page at a time, as an allocator extends its heap, and traps
;; when refused, as a Rust or C program aborts when out of memory.
(module
  (memory (export "memory") 1)
  (func (export "spin") (result i32)
    (loop $forever (br $forever))
    i32.const 0)
  (func (export "fast") (result i32) i32.const 7)
  (func (export "grow") (param i32) (result i32)
    local.get 0 memory.grow)
  (func (export "grow_or_trap") (param $pages i32) (result i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $pages)))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (local.set $pages (i32.sub (local.get $pages) (i32.const 1)))
        (br $more)))
    memory.size))
