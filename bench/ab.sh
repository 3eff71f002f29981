#!/usr/bin/env bash
# Two or more Tollgate builds against each other and the bare Pingora proxy, in one run:
# CPU time per request (utime + stime from /proc/PID/stat over a wrk run, divided by its
# requests) of passthrough, the builds alternating with the bare proxy in every round, and
# per build the median over the rounds of its ratio to the bare proxy and to the first
# build. For a change worth a few percent, where separate runs of bench/run.sh differ by
# as much between themselves.
#
#   bash bench/ab.sh before=/tmp/tollgate-before after=target/release/tollgate
#
# Knobs: ROUNDS=12 SECS=4 CONNS=32 PROXY_CPU=0 LOAD_CPU=1 (pinning as in bench/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-12}
SECS=${SECS:-4}
CONNS=${CONNS:-32}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
[ "$#" -ge 1 ] || { echo "usage: bash bench/ab.sh NAME=TOLLGATE_BINARY ..." >&2; exit 2; }
source bench/lib.sh
need nginx nginx-light
need wrk
cargo build --release -q -p tollgate-bench-bare-proxy

UP=$(port)
write_upstream_conf
taskset -c "$LOAD_CPU" nginx -p "$DIR" -c "$DIR/up.conf" -g 'daemon off;' & PIDS+=($!)
{ echo "version: 1"; echo "apis:"; api_pass; } >"$DIR/policy.yaml"

declare -A PID URL
NAMES=(bare)
p=$(port)
taskset -c "$PROXY_CPU" target/release/bare-proxy "127.0.0.1:$p" "127.0.0.1:$UP" 1 \
  >"$DIR/bare.log" 2>&1 & PIDS+=($!)
PID[bare]=$!; URL[bare]="http://127.0.0.1:$p/pass/hello"
for spec in "$@"; do
  name=${spec%%=*}; bin=${spec#*=}
  [ -x "$bin" ] || { echo "not an executable: $bin" >&2; exit 2; }
  p=$(port); a=$(port)
  TOLLGATE_ADMIN_TOKEN=bench RUST_LOG=warn taskset -c "$PROXY_CPU" "$bin" serve \
    --config "$DIR/policy.yaml" --listen "127.0.0.1:$p" --admin-listen "127.0.0.1:$a" \
    --data-dir "$DIR/data-$name" --threads 1 --analytics off >"$DIR/$name.log" 2>&1 &
  PIDS+=($!)
  PID[$name]=$!; URL[$name]="http://127.0.0.1:$p/pass/hello"
  NAMES+=("$name")
done
for n in "${NAMES[@]}"; do wait_http "${URL[$n]}"; done

RESULTS="$DIR/results.txt"
for r in $(seq "$ROUNDS"); do
  for n in "${NAMES[@]}"; do
    c0=$(cpu_ticks "${PID[$n]}")
    reqs=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${SECS}s" "${URL[$n]}" |
      awk '/requests in/ {print $1}')
    c1=$(cpu_ticks "${PID[$n]}")
    us=$(python3 -c "print(($c1 - $c0) / $TICK * 1e6 / $reqs)")
    printf '%s %s %s %s\n' "$r" "$n" "$reqs" "$us" | tee -a "$RESULTS"
  done
done

python3 - "$RESULTS" "${NAMES[@]:1}" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
names = sys.argv[2:]
by_round = {}
for r, n, _reqs, us in rows:
    by_round.setdefault(r, {})[n] = float(us)
rounds = sorted(by_round, key=int)
print(f"\nCPU µs per request, median of {len(rounds)} rounds; ratios are medians of the rounds' ratios")
print("| build | CPU µs/req | vs bare | vs " + names[0] + " | rounds below " + names[0] + " |")
print("|---|---:|---:|---:|---:|")
print(f"| bare | {statistics.median(by_round[r]['bare'] for r in rounds):.2f} | 1.000× | – | – |")
for n in names:
    cpu = statistics.median(by_round[r][n] for r in rounds)
    vs_bare = statistics.median(by_round[r][n] / by_round[r]["bare"] for r in rounds)
    if n == names[0]:
        print(f"| {n} | {cpu:.2f} | {vs_bare:.3f}× | 1.000× | – |")
        continue
    ratios = [by_round[r][n] / by_round[r][names[0]] for r in rounds]
    below = sum(x < 1 for x in ratios)
    print(f"| {n} | {cpu:.2f} | {vs_bare:.3f}× | {statistics.median(ratios):.3f}× | {below} of {len(ratios)} |")
PY
