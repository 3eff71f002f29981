#!/usr/bin/env bash
# Tollgate against the engine's limit (a bare Pingora proxy) and against peers (nginx as a
# reverse proxy, nginx + Lua as an API gateway), all in one run (docs/benchmarks.md,
# "Peers"). One command:
#
#   bash bench/run.sh
#
# It installs what is missing (nginx, libnginx-mod-http-lua, wrk from Debian; oha from
# crates.io), builds the release `tollgate` and `bench/bare-proxy` once, waits until the
# machine is quiet (load average below WAIT_LOAD, at most WAIT_MAX seconds), starts every
# server on loopback and measures each case, alternating the cases over ROUNDS rounds:
#
# - throughput: wrk, 1 thread, CONNS connections, SECS seconds;
# - latency: oha at a fixed RATE (requests/s, LAT_CONNS connections, coordinated omission
#   corrected), LAT_SECS seconds: p50, p99, p99.9;
# - CPU per request of the proxy process: utime + stime from /proc/PID/stat (every thread,
#   and for nginx master + workers) before and after the wrk run, over the requests done;
# - instructions per request of the proxy process (user + kernel; `perf stat -p` during a
#   separate wrk run of INSTR_SECS seconds, so the counters cost nothing in the CPU
#   figure): the figure that other load on a shared machine barely moves.
#
# Then PAIRS paired runs (PAIR_SECS of wrk and of oha each) of the bare proxy, Tollgate
# passthrough and the full chain, back to back: the targets on CPU and p99 are decided on
# the pairs' ratios and differences (median and its 95% confidence interval), which other
# load moving the machine's speed from one run to the next does not bias. And CORUNS
# co-runs (PAIR_SECS of wrk) of the bare proxy together with bare-hdr, passthrough and the
# full chain, at once on the proxies' core: a steadier ratio under a different condition,
# reported beside the targets.
#
# Pinning (2 cores): every proxy under test (and the "direct" upstream copy) on core
# PROXY_CPU with one worker (thread or process); the load generators and the upstream
# nginx on core LOAD_CPU. bench/peers-report.py turns the rounds into a markdown table
# (best round and median; ratios against the bare Pingora proxy and against nginx, on the
# best round, since other load on the shared machine only ever adds), checks the targets,
# prints it and writes it between the markers of the "Peers" section of
# docs/benchmarks.md (WRITE_DOCS=0 to leave the file alone). PROFILE=1 (or PROFILE=auto,
# the default, when a target is missed) records `perf` on PROFILE_CASES and writes the top
# symbols to OUT/profile-*.txt and the user cycles by group to OUT/profile-groups.txt.
# CALLGRIND=1 (or CALLGRIND=auto, the default, when perf counts no hardware events) also
# counts the user-space instructions per request of the cases bench/profile.sh knows (bare,
# bare-hdr and the key/limit Tollgate cases) under callgrind, CALLGRIND_REQUESTS each: a
# figure no other load moves, which the report gives beside the CPU targets (user space
# only, so not what decides them).
#
# Knobs: ROUNDS=5 SECS=5 CONNS=32 RATE=5000 LAT_CONNS=16 LAT_SECS=5 INSTR_SECS=3 PAIRS=30
# PAIR_SECS=2 CORUNS=10 WAIT_LOAD=1.0 WAIT_MAX=600 PROXY_CPU=0 LOAD_CPU=1
# BUILD_PROFILE=release (the cargo profile both Tollgate and the bare proxy are built with;
# `production` is the fat-LTO one)
# OUT=target/bench-peers CASES="direct bare ..." PROFILE_CASES="bare tg-pass tg-full";
# case names: $ALL_CASES below
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
CONNS=${CONNS:-32}
RATE=${RATE:-5000}
LAT_CONNS=${LAT_CONNS:-16}
LAT_SECS=${LAT_SECS:-5}
PAIRS=${PAIRS:-30}
PAIR_SECS=${PAIR_SECS:-2}
CORUNS=${CORUNS:-10}
INSTR_SECS=${INSTR_SECS:-3}
WAIT_LOAD=${WAIT_LOAD:-1.0}
WAIT_MAX=${WAIT_MAX:-600}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PROFILE=${PROFILE:-auto}
PROFILE_CASES=${PROFILE_CASES:-bare tg-pass tg-full}
CALLGRIND=${CALLGRIND:-auto}
CALLGRIND_REQUESTS=${CALLGRIND_REQUESTS:-10000}
WRITE_DOCS=${WRITE_DOCS:-1}
OUT=${OUT:-$ROOT/target/bench-peers}
ALL_CASES="direct bare bare-hdr nginx nginx-lua tg-pass tg-pass-analytics tg-key tg-limits tg-full tg-jwt tg-cache tg-xml"
CASES=${CASES:-$ALL_CASES}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- tools
source bench/lib.sh
need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need_apt+=(libnginx-mod-http-lua)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v taskset >/dev/null 2>&1 || need_apt+=(util-linux)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing ${need_apt[*]}"
  apt_install "${need_apt[@]}"
fi
# Debian's package may start a system nginx; ours are separate instances on free ports.
need_oha
PERF=$(command -v perf || true)
# A VM without a virtual PMU has perf but no hardware counters: instructions and cycles are
# then not measured (CPU time from /proc still is), and the report says so.
PERF_HW=$PERF
if [ -n "$PERF" ] && ! "$PERF" stat -x, -e instructions:u -- true 2>&1 >/dev/null |
    grep -q '^[0-9]'; then
  log "perf counts no hardware events on this machine (no PMU): no instructions or cycles"
  PERF_HW=""
fi

BUILD_PROFILE=${BUILD_PROFILE:-release}
log "building tollgate and bench/bare-proxy (cargo profile $BUILD_PROFILE)"
# The commit measured: the tree as it is built (edits made while the run goes on are not).
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- 2>/dev/null || COMMIT="$COMMIT (with uncommitted changes)"
export BUILD_PROFILE # bench/profile.sh (callgrind) builds and runs the same profile
cargo build --profile "$BUILD_PROFILE" -q -p tollgate -p tollgate-bench-bare-proxy
TG=${TG:-$ROOT/target/$BUILD_PROFILE/tollgate} # TG=/path/to/another/build measures that one
BARE=$ROOT/target/$BUILD_PROFILE/bare-proxy

mkdir -p "$OUT"
trap 'exit 130' INT TERM

on_load() { taskset -c "$LOAD_CPU" "$@"; }

# ---------------------------------------------------------------- upstream files
mkdir -p "$DIR/static" "$DIR/logs"
# A 10 KB product catalog (attributes, repeated elements, entities, non-ASCII text).
python3 bench/catalog.py "$DIR/static/catalog.xml"
XML_BYTES=$(stat -c %s "$DIR/static/catalog.xml")

nginx_common() { # name
  cat <<EOF
user root;
worker_processes 1;
pid $DIR/$1.pid;
error_log $DIR/logs/$1.err warn;
events { worker_connections 4096; multi_accept on; }
EOF
}
nginx_http_common() { # name
  cat <<EOF
  access_log off;
  client_body_temp_path $DIR/$1-body;
  proxy_temp_path $DIR/$1-proxy;
  fastcgi_temp_path $DIR/$1-fcgi;
  uwsgi_temp_path $DIR/$1-uwsgi;
  scgi_temp_path $DIR/$1-scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
EOF
}
start_nginx() { # name cpu conf-file
  local name=$1 cpu=$2 conf=$3
  # A simple command in the background: $! is nginx's master itself (taskset execs it).
  taskset -c "$cpu" nginx -p "$DIR" -c "$conf" -g 'daemon off;' >"$DIR/logs/$name.out" 2>&1 &
  PIDS+=($!)
  NGX_PID[$name]=$!
}
declare -A NGX_PID

UP=$(port); CEIL=$(port); NGX=$(port); LUA=$(port); BAREP=$(port); BAREH=$(port)
upstream_conf() { # name port
  nginx_common "$1"
  cat <<EOF
http {
$(nginx_http_common "$1")
  server {
    listen 127.0.0.1:$2 reuseport backlog=4096;
    location /static/ { alias $DIR/static/; types { application/xml xml; } }
    location / { default_type text/plain; return 200 "hello, world\n"; }
  }
}
EOF
}
upstream_conf upstream "$UP" >"$DIR/upstream.conf"
upstream_conf direct "$CEIL" >"$DIR/direct.conf"
start_nginx upstream "$LOAD_CPU" "$DIR/upstream.conf"
start_nginx direct "$PROXY_CPU" "$DIR/direct.conf"

{
  nginx_common nginx
  cat <<EOF
http {
$(nginx_http_common nginx)
  upstream up { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$NGX reuseport backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$DIR/nginx.conf"
start_nginx nginx "$PROXY_CPU" "$DIR/nginx.conf"

# nginx + Lua as an API gateway, the core of Kong's key-auth and rate-limiting (local
# policy): the key looked up in a shared dict, then two shared-dict counters per consumer
# (a per-minute rate limit and a per-month quota, like Tollgate's rate-limit + quota), the
# key header removed before the upstream call.
LUA_KEY=bench-lua-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
{
  echo "load_module /usr/lib/nginx/modules/ndk_http_module.so;"
  echo "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"
  nginx_common lua
  cat <<EOF
http {
$(nginx_http_common lua)
  lua_shared_dict keys 16m;
  lua_shared_dict counters 16m;
  init_by_lua_block {
    ngx.shared.keys:set("$LUA_KEY", "bench")
  }
  upstream up { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$LUA reuseport backlog=4096;
    location / {
      access_by_lua_block {
        local key = ngx.var.http_apikey
        if not key then return ngx.exit(401) end
        local consumer = ngx.shared.keys:get(key)
        if not consumer then return ngx.exit(401) end
        local now = ngx.time()
        local counters = ngx.shared.counters
        local minute = counters:incr(consumer .. ":m:" .. (now - now % 60), 1, 0, 61)
        if minute and minute > 1000000000 then return ngx.exit(429) end
        local month = counters:incr(consumer .. ":M:" .. os.date("!%Y%m", now), 1, 0, 2678400)
        if month and month > 1000000000 then return ngx.exit(403) end
        ngx.req.clear_header("apikey")
      }
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$DIR/lua.conf"
start_nginx nginx-lua "$PROXY_CPU" "$DIR/lua.conf"

taskset -c "$PROXY_CPU" "$BARE" "127.0.0.1:$BAREP" "127.0.0.1:$UP" 1 >"$DIR/logs/bare.log" 2>&1 &
PIDS+=($!); BARE_PID=$!
# The same engine making the contract's header edits (see bench/bare-proxy/src/main.rs).
taskset -c "$PROXY_CPU" "$BARE" "127.0.0.1:$BAREH" "127.0.0.1:$UP" 1 --contract-headers \
  >"$DIR/logs/bare-hdr.log" 2>&1 &
PIDS+=($!); BAREH_PID=$!

# ---------------------------------------------------------------- Tollgate
# An RS256 key pair and a token signed with it (the policy holds the public key).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DIR/jwt.key" 2>/dev/null
openssl pkey -in "$DIR/jwt.key" -pubout -out "$DIR/jwt.pub"
JWT=$(python3 - "$DIR/jwt.key" <<'PY'
import base64, json, subprocess, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
head = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench"}).encode())
claims = {"iss": "https://issuer.bench", "aud": "api://bench", "sub": "user-42",
          "scp": "orders.read", "iat": now, "exp": now + 30 * 86400}
signing_input = head + "." + b64(json.dumps(claims).encode())
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", sys.argv[1]],
                     input=signing_input.encode(), capture_output=True, check=True).stdout
print(signing_input + "." + b64(sig))
PY
)
PEM_INDENTED=$(sed 's/^/                  /' "$DIR/jwt.pub")

api_key() { cat <<EOF
  - id: key
    path: /key
    upstream: { targets: ["http://127.0.0.1:$UP"] }
EOF
}
api_limits() { cat <<EOF
  - id: limits
    path: /limits
    upstream: { targets: ["http://127.0.0.1:$UP"] }
    policies:
      inbound:
        - rate-limit: { calls: 1000000000, renewal_period: 1m }
        - quota: { calls: 1000000000, renewal_period: calendar-month }
EOF
}
api_jwt() { cat <<EOF
  - id: jwt
    path: /jwt
    subscription_required: false
    upstream: { targets: ["http://127.0.0.1:$UP"] }
    policies:
      inbound:
        - validate-jwt:
            keys:
              - alg: RS256
                kid: bench
                pem: |
$PEM_INDENTED
            issuers: [ "https://issuer.bench" ]
            audiences: [ "api://bench" ]
            required_claims: { scp: [ orders.read ] }
EOF
}
api_cache() { cat <<EOF
  - id: cache
    path: /cache
    subscription_required: false
    upstream: { targets: ["http://127.0.0.1:$UP"] }
    policies:
      inbound:
        - cache-lookup: { vary_by_query_parameter: [] }
      outbound:
        - cache-store: { duration: 1h }
EOF
}
# Each optional API is validated alone first: a policy this build lacks skips its cases.
declare -A SKIP
{ echo "version: 1"; echo "apis:"; api_pass; api_key; } >"$DIR/policy.yaml"
"$TG" validate "$DIR/policy.yaml" >/dev/null || { log "the base policy file is invalid"; exit 1; }
for part in limits jwt cache xml; do
  { echo "version: 1"; echo "apis:"; "api_$part"; } >"$DIR/check-$part.yaml"
  if msg=$("$TG" validate "$DIR/check-$part.yaml" 2>&1); then
    "api_$part" >>"$DIR/policy.yaml"
  else
    reason=$(echo "$msg" | grep -m1 -i 'not available' || echo "$msg" | sed -n 2p)
    reason=$(echo "$reason" | sed 's/^ *//')
    SKIP[$part]=$reason
    log "skipping the $part cases: $reason"
  fi
done
"$TG" validate "$DIR/policy.yaml" >/dev/null

declare -A TG_PROXY TG_ADMIN TG_PID TG_KEY
start_tollgate() { # name, extra flags...
  local name=$1; shift
  TG_PROXY[$name]=$(port); TG_ADMIN[$name]=$(port)
  TOLLGATE_ADMIN_TOKEN=bench RUST_LOG=warn taskset -c "$PROXY_CPU" "$TG" serve --config "$DIR/policy.yaml" \
    --listen "127.0.0.1:${TG_PROXY[$name]}" --admin-listen "127.0.0.1:${TG_ADMIN[$name]}" \
    --data-dir "$DIR/data-$name" --threads 1 "$@" >"$DIR/logs/tollgate-$name.log" 2>&1 &
  PIDS+=($!); TG_PID[$name]=$!
  wait_http "http://127.0.0.1:${TG_ADMIN[$name]}/readyz"
  TG_KEY[$name]=$(curl -fs -X POST "http://127.0.0.1:${TG_ADMIN[$name]}/subscriptions" \
    -H 'authorization: Bearer bench' -H 'content-type: application/json' \
    -d '{"id":"bench","display_name":"bench","scope":"all"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["primary_key"])')
}
start_tollgate off --analytics off
start_tollgate on --analytics on
ANALYTICS_API=no
curl -fs -o /dev/null -H 'authorization: Bearer bench' \
  "http://127.0.0.1:${TG_ADMIN[on]}/analytics/requests?group_by=api" && ANALYTICS_API=yes

wait_http "http://127.0.0.1:$UP/"
wait_http "http://127.0.0.1:$CEIL/"
wait_http "http://127.0.0.1:$NGX/"
wait_http "http://127.0.0.1:$BAREP/"
wait_http "http://127.0.0.1:$BAREH/"

# ---------------------------------------------------------------- cases
# case -> "pid|url|header|what"
declare -A CASE_PID CASE_URL CASE_HDR CASE_WHAT
def() { CASE_PID[$1]=$2; CASE_URL[$1]=$3; CASE_HDR[$1]=$4; CASE_WHAT[$1]=$5; }
def direct "${NGX_PID[direct]}" "http://127.0.0.1:$CEIL/pass/hello" "" \
  "direct to the upstream (nginx \`return 200\`, the ceiling)"
def bare "$BARE_PID" "http://127.0.0.1:$BAREP/pass/hello" "" \
  "bare Pingora proxy (engine's limit)"
def bare-hdr "$BAREH_PID" "http://127.0.0.1:$BAREH/pass/hello" "" \
  "bare Pingora proxy + the contract's header edits"
def nginx "${NGX_PID[nginx]}" "http://127.0.0.1:$NGX/pass/hello" "" \
  "nginx reverse proxy"
def nginx-lua "${NGX_PID[nginx-lua]}" "http://127.0.0.1:$LUA/pass/hello" "apikey: $LUA_KEY" \
  "nginx + Lua gateway (key lookup + 2 shared-dict counters)"
def tg-pass "${TG_PID[off]}" "http://127.0.0.1:${TG_PROXY[off]}/pass/hello" "" \
  "Tollgate passthrough"
def tg-pass-analytics "${TG_PID[on]}" "http://127.0.0.1:${TG_PROXY[on]}/pass/hello" "" \
  "Tollgate passthrough + analytics"
def tg-key "${TG_PID[off]}" "http://127.0.0.1:${TG_PROXY[off]}/key/hello" \
  "Ocp-Apim-Subscription-Key: ${TG_KEY[off]}" "Tollgate key auth"
def tg-limits "${TG_PID[off]}" "http://127.0.0.1:${TG_PROXY[off]}/limits/hello" \
  "Ocp-Apim-Subscription-Key: ${TG_KEY[off]}" "Tollgate key + rate-limit + quota"
def tg-full "${TG_PID[on]}" "http://127.0.0.1:${TG_PROXY[on]}/limits/hello" \
  "Ocp-Apim-Subscription-Key: ${TG_KEY[on]}" "Tollgate full chain: key + rate-limit + quota + analytics"
def tg-jwt "${TG_PID[off]}" "http://127.0.0.1:${TG_PROXY[off]}/jwt/hello" \
  "Authorization: Bearer $JWT" "Tollgate validate-jwt (RS256, static key)"
def tg-cache "${TG_PID[off]}" "http://127.0.0.1:${TG_PROXY[off]}/cache/hello" "" \
  "Tollgate cache hit (cache-lookup + cache-store)"
def tg-xml "${TG_PID[off]}" "http://127.0.0.1:${TG_PROXY[off]}/xml/catalog.xml" "" \
  "Tollgate xml-to-json, $XML_BYTES-byte XML answer"
skip_reason() {
  case $1 in
    tg-limits|tg-full) echo "${SKIP[limits]:-}" ;;
    tg-jwt) echo "${SKIP[jwt]:-}" ;;
    tg-cache) echo "${SKIP[cache]:-}" ;;
    tg-xml) echo "${SKIP[xml]:-}" ;;
    *) echo "" ;;
  esac
}
RUN=()
for c in $CASES; do
  [ -n "${CASE_URL[$c]:-}" ] || { log "unknown case $c"; exit 1; }
  if [ -z "$(skip_reason "$c")" ]; then RUN+=("$c"); fi
done

# Every case answers 200 (and the checks that matter: a key is required, JWT refused
# without a token, the cache hits, the XML becomes JSON) before anything is measured.
check() { # case expected-status [header-override]
  local c=$1 want=$2 h=${3-${CASE_HDR[$1]}} got args=()
  [ -n "$h" ] && args=(-H "$h")
  got=$(curl -s -o "$DIR/check.body" -D "$DIR/check.head" -w '%{http_code}' "${args[@]}" "${CASE_URL[$c]}")
  [ "$got" = "$want" ] || { log "$c: status $got, expected $want"; cat "$DIR/check.body" >&2; exit 1; }
}
for c in "${RUN[@]}"; do check "$c" 200; done
for c in nginx-lua tg-key tg-limits tg-full tg-jwt; do
  [[ " ${RUN[*]} " == *" $c "* ]] && check "$c" 401 "X-None: 1"
done
if [[ " ${RUN[*]} " == *" tg-cache "* ]]; then
  check tg-cache 200; grep -qi '^age:' "$DIR/check.head" || { log "tg-cache: no hit"; exit 1; }
fi
if [[ " ${RUN[*]} " == *" tg-xml "* ]]; then
  check tg-xml 200; grep -qi '^content-type: application/json' "$DIR/check.head" ||
    { log "tg-xml: not converted"; cat "$DIR/check.head" >&2; exit 1; }
  XML_JSON_BYTES=$(stat -c %s "$DIR/check.body")
fi

# ---------------------------------------------------------------- measuring
wrk_run() { # case secs -> "requests rps errors"
  local c=$1 s=$2 args=() out
  [ -n "${CASE_HDR[$c]}" ] && args=(-H "${CASE_HDR[$c]}")
  out=$(on_load wrk -t1 -c"$CONNS" -d"${s}s" "${args[@]}" "${CASE_URL[$c]}")
  echo "$out" | python3 -c '
import re, sys
t = sys.stdin.read()
req = int(re.search(r"(\d+) requests in", t).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print(req, rps, (int(bad.group(1)) if bad else 0) + (sum(map(int, err.groups())) if err else 0))'
}
oha_run() { # case secs -> "p50_ms p99_ms p999_ms requests errors"
  local c=$1 s=$2 args=()
  [ -n "${CASE_HDR[$c]}" ] && args=(-H "${CASE_HDR[$c]}")
  on_load "$OHA" --no-tui --output-format json --worker-threads 1 -z "${s}s" \
    -q "$RATE" -c "$LAT_CONNS" --latency-correction --wait-ongoing-requests-after-deadline "${args[@]}" "${CASE_URL[$c]}" |
    python3 -c '
import json, sys
r = json.load(sys.stdin)
p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
ok = codes.get("200", 0)
bad = sum(v for k, v in codes.items() if k != "200") + sum(r.get("errorDistribution", {}).values())
print(p["p50"] * 1e3, p["p99"] * 1e3, p["p99.9"] * 1e3, ok + bad, bad)'
}
instr_run() { # case -> JSON fields from perf stat over its own wrk run: instructions and
  # cycles (user, kernel), context switches, and the requests done
  local c=$1 sp req rps err
  if [ -z "$PERF_HW" ] || [ "$INSTR_SECS" = 0 ]; then echo '"instr_requests":0'; return; fi
  "$PERF" stat -e instructions:u,instructions:k,cycles:u,cycles:k,context-switches -x, \
    -o "$DIR/perf-stat.csv" -p "$(descendants "${CASE_PID[$c]}" | paste -sd,)" >/dev/null 2>&1 &
  sp=$!
  sleep 0.3
  read -r req rps err < <(wrk_run "$c" "$INSTR_SECS")
  kill -INT "$sp" 2>/dev/null || true
  wait "$sp" 2>/dev/null || true
  python3 - "$DIR/perf-stat.csv" "$req" <<'PY2'
import sys
v = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and not line.startswith("#"):
        try:
            v[f[2]] = float(f[0])
        except ValueError:
            v[f[2]] = 0.0
names = {"instructions:u": "instr_user", "instructions:k": "instr_kernel", "cycles:u": "cycles_user",
         "cycles:k": "cycles_kernel", "context-switches": "context_switches"}
print(",".join(f'"{k}":{v.get(e, 0)}' for e, k in names.items()) + f',"instr_requests":{sys.argv[2]}')
PY2
}
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
measure() { # case round [throughput-secs latency-secs results-file instructions(0|1)]
  local c=$1 r=$2 secs=${3:-$SECS} lsecs=${4:-$LAT_SECS} file=${5:-$RESULTS} instr=${6:-1}
  local pid=${CASE_PID[$1]} t0 t1 req rps err us p50 p99 p999 lreq lerr lus
  t0=$(cpu_ticks "$pid")
  read -r req rps err < <(wrk_run "$c" "$secs")
  t1=$(cpu_ticks "$pid")
  us=$(python3 -c "print(($t1 - $t0) / $TICK * 1e6 / max($req, 1))")
  t0=$(cpu_ticks "$pid")
  read -r p50 p99 p999 lreq lerr < <(oha_run "$c" "$lsecs")
  t1=$(cpu_ticks "$pid")
  lus=$(python3 -c "print(($t1 - $t0) / $TICK * 1e6 / max($lreq, 1))")
  local stat='"instr_requests":0'
  [ "$instr" = 1 ] && stat=$(instr_run "$c")
  printf '{"case":"%s","round":%s,"rps":%s,"requests":%s,"errors":%s,"cpu_us":%s,"p50":%s,"p99":%s,"p999":%s,"lat_requests":%s,"lat_errors":%s,"lat_cpu_us":%s,%s}\n' \
    "$c" "$r" "$rps" "$req" "$err" "$us" "$p50" "$p99" "$p999" "$lreq" "$lerr" "$lus" "$stat" >>"$file"
  local ki
  ki=$(echo "{$stat}" | python3 -c 'import json, sys
r = json.load(sys.stdin)
n = r["instr_requests"]
k = (r.get("instr_user", 0) + r.get("instr_kernel", 0)) / max(n, 1) / 1e3
print(f"{k:.1f}k" if n else "n/a")')
  log "$([ "$file" = "$RESULTS" ] && echo round || echo pair) $r $c: $(printf '%.0f' "$rps") req/s, $(printf '%.1f' "$us") µs CPU/req, $ki instructions/req; at $RATE/s p50 $(printf '%.3f' "$p50") p99 $(printf '%.3f' "$p99") p99.9 $(printf '%.3f' "$p999") ms, $(printf '%.1f' "$lus") µs CPU/req; errors $err/$lerr"
}

load1() { awk '{print $1}' /proc/loadavg; }
waited=0
while python3 -c "import sys; sys.exit(0 if $(load1) >= $WAIT_LOAD else 1)" && [ "$waited" -lt "$WAIT_MAX" ]; do
  [ $((waited % 60)) = 0 ] && log "load average $(load1), waiting for < $WAIT_LOAD (at most ${WAIT_MAX}s)"
  sleep 10; waited=$((waited + 10))
done
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before the run: $LOAD_BEFORE (waited ${waited}s)"

log "warm-up"
for c in "${RUN[@]}"; do
  args=()
  [ -n "${CASE_HDR[$c]}" ] && args=(-H "${CASE_HDR[$c]}")
  on_load wrk -t1 -c"$CONNS" -d1s "${args[@]}" "${CASE_URL[$c]}" >/dev/null
done
for r in $(seq "$ROUNDS"); do
  for c in "${RUN[@]}"; do measure "$c" "$r"; done
done

# Paired runs for the CPU and p99 targets: CPU time per request on a shared VM moves by
# tens of percent from one few-second run to the next, independently of the case. Runs of
# the bare proxy and the cases under target taken back to back (order rotating) give one
# ratio (and one p99 difference) per pair; bench/peers-report.py decides a target on the
# median of those and its distribution-free 95% confidence interval.
PAIRS_FILE=$OUT/pairs.jsonl
: >"$PAIRS_FILE"
PAIR_RUN=()
for c in bare tg-pass tg-full; do [[ " ${RUN[*]} " == *" $c "* ]] && PAIR_RUN+=("$c"); done
if [ "$PAIRS" -gt 0 ] && [ "${#PAIR_RUN[@]}" -gt 1 ] && [ "${PAIR_RUN[0]}" = bare ]; then
  log "paired runs: $PAIRS x (${PAIR_RUN[*]}), ${PAIR_SECS}s throughput + ${PAIR_SECS}s latency each"
  for p in $(seq "$PAIRS"); do
    for i in "${!PAIR_RUN[@]}"; do
      measure "${PAIR_RUN[$(((i + p) % ${#PAIR_RUN[@]}))]}" "$p" "$PAIR_SECS" "$PAIR_SECS" "$PAIRS_FILE" 0
    done
  done
fi

# Co-runs: the bare proxy and one case loaded at once, both on the proxies' core, each by
# its own wrk, the CPU time per request of each process over the same seconds. What moves
# the machine's speed then moves both alike, so their ratio barely moves from run to run;
# but the two share the core's caches, which may cost the process with the larger working
# set more: the report gives these ratios beside the targets, not as what decides them.
CORUN_FILE=$OUT/corun.jsonl
: >"$CORUN_FILE"
CORUN_RUN=()
for c in bare-hdr tg-pass tg-full; do [[ " ${RUN[*]} " == *" $c "* ]] && CORUN_RUN+=("$c"); done
if [ "$CORUNS" -gt 0 ] && [ "${#CORUN_RUN[@]}" -gt 0 ] && [[ " ${RUN[*]} " == *" bare "* ]]; then
  log "co-runs: $CORUNS x (${CORUN_RUN[*]}) with bare, ${PAIR_SECS}s each"
  for p in $(seq "$CORUNS"); do
    for c in "${CORUN_RUN[@]}"; do
      b0=$(cpu_ticks "${CASE_PID[bare]}")
      x0=$(cpu_ticks "${CASE_PID[$c]}")
      wrk_run bare "$PAIR_SECS" >"$DIR/corun.bare" &
      wb=$!
      wrk_run "$c" "$PAIR_SECS" >"$DIR/corun.case" &
      wc=$!
      wait "$wb" "$wc"
      b1=$(cpu_ticks "${CASE_PID[bare]}")
      x1=$(cpu_ticks "${CASE_PID[$c]}")
      read -r breq _ berr <"$DIR/corun.bare"
      read -r xreq _ xerr <"$DIR/corun.case"
      read -r us bus < <(python3 -c "print(($x1 - $x0) / $TICK * 1e6 / max($xreq, 1), ($b1 - $b0) / $TICK * 1e6 / max($breq, 1))")
      printf '{"case":"%s","round":%s,"cpu_us":%s,"bare_us":%s,"requests":%s,"bare_requests":%s,"errors":%s}\n' \
        "$c" "$p" "$us" "$bus" "$xreq" "$breq" "$((xerr + berr))" >>"$CORUN_FILE"
      log "co-run $p $c: $(printf '%.1f' "$us") µs CPU/req against bare's $(printf '%.1f' "$bus"); errors $((xerr + berr))"
    done
  done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- callgrind
CG_CASES=""
if [ "$CALLGRIND" = 1 ] || { [ "$CALLGRIND" = auto ] && [ -z "$PERF_HW" ]; }; then
  for c in bare bare-hdr tg-pass tg-key tg-limits tg-full; do
    [[ " ${RUN[*]} " == *" $c "* ]] && CG_CASES+="$c "
  done
fi
rm -rf "$OUT/callgrind"
if [ -n "$CG_CASES" ]; then
  log "callgrind: $CALLGRIND_REQUESTS requests each of $CG_CASES"
  mkdir -p "$OUT/callgrind"
  CASES="$CG_CASES" REQUESTS="$CALLGRIND_REQUESTS" OUT="$OUT/callgrind" TG="$TG" \
    bash "$ROOT/bench/profile.sh" >"$OUT/callgrind/summary.txt" 2>&1 ||
    log "callgrind failed: see $OUT/callgrind/summary.txt"
fi

# ---------------------------------------------------------------- profiles
profile_cases() {
  [ -n "$PERF" ] || { log "no perf: profiles skipped"; return; }
  for c in $PROFILE_CASES; do
    [[ " ${RUN[*]} " == *" $c "* ]] || continue
    log "perf record on $c"
    local args=()
    [ -n "${CASE_HDR[$c]}" ] && args=(-H "${CASE_HDR[$c]}")
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$((SECS + 2))s" "${args[@]}" "${CASE_URL[$c]}" >/dev/null &
    local w=$!
    sleep 1
    rm -f "$OUT/perf-$c.data" "$OUT/perf-$c.data.old"
    # DWARF call graphs: the release profile keeps line tables, not frame pointers.
    "$PERF" record -q -F 499 --call-graph dwarf,16384 \
      -p "$(descendants "${CASE_PID[$c]}" | paste -sd,)" -o "$OUT/perf-$c.data" -- sleep "$SECS" \
      >/dev/null 2>&1 || true
    wait "$w" || true
    # Self time per function, then inclusive time (children) per function.
    "$PERF" report -q -i "$OUT/perf-$c.data" --no-children --stdio --sort symbol \
      --percent-limit 0.7 -g none 2>/dev/null | sed '/^$/d; s/  *$//' | head -60 >"$OUT/profile-$c.txt" || true
    "$PERF" report -q -i "$OUT/perf-$c.data" --children --stdio --sort symbol \
      --percent-limit 0.5 -g none 2>/dev/null | sed '/^$/d; s/  *$//' | head -120 >"$OUT/profile-$c-inclusive.txt" || true
    "$PERF" report -q -i "$OUT/perf-$c.data" --no-children --stdio --sort dso \
      -g none 2>/dev/null | sed '/^$/d; s/  *$//' | head -15 >"$OUT/profile-$c-dso.txt" || true
  done
  python3 "$ROOT/bench/perf-groups.py" "$OUT" $PROFILE_CASES >"$OUT/profile-groups.txt" 2>&1 || true
}

# ---------------------------------------------------------------- report
meta() {
  python3 - "$@" <<'PY'
import json, sys
print(json.dumps(dict(a.split("=", 1) for a in sys.argv[1:])))
PY
}
SKIPS=""
for c in $CASES; do
  r=$(skip_reason "$c")
  [ -n "$r" ] && SKIPS+="$c=$r;;"
done
meta "date=$(date -u +%Y-%m-%d)" "commit=$COMMIT" "build_profile=$BUILD_PROFILE" "nproc=$(nproc)" \
  "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  "kernel=$(uname -r)" "load_before=$LOAD_BEFORE" "load_after=$LOAD_AFTER" \
  "rounds=$ROUNDS" "secs=$SECS" "conns=$CONNS" "rate=$RATE" "lat_conns=$LAT_CONNS" \
  "lat_secs=$LAT_SECS" "instr_secs=$INSTR_SECS" "pair_secs=$PAIR_SECS" "perf_hw=${PERF_HW:+yes}" "callgrind_requests=${CG_CASES:+$CALLGRIND_REQUESTS}" "proxy_cpu=$PROXY_CPU" "load_cpu=$LOAD_CPU" "xml_bytes=$XML_BYTES" \
  "xml_json_bytes=${XML_JSON_BYTES:-}" "analytics_api=$ANALYTICS_API" "skips=$SKIPS" \
  "nginx=$(nginx -v 2>&1 | cut -d/ -f2)" "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $2}')" \
  "oha=$("$OHA" --version | awk '{print $2}')" >"$OUT/meta.json"
for c in $CASES; do printf '%s\t%s\n' "$c" "${CASE_WHAT[$c]}"; done >"$OUT/cases.tsv"

python3 "$ROOT/bench/peers-report.py" "$OUT" --check >"$OUT/targets.txt" && missed=0 || missed=1
if [ "$PROFILE" = 1 ] || { [ "$PROFILE" = auto ] && [ "$missed" = 1 ]; }; then
  profile_cases
fi
args=("$OUT")
[ "$WRITE_DOCS" = 1 ] && args+=(--docs "$ROOT/docs/benchmarks.md")
python3 "$ROOT/bench/peers-report.py" "${args[@]}"
if [ -e "$OUT/profile-groups.txt" ]; then
  echo; cat "$OUT/profile-groups.txt"
  echo; echo "(profiles: $OUT/profile-*.txt, perf data: $OUT/perf-*.data)"
fi
exit 0
