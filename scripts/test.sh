#!/usr/bin/env bash
# The whole test suite: unit tests, the admin router tests and the end-to-end tests that
# start the real tollgate binary against real upstream servers (and a real Redis where a
# test needs it). Installs what it needs (cmake, redis-server) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"
fi
# The end-to-end tests run the real binary: build it first.
cargo build -p tollgate
cargo test --workspace --no-fail-fast
