#!/usr/bin/env bash
# Run Tollgate with examples/quickstart.yaml: the demo upstream on 127.0.0.1:9000, the proxy
# on 127.0.0.1:8080, the admin API on 127.0.0.1:8081, state in ./tollgate-data.
# Installs what the build needs (cmake) when it is missing. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cmake >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq cmake
fi
cargo build --release -p tollgate
./target/release/tollgate demo-upstream --listen 127.0.0.1:9000 &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT
./target/release/tollgate serve --config examples/quickstart.yaml "$@"
