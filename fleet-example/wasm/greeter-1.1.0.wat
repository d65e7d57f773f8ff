;; greeter 1.1.0: the JSON calling convention (DESIGN.md section 3), and WASI preview 1 for its env.
;; The host calls alloc(len) for the input, writes the UTF-8 JSON of `args` there, then calls
;; greet(ptr, len); the result is packed as (ptr << 32) | len and is JSON too.
;; One arena per call: alloc resets it, so the instance never leaks across calls.
;;
;; greet takes {"name": "Ada"}, "Ada" or null, and answers
;;   {"greeting":"<GREETING>, <name>","version":"1.1.0","to":<its input>}
;; GREETING is the environment variable (the module's capabilities.env; the edge passes no other).
;; The default answer (the data at 256) is split at its first ", ": the part before stands for an
;; unset or empty GREETING, the rest for a missing or empty name. The name is copied as the JSON
;; text it came in (already escaped); GREETING is escaped here. A name of more than 256 bytes of
;; JSON text, a GREETING of more than 256 bytes, or an input of another shape answers
;; {"error":"...","version":"1.1.0"} instead: bad input never traps.
(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $end (mut i32) (i32.const 4096))
  ;; NUL-terminated strings, each in its own slot below the arena (4096)
  (data (i32.const 0) "{\"greeting\":\"\00")
  (data (i32.const 32) "{\"error\":\"\00")
  (data (i32.const 64) "\",\"version\":\"\00")
  (data (i32.const 96) "\",\"to\":\00")
  (data (i32.const 128) "1.1.0\00")                 ;; the version: at most 127 bytes
  (data (i32.const 256) "hello, friend\00")         ;; the default answer: at most 255 bytes
  (data (i32.const 512) "GREETING=\00")
  (data (i32.const 544) "expected {\\\"name\\\": \\\"...\\\"}, a JSON string or null\00")
  (data (i32.const 640) "name is longer than 256 bytes\00")
  (data (i32.const 704) "GREETING is longer than 256 bytes\00")

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

  ;; --- reading the input: [p, e) -----------------------------------------------------------------

  ;; the byte at $p, or -1 at the end of the input
  (func $byte (param $p i32) (param $e i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $p) (local.get $e))
      (then (i32.load8_u (local.get $p)))
      (else (i32.const -1))))

  (func $is_ws (param $b i32) (result i32)
    (i32.or
      (i32.or (i32.eq (local.get $b) (i32.const 32)) (i32.eq (local.get $b) (i32.const 9)))
      (i32.or (i32.eq (local.get $b) (i32.const 10)) (i32.eq (local.get $b) (i32.const 13)))))

  (func $ws (param $p i32) (param $e i32) (result i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (call $is_ws (call $byte (local.get $p) (local.get $e)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  ;; 1 when `null` starts at $p
  (func $null (param $p i32) (param $e i32) (result i32)
    (if (result i32) (i32.le_u (i32.add (local.get $p) (i32.const 4)) (local.get $e))
      (then (i32.eq (i32.load (local.get $p)) (i32.const 0x6c6c756e)))
      (else (i32.const 0))))

  (func $is_hex (param $b i32) (result i32)
    (i32.or
      (i32.lt_u (i32.sub (local.get $b) (i32.const 48)) (i32.const 10))
      (i32.lt_u (i32.sub (i32.or (local.get $b) (i32.const 32)) (i32.const 97)) (i32.const 6))))

  ;; after a backslash: one of " \ / b f n r t
  (func $is_escape (param $b i32) (result i32)
    (i32.or
      (i32.or
        (i32.or (i32.eq (local.get $b) (i32.const 34)) (i32.eq (local.get $b) (i32.const 92)))
        (i32.or (i32.eq (local.get $b) (i32.const 47)) (i32.eq (local.get $b) (i32.const 98))))
      (i32.or
        (i32.or (i32.eq (local.get $b) (i32.const 102)) (i32.eq (local.get $b) (i32.const 110)))
        (i32.or (i32.eq (local.get $b) (i32.const 114)) (i32.eq (local.get $b) (i32.const 116))))))

  ;; the closing quote of the JSON string whose opening quote is at $p, or -1 if it is not one
  (func $string_end (param $p i32) (param $e i32) (result i32)
    (local $b i32)
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (loop $next
      (local.set $b (call $byte (local.get $p) (local.get $e)))
      (if (i32.eq (local.get $b) (i32.const 34)) (then (return (local.get $p))))
      (if (i32.lt_s (local.get $b) (i32.const 32)) (then (return (i32.const -1))))  ;; the end, or a control
      (if (i32.eq (local.get $b) (i32.const 92))
        (then
          (local.set $b (call $byte (i32.add (local.get $p) (i32.const 1)) (local.get $e)))
          (if (i32.eq (local.get $b) (i32.const 117))
            (then  ;; \uXXXX
              (if (i32.gt_u (i32.add (local.get $p) (i32.const 6)) (local.get $e)) (then (return (i32.const -1))))
              (if (i32.eqz
                    (i32.and
                      (i32.and
                        (call $is_hex (i32.load8_u offset=2 (local.get $p)))
                        (call $is_hex (i32.load8_u offset=3 (local.get $p))))
                      (i32.and
                        (call $is_hex (i32.load8_u offset=4 (local.get $p)))
                        (call $is_hex (i32.load8_u offset=5 (local.get $p))))))
                (then (return (i32.const -1))))
              (local.set $p (i32.add (local.get $p) (i32.const 6))))
            (else
              (if (i32.eqz (call $is_escape (local.get $b))) (then (return (i32.const -1))))
              (local.set $p (i32.add (local.get $p) (i32.const 2)))))
          (br $next)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next))
    (i32.const -1))

  ;; the end of the JSON value that starts at $p, or -1 (strings are checked, the rest is scanned)
  (func $skip_value (param $p i32) (param $e i32) (result i32)
    (local $b i32) (local $depth i32) (local $start i32)
    (local.set $start (local.get $p))
    (loop $next
      (local.set $b (call $byte (local.get $p) (local.get $e)))
      (if (i32.lt_s (local.get $b) (i32.const 0))  ;; the end of the input: only a scalar may end there
        (then
          (return
            (select (i32.const -1) (local.get $p)
              (i32.or (local.get $depth) (i32.eq (local.get $p) (local.get $start)))))))
      (if (i32.eq (local.get $b) (i32.const 34))
        (then
          (local.set $p (call $string_end (local.get $p) (local.get $e)))
          (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (if (i32.eqz (local.get $depth)) (then (return (local.get $p))))
          (br $next)))
      (if (i32.eq (i32.or (local.get $b) (i32.const 32)) (i32.const 123))  ;; { or [
        (then
          (local.set $depth (i32.add (local.get $depth) (i32.const 1)))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (br $next)))
      (if (i32.eqz (local.get $depth))  ;; a scalar ends at , } ] or whitespace
        (then
          (if (i32.or
                (i32.or (i32.eq (local.get $b) (i32.const 44)) (call $is_ws (local.get $b)))
                (i32.eq (i32.or (local.get $b) (i32.const 32)) (i32.const 125)))
            (then
              (return (select (i32.const -1) (local.get $p) (i32.eq (local.get $p) (local.get $start))))))))
      (if (i32.eq (i32.or (local.get $b) (i32.const 32)) (i32.const 125))  ;; } or ]
        (then
          (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (if (i32.eqz (local.get $depth)) (then (return (local.get $p))))
          (br $next)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next))
    (i32.const -1))

  ;; the object that opens at $p: (its end or -1, the name's JSON text, its length)
  (func $object (param $p i32) (param $e i32) (result i32 i32 i32)
    (local $q i32) (local $key i32) (local $found i32) (local $name i32) (local $name_len i32)
    (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $e)))
    (if (i32.eq (call $byte (local.get $p) (local.get $e)) (i32.const 125))
      (then (return (i32.add (local.get $p) (i32.const 1)) (i32.const 0) (i32.const 0))))
    (loop $member
      (if (i32.ne (call $byte (local.get $p) (local.get $e)) (i32.const 34))
        (then (return (i32.const -1) (i32.const 0) (i32.const 0))))
      (local.set $q (call $string_end (local.get $p) (local.get $e)))
      (if (i32.lt_s (local.get $q) (i32.const 0)) (then (return (i32.const -1) (i32.const 0) (i32.const 0))))
      (local.set $key (i32.const 0))
      (if (i32.eq (i32.sub (local.get $q) (local.get $p)) (i32.const 5))  ;; "name"
        (then (local.set $key (i32.eq (i32.load offset=1 (local.get $p)) (i32.const 0x656d616e)))))
      (local.set $p (call $ws (i32.add (local.get $q) (i32.const 1)) (local.get $e)))
      (if (i32.ne (call $byte (local.get $p) (local.get $e)) (i32.const 58))
        (then (return (i32.const -1) (i32.const 0) (i32.const 0))))
      (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $e)))
      (if (i32.and (local.get $key) (i32.eqz (local.get $found)))
        (then
          (local.set $found (i32.const 1))
          (if (i32.eq (call $byte (local.get $p) (local.get $e)) (i32.const 34))
            (then
              (local.set $q (call $string_end (local.get $p) (local.get $e)))
              (if (i32.lt_s (local.get $q) (i32.const 0))
                (then (return (i32.const -1) (i32.const 0) (i32.const 0))))
              (local.set $name (i32.add (local.get $p) (i32.const 1)))
              (local.set $name_len (i32.sub (local.get $q) (local.get $name)))
              (local.set $p (i32.add (local.get $q) (i32.const 1))))
            (else
              (if (i32.eqz (call $null (local.get $p) (local.get $e)))
                (then (return (i32.const -1) (i32.const 0) (i32.const 0))))
              (local.set $p (i32.add (local.get $p) (i32.const 4))))))
        (else
          (local.set $p (call $skip_value (local.get $p) (local.get $e)))
          (if (i32.lt_s (local.get $p) (i32.const 0))
            (then (return (i32.const -1) (i32.const 0) (i32.const 0))))))
      (local.set $p (call $ws (local.get $p) (local.get $e)))
      (if (i32.eq (call $byte (local.get $p) (local.get $e)) (i32.const 44))
        (then
          (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $e)))
          (br $member)))
      (if (i32.ne (call $byte (local.get $p) (local.get $e)) (i32.const 125))
        (then (return (i32.const -1) (i32.const 0) (i32.const 0)))))
    (i32.add (local.get $p) (i32.const 1))
    (local.get $name)
    (local.get $name_len))

  ;; --- the environment -----------------------------------------------------------------------------

  ;; the value of GREETING among $count `K=V` strings listed at $list, or 0 when it is unset
  (func $lookup (param $list i32) (param $count i32) (result i32)
    (local $i i32) (local $s i32) (local $k i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $s (i32.load (i32.add (local.get $list) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $k (i32.const 0))
        (block $differs
          (loop $same
            (if (i32.eqz (i32.load8_u (i32.add (i32.const 512) (local.get $k))))
              (then (return (i32.add (local.get $s) (local.get $k)))))
            (br_if $differs
              (i32.ne
                (i32.load8_u (i32.add (local.get $s) (local.get $k)))
                (i32.load8_u (i32.add (i32.const 512) (local.get $k)))))
            (local.set $k (i32.add (local.get $k) (i32.const 1)))
            (br $same)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; --- writing the answer at $o: each returns the new end -----------------------------------------

  (func $strlen (param $s i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $s) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  (func $put (param $o i32) (param $b i32) (result i32)
    (call $ensure (i32.add (local.get $o) (i32.const 1)))
    (i32.store8 (local.get $o) (local.get $b))
    (i32.add (local.get $o) (i32.const 1)))

  (func $copy (param $o i32) (param $src i32) (param $len i32) (result i32)
    (call $ensure (i32.add (local.get $o) (local.get $len)))
    (memory.copy (local.get $o) (local.get $src) (local.get $len))
    (i32.add (local.get $o) (local.get $len)))

  ;; a NUL-terminated string that is JSON text already
  (func $copy_str (param $o i32) (param $s i32) (result i32)
    (call $copy (local.get $o) (local.get $s) (call $strlen (local.get $s))))

  ;; $len bytes of text as the inside of a JSON string: " and \ escaped, control characters as \u00XX
  (func $put_escaped (param $o i32) (param $src i32) (param $len i32) (result i32)
    (local $i i32) (local $b i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $b (i32.load8_u (i32.add (local.get $src) (local.get $i))))
        (if (i32.or (i32.eq (local.get $b) (i32.const 34)) (i32.eq (local.get $b) (i32.const 92)))
          (then
            (local.set $o (call $put (local.get $o) (i32.const 92)))
            (local.set $o (call $put (local.get $o) (local.get $b))))
          (else
            (if (i32.lt_u (local.get $b) (i32.const 32))
              (then
                (local.set $o (call $put (local.get $o) (i32.const 92)))
                (local.set $o (call $put (local.get $o) (i32.const 117)))
                (local.set $o (call $put (local.get $o) (i32.const 48)))
                (local.set $o (call $put (local.get $o) (i32.const 48)))
                (local.set $o (call $put (local.get $o) (i32.add (i32.const 48) (i32.shr_u (local.get $b) (i32.const 4)))))
                (local.set $b (i32.and (local.get $b) (i32.const 15)))
                (local.set $o
                  (call $put (local.get $o)
                    (i32.add (local.get $b)
                      (select (i32.const 48) (i32.const 87) (i32.lt_u (local.get $b) (i32.const 10)))))))
              (else (local.set $o (call $put (local.get $o) (local.get $b)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $o))

  ;; where ", " first occurs in the $len bytes at $s, or $len
  (func $split (param $s i32) (param $len i32) (result i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (i32.add (local.get $i) (i32.const 1)) (local.get $len)))
        (if (i32.and
              (i32.eq (i32.load8_u (i32.add (local.get $s) (local.get $i))) (i32.const 44))
              (i32.eq (i32.load8_u offset=1 (i32.add (local.get $s) (local.get $i))) (i32.const 32)))
          (then (return (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $len))

  (func (export "greet") (param $ptr i32) (param $len i32) (result i64)
    (local $e i32) (local $p i32) (local $q i32) (local $b i32) (local $name i32) (local $name_len i32)
    (local $at i32) (local $count i32) (local $strings i32) (local $greeting i32) (local $greeting_len i32)
    (local $default_len i32) (local $split i32) (local $error i32) (local $out i32) (local $o i32)
    (local.set $e (i32.add (local.get $ptr) (local.get $len)))

    ;; GREETING: the environment is listed in scratch memory after the input, the answer after it
    (local.set $at
      (i32.and
        (i32.add
          (select (global.get $end) (local.get $e) (i32.gt_u (global.get $end) (local.get $e)))
          (i32.const 7))
        (i32.const -8)))
    (local.set $out (i32.add (local.get $at) (i32.const 8)))
    (call $ensure (local.get $out))
    (if (i32.eqz (call $environ_sizes_get (local.get $at) (i32.add (local.get $at) (i32.const 4))))
      (then
        (local.set $count (i32.load (local.get $at)))
        (local.set $strings (i32.add (local.get $out) (i32.shl (local.get $count) (i32.const 2))))
        (local.set $out (i32.add (local.get $strings) (i32.load offset=4 (local.get $at))))
        (call $ensure (local.get $out))
        (if (i32.eqz (call $environ_get (i32.add (local.get $at) (i32.const 8)) (local.get $strings)))
          (then (local.set $greeting (call $lookup (i32.add (local.get $at) (i32.const 8)) (local.get $count)))))))
    (if (local.get $greeting) (then (local.set $greeting_len (call $strlen (local.get $greeting)))))

    (block $failed
      ;; the input: {"name": ...}, a JSON string, or null
      (local.set $error (i32.const 544))
      (local.set $p (call $ws (local.get $ptr) (local.get $e)))
      (local.set $b (call $byte (local.get $p) (local.get $e)))
      (if (i32.eq (local.get $b) (i32.const 34))
        (then
          (local.set $q (call $string_end (local.get $p) (local.get $e)))
          (br_if $failed (i32.lt_s (local.get $q) (i32.const 0)))
          (local.set $name (i32.add (local.get $p) (i32.const 1)))
          (local.set $name_len (i32.sub (local.get $q) (local.get $name)))
          (local.set $p (i32.add (local.get $q) (i32.const 1))))
        (else
          (if (i32.eq (local.get $b) (i32.const 123))
            (then
              (call $object (local.get $p) (local.get $e))
              (local.set $name_len)
              (local.set $name)
              (local.set $p)
              (br_if $failed (i32.lt_s (local.get $p) (i32.const 0))))
            (else
              (br_if $failed (i32.eqz (call $null (local.get $p) (local.get $e))))
              (local.set $p (i32.add (local.get $p) (i32.const 4)))))))
      (br_if $failed (i32.ne (call $ws (local.get $p) (local.get $e)) (local.get $e)))
      (local.set $error (i32.const 640))
      (br_if $failed (i32.gt_u (local.get $name_len) (i32.const 256)))
      (local.set $error (i32.const 704))
      (br_if $failed (i32.gt_u (local.get $greeting_len) (i32.const 256)))

      ;; {"greeting":"<GREETING>, <name>","version":"1.1.0","to":<input>}
      (local.set $default_len (call $strlen (i32.const 256)))
      (local.set $split (call $split (i32.const 256) (local.get $default_len)))
      (local.set $o (call $copy_str (local.get $out) (i32.const 0)))
      (if (local.get $greeting_len)
        (then (local.set $o (call $put_escaped (local.get $o) (local.get $greeting) (local.get $greeting_len))))
        (else (local.set $o (call $put_escaped (local.get $o) (i32.const 256) (local.get $split)))))
      (if (local.get $name_len)
        (then
          (local.set $o (call $put (local.get $o) (i32.const 44)))
          (local.set $o (call $put (local.get $o) (i32.const 32)))
          (local.set $o (call $copy (local.get $o) (local.get $name) (local.get $name_len))))
        (else
          (local.set $o
            (call $put_escaped (local.get $o)
              (i32.add (i32.const 256) (local.get $split))
              (i32.sub (local.get $default_len) (local.get $split))))))
      (local.set $o (call $copy_str (local.get $o) (i32.const 64)))
      (local.set $o (call $put_escaped (local.get $o) (i32.const 128) (call $strlen (i32.const 128))))
      (local.set $o (call $copy_str (local.get $o) (i32.const 96)))
      (local.set $o (call $copy (local.get $o) (local.get $ptr) (local.get $len)))
      (local.set $o (call $put (local.get $o) (i32.const 125)))
      (return
        (i64.or
          (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
          (i64.extend_i32_u (i32.sub (local.get $o) (local.get $out))))))

    ;; {"error":"...","version":"1.1.0"}
    (local.set $o (call $copy_str (local.get $out) (i32.const 32)))
    (local.set $o (call $copy_str (local.get $o) (local.get $error)))
    (local.set $o (call $copy_str (local.get $o) (i32.const 64)))
    (local.set $o (call $put_escaped (local.get $o) (i32.const 128) (call $strlen (i32.const 128))))
    (local.set $o (call $put (local.get $o) (i32.const 34)))
    (local.set $o (call $put (local.get $o) (i32.const 125)))
    (i64.or
      (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
      (i64.extend_i32_u (i32.sub (local.get $o) (local.get $out)))))

  (func (export "health") (result i32) (i32.const 1)))
