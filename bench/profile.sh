#!/usr/bin/env bash
# Where the proxy's instructions go, per request: the bare Pingora proxy of bench/run.sh
# and Tollgate (passthrough, key auth, key + rate-limit + quota, + analytics) under
# `valgrind --tool=callgrind`, counting only the requests (the counters are zeroed after a
# warm-up and dumped after REQUESTS requests). Instruction counts do not depend on what
# else the machine runs, so two builds can be compared on a busy machine. User space only
# (the kernel's share of a request is in bench/run.sh's `k instr/req`, from perf stat).
#
#   bash bench/profile.sh                        # REQUESTS=20000 CASES="bare bare-hdr tg-pass tg-key tg-limits tg-full"
#
# Not run by default: tg-full-log, tg-full with the JSON access log on (`--access-log`, its
# lines to a file); tg-xml, `xml-to-json` of bench/catalog.py's 10 KB answer.
#
# Writes OUT/callgrind.CASE.1 (open with callgrind_annotate or kcachegrind) and
# OUT/instr.CASE.json (instructions per request, total and in memcpy), and prints, per
# case, the instructions per request, the inclusive cost of Tollgate's own functions (its
# ProxyHttp hooks and what they call), the largest self costs (bench/callgrind-self.py)
# and who calls memcpy. Note: valgrind counts each byte of a `rep movsb` copy as an
# instruction, so large memcpys weigh more here than on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REQUESTS=${REQUESTS:-20000}
CASES=${CASES:-bare bare-hdr tg-pass tg-key tg-limits tg-full}
OUT=${OUT:-$ROOT/target/bench-profile}
TOP=${TOP:-25}
source bench/lib.sh
need valgrind
need nginx nginx-light
need_oha
BUILD_PROFILE=${BUILD_PROFILE:-release} # the cargo profile of both proxies
cargo build --profile "$BUILD_PROFILE" -q -p tollgate -p tollgate-bench-bare-proxy
TG=${TG:-$ROOT/target/$BUILD_PROFILE/tollgate} # TG=/path/to/another/build compares two builds
BARE=$ROOT/target/$BUILD_PROFILE/bare-proxy
mkdir -p "$OUT"

UP=$(port)
write_upstream_conf
mkdir -p "$DIR/static"
python3 bench/catalog.py "$DIR/static/catalog.xml"
nginx -p "$DIR" -c "$DIR/up.conf" -g 'daemon off;' & PIDS+=($!)
{ echo "version: 1"; echo "apis:"; api_pass; } >"$DIR/policy.yaml"
cat >>"$DIR/policy.yaml" <<YAML
  - id: key
    path: /key
    upstream: { targets: ["http://127.0.0.1:$UP"] }
  - id: limits
    path: /limits
    upstream: { targets: ["http://127.0.0.1:$UP"] }
    policies:
      inbound:
        - rate-limit: { calls: 1000000000, renewal_period: 1m }
        - quota: { calls: 1000000000, renewal_period: calendar-month }
$(api_xml)
YAML

profile() { # case
  local c=$1 p a url hdr=() vg
  p=$(port); a=$(port)
  rm -f "$OUT/callgrind.$c" "$OUT/callgrind.$c".* "$OUT/instr.$c.json"
  vg=(valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$c" --dump-instr=no)
  case $c in
    bare) "${vg[@]}" "$BARE" "127.0.0.1:$p" "127.0.0.1:$UP" 1 >"$DIR/$c.log" 2>&1 &
      url=http://127.0.0.1:$p/pass/hello ;;
    bare-hdr) "${vg[@]}" "$BARE" "127.0.0.1:$p" "127.0.0.1:$UP" 1 --contract-headers \
        >"$DIR/$c.log" 2>&1 &
      url=http://127.0.0.1:$p/pass/hello ;;
    tg-*)
      local analytics=off path=/pass/hello extra=()
      case $c in
        tg-key) path=/key/hello ;;
        tg-limits) path=/limits/hello ;;
        tg-full) path=/limits/hello; analytics=on ;;
        tg-full-log) path=/limits/hello; analytics=on; extra=(--access-log) ;;
        tg-xml) path=/xml/catalog.xml ;;
      esac
      TOLLGATE_ADMIN_TOKEN=bench RUST_LOG=warn "${vg[@]}" "$TG" serve --config "$DIR/policy.yaml" \
        --listen "127.0.0.1:$p" --admin-listen "127.0.0.1:$a" --data-dir "$DIR/data-$c" \
        --threads 1 --analytics "$analytics" "${extra[@]}" >"$DIR/$c.log" 2>&1 &
      url=http://127.0.0.1:$p$path ;;
  esac
  local pid=$!
  PIDS+=($pid)
  if [[ $c == tg-* ]]; then
    wait_http "http://127.0.0.1:$a/readyz"
    local key
    key=$(curl -fs -X POST "http://127.0.0.1:$a/subscriptions" -H 'authorization: Bearer bench' \
      -H 'content-type: application/json' -d '{"id":"bench","display_name":"bench","scope":"all"}' |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["primary_key"])')
    [[ $c != tg-pass && $c != tg-xml ]] && hdr=(-H "Ocp-Apim-Subscription-Key: $key")
  fi
  # Tollgate answered readyz above; its key routes refuse a GET without the key.
  [[ $c == tg-* ]] || wait_http "$url"
  "$OHA" --no-tui -n 2000 -c 8 "${hdr[@]}" "$url" >/dev/null # warm-up: pools, caches, counters
  callgrind_control -z "$pid" >/dev/null
  "$OHA" --no-tui --output-format json -n "$REQUESTS" -c 8 "${hdr[@]}" "$url" >"$DIR/$c.json"
  callgrind_control -d "$pid" >/dev/null
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local dump ok
  dump=$OUT/callgrind.$c.1 # the dump of the measured requests (callgrind.$c is the shutdown)
  ok=$(python3 -c "import json,sys; print(json.load(open('$DIR/$c.json'))['statusCodeDistribution'].get('200', 0))")
  callgrind_annotate --auto=no --threshold=99.9 --inclusive=yes "$dump" 2>/dev/null >"$OUT/annotate-inclusive.$c.txt"
  python3 - "$OUT/annotate-inclusive.$c.txt" "$c" "$ok" "$TOP" <<'PY'
import re, sys
inc, case, ok, top = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
total, rows, seen = None, [], set()
for line in open(inc, errors="replace"):
    m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)", line)
    if m:
        fn = m.group(3).strip()
        fn = re.sub(r" \[/.*\]$", "", fn)                  # the object
        fn = re.sub(r"^[^<\s]*?\.(rs|c|S|h):", "", fn)     # the source file
        if fn not in seen:
            seen.add(fn)
            rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), fn))
    t = re.match(r"\s*([\d,]+).*PROGRAM TOTALS", line)
    if t:
        total = int(t.group(1).replace(",", ""))
print(f"== {case}: {ok} requests answered 200, {total / max(ok, 1):,.0f} instructions per request (user space)")
print("-- Tollgate's own code, inclusive: instructions/request, % of total, function")
for ir, pct, fn in [r for r in rows if "tollgate" in r[2]][:top]:
    print(f"{ir / max(ok, 1):>9,.0f} {pct:6.2f}%  {fn[:170]}")
PY
  python3 "$ROOT/bench/callgrind-self.py" "$dump" "$ok" "$TOP"
  python3 "$ROOT/bench/callgrind-self.py" "$dump" "$ok" 8 --callers memcpy
  python3 "$ROOT/bench/callgrind-self.py" "$dump" "$ok" 0 --json "$c" >"$OUT/instr.$c.json"
}
for c in $CASES; do profile "$c" | tee "$OUT/summary.$c.txt"; done
