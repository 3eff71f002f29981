#!/usr/bin/env bash
# The whole test suite: unit tests, the admin router tests and the end-to-end tests that
# start the real tollgate binary against real upstream servers (and a real Redis where a
# test needs it), then the dashboard's browser test (headless Debian chromium driven by
# playwright-core, tests/browser). Installs what it needs (cmake, redis-server, chromium,
# node and npm, the browser test's npm packages) when it is missing; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi
# The end-to-end tests run the real binary: build it first.
cargo build -p tollgate
cargo test --workspace --no-fail-fast
# How bench/peers-report.py decides the benchmark targets (pure Python, no servers).
python3 -m unittest discover -s bench -p 'test_*.py'
# The operators' dashboard in a real browser (screenshot: target/dashboard.png). `npm ci` installs
# exactly the lockfile's playwright-core (no browser download: it drives /usr/bin/chromium).
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
(
  cd tests/browser
  npm ci --no-audit --no-fund --loglevel=error
  TOLLGATE_BIN="$target_dir/debug/tollgate" npm test
)
