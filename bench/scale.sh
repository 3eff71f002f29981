#!/usr/bin/env bash
# Scale figures (docs/benchmarks.md, "Peers" → "Scale"):
#
# 1. memory of a real `tollgate serve` against subscriptions: RSS after start, then after
#    creating SUBS subscriptions through the admin API (POST /subscriptions, CONCURRENCY
#    clients), with the time each thousand took (a change touches only its subscription in
#    the key ring, so this should stay flat as the count grows);
# 2. `scale-memory` (bench/scale): live heap of the key ring at 10k / 100k / 1M subscriptions
#    (`KeyRing::replace_all`, the start-up build of the structure the proxy reads), the cost
#    of one subscription change and of one lookup at that size, and the live heap of the
#    rate-limit and quota registries (`tollgate_counters::Counters`) at 10k / 100k / 1M
#    distinct keys.
#
# Compile + swap time against config size is a criterion bench:
#   cargo bench -p tollgate-gateway --bench swap_scale
#
#   bash bench/scale.sh                 # SUBS=10000 CONCURRENCY=4
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${SUBS:-10000}
CONCURRENCY=${CONCURRENCY:-4}
cargo build --release -q -p tollgate -p tollgate-bench-scale
BIN=target/release/tollgate
source bench/lib.sh
PROXY=$(port); ADMIN=$(port); UP=$(port)
cat >"$DIR/policy.yaml" <<YAML
version: 1
apis:
  - id: api
    path: /api
    upstream: { targets: ["http://127.0.0.1:$UP"] }
YAML
TOLLGATE_ADMIN_TOKEN=bench RUST_LOG=warn "$BIN" serve --config "$DIR/policy.yaml" \
  --listen "127.0.0.1:$PROXY" --admin-listen "127.0.0.1:$ADMIN" --data-dir "$DIR/data" \
  --threads 1 >"$DIR/tollgate.log" 2>&1 & PIDS+=($!)
PID=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
echo "tollgate serve: RSS after start $(( $(rss) / 1024 )) MiB"
python3 - "$ADMIN" "$SUBS" "$CONCURRENCY" "$PID" <<'PY'
import http.client, json, sys, threading, time
admin, n, conc, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
host, port = "127.0.0.1", int(admin)
def rss_mib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
lock = threading.Lock()
next_i = [0]
done = [0]
marks = []
t0 = time.time()
def worker():
    c = http.client.HTTPConnection(host, port, timeout=60)
    while True:
        with lock:
            i = next_i[0]
            if i >= n:
                return
            next_i[0] += 1
        body = json.dumps({"id": f"s-{i:07d}", "display_name": f"sub {i}", "scope": "all"})
        c.request("POST", "/subscriptions", body,
                  {"authorization": "Bearer bench", "content-type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 201:
            raise SystemExit(f"POST /subscriptions: {r.status}")
        with lock:
            done[0] += 1
            if done[0] % 1000 == 0:
                marks.append((done[0], time.time()))
threads = [threading.Thread(target=worker) for _ in range(conc)]
for t in threads: t.start()
for t in threads: t.join()
total = time.time() - t0
prev = t0
per_k = []
for count, at in marks:
    per_k.append(f"{(at - prev) * 1000 / 1000:.2f}")
    prev = at
print(f"created {n} subscriptions in {total:.1f} s ({n / total:.0f}/s, {conc} clients); "
      f"ms per creation, by thousand: {' '.join(per_k)}")
time.sleep(1)
print(f"tollgate serve: RSS after {n} subscriptions {rss_mib():.0f} MiB")
PY
echo
# One measurement per process, so that its RSS figures start from a fresh heap.
for what in keyring rate quota; do
  for n in 10000 100000 1000000; do target/release/scale-memory "$what" "$n"; done
done
