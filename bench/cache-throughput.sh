#!/usr/bin/env bash
# Proxy throughput of response cache hits against plain passthrough of the same request
# (docs/benchmarks.md, "Response cache"). Runs the release binary, its demo upstream and
# wrk on this machine (loopback only), alternating the two routes for ROUNDS rounds of
# SECS seconds each, and prints requests/second per round, the medians and their ratio.
# Target: hits at least 1.5x passthrough.
#
#   bash bench/cache-throughput.sh             # ROUNDS=3 SECS=8 CONNS=16 THREADS=1
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
# Both routes have the same operation shape; only `cached` looks up and stores.
cat >"$DIR/policy.yaml" <<YAML
version: 1
apis:
  - id: plain
    path: /plain
    subscription_required: false
    upstream: { targets: ["http://127.0.0.1:$UP"] }
  - id: cached
    path: /cached
    subscription_required: false
    upstream: { targets: ["http://127.0.0.1:$UP"] }
    policies:
      inbound:
        - cache-lookup: { vary_by_query_parameter: [lang] }
      outbound:
        - cache-store: { duration: 1h }
YAML
TOLLGATE_ADMIN_TOKEN=bench RUST_LOG=warn "$BIN" serve --config "$DIR/policy.yaml" \
  --listen "127.0.0.1:$PROXY" --admin-listen "127.0.0.1:$ADMIN" --data-dir "$DIR/data" \
  --threads "$THREADS" >"$DIR/tollgate.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
# Fill the entry, and check that the second call is a hit (it has an Age header).
curl -fs -o /dev/null "http://127.0.0.1:$PROXY/cached/pets/1?lang=de"
curl -fsi "http://127.0.0.1:$PROXY/cached/pets/1?lang=de" | grep -qi '^age:' ||
  { echo "the cached route does not hit" >&2; exit 1; }

rps() {
  wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$PROXY$1" |
    awk '/Requests\/sec/ {print int($2)}'
}
plain=(); cached=()
for r in $(seq "$ROUNDS"); do
  p=$(rps "/plain/pets/1?lang=de"); c=$(rps "/cached/pets/1?lang=de")
  plain+=("$p"); cached+=("$c")
  echo "round $r: passthrough $p req/s, cache hits $c req/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mp=$(median "${plain[@]}"); mc=$(median "${cached[@]}")
echo "median: passthrough $mp req/s, cache hits $mc req/s ($(python3 -c "print(f'{$mc/$mp:.2f}')")x)"
curl -fs -H 'authorization: Bearer bench' "http://127.0.0.1:$ADMIN/cache/stats"; echo
