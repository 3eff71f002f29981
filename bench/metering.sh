#!/usr/bin/env bash
# Proxy throughput with usage metering on (the default: one event per request handed to
# the analytics thread, per-minute rollups written to SQLite every second, Prometheus
# families) against metering off (`--analytics off`), and on with the JSON access log too
# (docs/benchmarks.md, "Metering"). Runs the release binary (three gateways on the same
# config and the same demo upstream), and wrk on this machine (loopback only),
# alternating the variants for ROUNDS rounds of SECS seconds each; prints requests/second
# per round, the medians, and the analytics drop counter (must stay 0).
#
#   bash bench/metering.sh            # ROUNDS=5 SECS=8 CONNS=16 THREADS=1
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-8}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -q -p tollgate
BIN=target/release/tollgate
DIR=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
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

declare -A PROXY ADMIN KEY
start() { # name, extra flags...
  local name=$1; shift
  PROXY[$name]=$(port); ADMIN[$name]=$(port)
  TOLLGATE_ADMIN_TOKEN=bench RUST_LOG=warn "$BIN" serve --config "$DIR/policy.yaml" \
    --listen "127.0.0.1:${PROXY[$name]}" --admin-listen "127.0.0.1:${ADMIN[$name]}" \
    --data-dir "$DIR/data-$name" --threads "$THREADS" "$@" >"$DIR/$name.log" 2>&1 & PIDS+=($!)
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

rps() {
  wrk -t1 -c"$CONNS" -d"${SECS}s" -H "Ocp-Apim-Subscription-Key: ${KEY[$1]}" \
    "http://127.0.0.1:${PROXY[$1]}/petstore/pets/42" | awk '/Requests\/sec/ {print int($2)}'
}
off=(); on=(); log=()
for r in $(seq "$ROUNDS"); do
  a=$(rps off); b=$(rps on); c=$(rps log)
  off+=("$a"); on+=("$b"); log+=("$c")
  echo "round $r: metering off $a req/s, on $b req/s, on + access log $c req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${off[@]}"); mn=$(median "${on[@]}"); ml=$(median "${log[@]}")
pct() { python3 -c "print(f'{(1-$1/$2)*100:.1f}')"; }
echo "median: off $mo req/s, on $mn req/s ($(pct "$mn" "$mo")% fewer), on + access log $ml req/s ($(pct "$ml" "$mo")% fewer)"
for name in on log; do
  sleep 1.5
  m=$(curl -fs -H 'authorization: Bearer bench' "http://127.0.0.1:${ADMIN[$name]}/metrics")
  dropped=$(echo "$m" | awk '/^tollgate_analytics_events_dropped_total/ {print $2}')
  total=$(curl -fs -H 'authorization: Bearer bench' \
    "http://127.0.0.1:${ADMIN[$name]}/analytics/requests?group_by=api&from=2000-01-01T00:00:00Z" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["calls_total"])')
  echo "$name: analytics counted $total calls, dropped $dropped events"
done
