#!/usr/bin/env bash
# Proxy throughput with a rate-limit + quota chain against the same route without it
# (docs/benchmarks.md, "Rate limits and quotas"). Runs the release binary, its demo
# upstream and wrk on this machine (loopback only), alternating the two routes for
# ROUNDS rounds of SECS seconds each, and prints per round and as medians the requests per
# second and the gateway's CPU time per request (with REDIS=1, also redis-server's).
#
#   bash bench/limits-throughput.sh            # ROUNDS=3 SECS=8 CONNS=16 THREADS=1
#   REDIS=1 bash bench/limits-throughput.sh    # the same with counters in a local redis-server
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}
cargo build --release -q -p tollgate
BIN=target/release/tollgate
source bench/lib.sh
need wrk
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

GW=${PIDS[-1]}
RS=${RP:+${PIDS[1]}}
# One wrk run on $1: prints "REQ_PER_S CPU_US_PER_REQUEST REDIS_CPU_US_PER_REQUEST" (the
# gateway's user + system CPU time during the run divided by the requests served: robust to
# other load on the machine, unlike requests/second; the same for redis-server, 0 without).
run() {
  local before after rbefore=0 rafter=0 out reqs
  before=$(cpu_ticks "$GW"); [ -n "$RS" ] && rbefore=$(cpu_ticks "$RS")
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" -H "Ocp-Apim-Subscription-Key: $KEY" "http://127.0.0.1:$PROXY$1")
  after=$(cpu_ticks "$GW"); [ -n "$RS" ] && rafter=$(cpu_ticks "$RS")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$(echo "$out" | awk '/Requests\/sec/ {print int($2)}') $(python3 -c "print(round(($after - $before) / $TICK * 1e6 / $reqs, 1), round(($rafter - $rbefore) / $TICK * 1e6 / $reqs, 1))")"
}
plain=(); limited=(); plain_cpu=(); limited_cpu=(); limited_rcpu=()
for r in $(seq "$ROUNDS"); do
  read -r p pc _ < <(run /plain/x); read -r l lc lr < <(run /limited/x)
  plain+=("$p"); limited+=("$l"); plain_cpu+=("$pc"); limited_cpu+=("$lc"); limited_rcpu+=("$lr")
  echo "round $r: no chain $p req/s ($pc us CPU/req), rate-limit + quota $l req/s ($lc us CPU/req${RS:+, redis-server $lr us CPU/req})"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mp=$(median "${plain[@]}"); ml=$(median "${limited[@]}")
mpc=$(median "${plain_cpu[@]}"); mlc=$(median "${limited_cpu[@]}")
echo "median: no chain $mp req/s, rate-limit + quota $ml req/s ($(python3 -c "print(f'{(1-$ml/$mp)*100:.1f}')")% fewer)"
echo "median gateway CPU per request: no chain $mpc us, rate-limit + quota $mlc us ($(python3 -c "print(f'{($mlc/$mpc-1)*100:+.1f}')")%)"
if [ -n "$RS" ]; then
  echo "median redis-server CPU per request, rate-limit + quota: $(median "${limited_rcpu[@]}") us"
fi
