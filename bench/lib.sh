# Sourced by the bench scripts (after `set -euo pipefail` and `cd` to the repository):
# a temporary directory DIR, removed at exit together with the processes whose PIDs the
# script appends to PIDS (and whatever those started, such as nginx workers); a free-port
# helper; a wait for an HTTP answer; a process's CPU time; installs of what is missing;
# the upstream nginx and the policy-file entries that several scripts share.
DIR=$(mktemp -d)
PIDS=()
descendants() { # pid -> it and every process below it
  local p
  echo "$1"
  for p in $(pgrep -P "$1" || true); do descendants "$p"; done
}
bench_cleanup() {
  local all=() p
  for p in "${PIDS[@]}"; do all+=($(descendants "$p")); done
  if [ "${#all[@]}" -gt 0 ]; then
    kill "${all[@]}" 2>/dev/null || true
    for _ in $(seq 20); do
      kill -0 "${all[@]}" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "${all[@]}" 2>/dev/null || true
  fi
  rm -rf "$DIR"
}
trap bench_cleanup EXIT
# A free TCP port on 127.0.0.1.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Wait (at most 60 s) for URL to answer 2xx.
wait_http() {
  for _ in $(seq 600); do curl -fs -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "not answering: $1" >&2
  return 1
}
# Installs Debian PACKAGES (one update, one install).
apt_install() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# need COMMAND [PACKAGE]: installs PACKAGE (default: COMMAND) from Debian when COMMAND is missing.
need() {
  command -v "$1" >/dev/null 2>&1 || apt_install "${2:-$1}"
}
# Sets OHA to the oha load generator, installed from crates.io the first time.
need_oha() {
  OHA=$(command -v oha || echo "$HOME/.cargo/bin/oha")
  if [ ! -x "$OHA" ]; then
    echo "installing oha from crates.io (a few minutes, once)" >&2
    CARGO_TARGET_DIR=${TMPDIR:-/tmp}/oha-target cargo install oha --locked -q
    OHA=$HOME/.cargo/bin/oha
  fi
}
# CPU time of a process: utime + stime, in ticks of TICK per second, of PID and its
# descendants (each with all its threads; nginx's master and workers, say).
TICK=$(getconf CLK_TCK)
cpu_ticks() { # pid
  local t=0 p
  for p in $(descendants "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
# The upstream nginx of profile.sh and ab.sh, into $DIR/up.conf: `return 200` with a 13-byte
# body, and $DIR/static/ under /static/ (one worker; UP is its port).
write_upstream_conf() {
  cat >"$DIR/up.conf" <<EOF
user root; worker_processes 1; pid $DIR/up.pid; error_log $DIR/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $DIR/b; proxy_temp_path $DIR/p; fastcgi_temp_path $DIR/f;
  uwsgi_temp_path $DIR/u; scgi_temp_path $DIR/s;
  server { listen 127.0.0.1:$UP reuseport backlog=4096;
    location / { default_type text/plain; return 200 "hello, world\n"; }
    location /static/ { alias $DIR/static/; types { application/xml xml; } } } }
EOF
}
# The policy file's APIs the scripts share (UP: the upstream's port).
api_pass() { cat <<EOF
  - id: pass
    path: /pass
    subscription_required: false
    upstream: { targets: ["http://127.0.0.1:$UP"] }
EOF
}
# The xml-to-json API of the benchmarks (a policy-file entry): bench/catalog.py's answer,
# served by the upstream nginx on port $UP under /static/.
api_xml() { cat <<EOF
  - id: xml
    path: /xml
    subscription_required: false
    upstream: { targets: ["http://127.0.0.1:$UP/static"] }
    policies:
      outbound:
        - xml-to-json: { kind: javascript-friendly }
EOF
}
