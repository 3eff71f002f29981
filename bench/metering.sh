#!/usr/bin/env bash
# Proxy throughput with usage metering on (the default: one event per request handed to
# the analytics thread, per-minute rollups written to SQLite every second, Prometheus
# families) against metering off (`--analytics off`), and on with the JSON access log too
# (docs/benchmarks.md, "Metering"). Runs the release binary (three gateways on the same
# config and the same demo upstream), and wrk on this machine (loopback only),
# alternating the variants for ROUNDS rounds of SECS seconds each; prints per round the
# requests/second and the gateway process's CPU time per request (user + system, all its
# threads: the analytics thread included), then the medians, and what analytics counted and
# dropped (drops must stay 0). On a shared 2-core machine throughput is noisy (wrk, the
# upstream and the gateway compete for the cores); CPU per request is the steadier figure.
#
#   bash bench/metering.sh            # ROUNDS=5 SECS=8 CONNS=16 THREADS=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-8}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}
cargo build --release -q -p tollgate
BIN=target/release/tollgate
source bench/lib.sh
need wrk
UP=$(port)

"$BIN" demo-upstream --listen "127.0.0.1:$UP" >"$DIR/upstream.log" 2>&1 & PIDS+=($!)
cat >"$DIR/policy.yaml" <<YAML
version: 1
products:
  - id: gold
    apis: [petstore]
apis:
  - id: petstore
    path: /petstore
    upstream: { targets: ["http://127.0.0.1:$UP"] }
    operations:
      - { id: get-pet, method: GET, path: "/pets/{id}" }
YAML

declare -A PROXY ADMIN KEY PID
start() { # name, extra flags...
  local name=$1; shift
  PROXY[$name]=$(port); ADMIN[$name]=$(port)
  TOLLGATE_ADMIN_TOKEN=bench RUST_LOG=warn "$BIN" serve --config "$DIR/policy.yaml" \
    --listen "127.0.0.1:${PROXY[$name]}" --admin-listen "127.0.0.1:${ADMIN[$name]}" \
    --data-dir "$DIR/data-$name" --threads "$THREADS" "$@" >"$DIR/$name.log" 2>&1 & PIDS+=($!)
  PID[$name]=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:${ADMIN[$name]}/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  KEY[$name]=$(curl -fs -X POST "http://127.0.0.1:${ADMIN[$name]}/subscriptions" \
    -H 'authorization: Bearer bench' -H 'content-type: application/json' \
    -d '{"id":"bench","display_name":"bench","scope":"product:gold"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["primary_key"])')
  curl -fs -o /dev/null "http://127.0.0.1:${PROXY[$name]}/petstore/pets/1" \
    -H "Ocp-Apim-Subscription-Key: ${KEY[$name]}"
}
start off --analytics off
start on
start log --access-log

# Prints "req/s cpu-µs-per-request".
run() {
  local before after out reqs rate
  before=$(cpu_ticks "${PID[$1]}")
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" -H "Ocp-Apim-Subscription-Key: ${KEY[$1]}" \
    "http://127.0.0.1:${PROXY[$1]}/petstore/pets/42")
  after=$(cpu_ticks "${PID[$1]}")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rate=$(echo "$out" | awk '/Requests\/sec/ {print int($2)}')
  python3 -c "print($rate, round(($after - $before) / $TICK * 1e6 / $reqs, 2))"
}
declare -A RPS USPR
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for v in off on log; do
    read -r rate us < <(run "$v")
    RPS[$v]+="$rate "; USPR[$v]+="$us "
    line+=" $v $rate req/s $us µs CPU/req;"
  done
  echo "$line"
done
median() { printf '%s\n' $@ | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
more() { python3 -c "print(f'{($1/$2-1)*100:+.1f}')"; }
for v in off on log; do
  r=$(median ${RPS[$v]}); u=$(median ${USPR[$v]})
  echo "median $v: $r req/s ($(more "$r" "$(median ${RPS[off]})")% vs off), $u µs CPU/req ($(more "$u" "$(median ${USPR[off]})")% vs off)"
done
for name in on log; do
  sleep 1.5
  m=$(curl -fs -H 'authorization: Bearer bench' "http://127.0.0.1:${ADMIN[$name]}/metrics")
  dropped=$(echo "$m" | awk '/^tollgate_analytics_events_dropped_total/ {print $2}')
  total=$(curl -fs -H 'authorization: Bearer bench' \
    "http://127.0.0.1:${ADMIN[$name]}/analytics/requests?group_by=api&from=2000-01-01T00:00:00Z" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["calls_total"])')
  echo "$name: analytics counted $total calls, dropped $dropped events"
done
