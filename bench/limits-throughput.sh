#!/usr/bin/env bash
# Proxy throughput with a rate-limit + quota chain against the same route without it
# (docs/benchmarks.md, "Rate limits and quotas"). Runs the release binary, its demo
# upstream and wrk on this machine (loopback only), alternating the two routes for
# ROUNDS rounds of SECS seconds each, and prints requests/second per round and the median.
#
#   bash bench/limits-throughput.sh            # ROUNDS=3 SECS=8 CONNS=16 THREADS=1
#   REDIS=1 bash bench/limits-throughput.sh    # the same with counters in a local redis-server
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
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
UP=$(port); PROXY=$(port); ADMIN=$(port)

"$BIN" demo-upstream --listen "127.0.0.1:$UP" >"$DIR/upstream.log" 2>&1 & PIDS+=($!)
cat >"$DIR/policy.yaml" <<YAML
version: 1
apis:
  - id: plain
    path: /plain
    upstream: { targets: ["http://127.0.0.1:$UP"] }
  - id: limited
    path: /limited
    upstream: { targets: ["http://127.0.0.1:$UP"] }
    policies:
      inbound:
        - rate-limit: { calls: 1000000000, renewal_period: 1h, remaining_calls_header: X-RateLimit-Remaining }
        - quota: { calls: 1000000000, renewal_period: calendar-month, timezone: Europe/Berlin }
YAML
EXTRA=()
if [ "${REDIS:-0}" = 1 ]; then
  RP=$(port)
  redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no >"$DIR/redis.log" 2>&1 & PIDS+=($!)
  EXTRA=(--redis "redis://127.0.0.1:$RP/")
fi
TOLLGATE_ADMIN_TOKEN=bench RUST_LOG=warn "$BIN" serve --config "$DIR/policy.yaml" \
  --listen "127.0.0.1:$PROXY" --admin-listen "127.0.0.1:$ADMIN" --data-dir "$DIR/data" \
  --threads "$THREADS" "${EXTRA[@]}" >"$DIR/tollgate.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
KEY=$(curl -fs -X POST "http://127.0.0.1:$ADMIN/subscriptions" -H 'authorization: Bearer bench' \
  -H 'content-type: application/json' -d '{"id":"bench","display_name":"bench","scope":"all"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["primary_key"])')
curl -fs -o /dev/null "http://127.0.0.1:$PROXY/limited/x" -H "Ocp-Apim-Subscription-Key: $KEY"

rps() {
  wrk -t1 -c"$CONNS" -d"${SECS}s" -H "Ocp-Apim-Subscription-Key: $KEY" "http://127.0.0.1:$PROXY$1" |
    awk '/Requests\/sec/ {print int($2)}'
}
plain=(); limited=()
for r in $(seq "$ROUNDS"); do
  p=$(rps /plain/x); l=$(rps /limited/x)
  plain+=("$p"); limited+=("$l")
  echo "round $r: no chain $p req/s, rate-limit + quota $l req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mp=$(median "${plain[@]}"); ml=$(median "${limited[@]}")
echo "median: no chain $mp req/s, rate-limit + quota $ml req/s ($(python3 -c "print(f'{(1-$ml/$mp)*100:.1f}')")% fewer)"
