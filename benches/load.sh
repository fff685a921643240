#!/usr/bin/env bash
# The side-by-side load benchmark: the upstream direct, Switchyard, nginx and HAProxy.
#   benches/load.sh                 the full run (release build, 10 s a load, swaps, memory)
#   benches/load.sh --quick         the CI check: a moment per target, every answer must be right
#   benches/load.sh --duration 20 --only switchyard,nginx
# Results: a table on stdout and JSON in target/loadbench.json (--json PATH to change).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
for a in "$@"; do [ "$a" = "--quick" ] && quick=true; done

# The peers, from Debian's packages (their services are not started or enabled here).
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
. scripts/apt-install.sh
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi

# The quick check reuses the test suite's debug build; figures need the release build.
if $quick; then profile=debug; build=(); else profile=release; build=(--release); fi
cargo build "${build[@]}" -p switchyard --bin switchyard -p switchyard-benches --bin loadbench

# The crowd test holds 10,000 connections on each side of the loopback: a descriptor each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# One core for the proxy under test, the other for the load generator and the upstream.
# Cargo's output folder: target/, unless CARGO_TARGET_DIR moves it.
bin="${CARGO_TARGET_DIR:-target}/$profile"
args=(--switchyard "$bin/switchyard")
pin=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  args+=(--proxy-cpu 1)
  pin=(taskset -c 0)
else
  echo "note: fewer than 2 cores or no taskset: nothing is pinned, figures are not comparable" >&2
fi
exec "${pin[@]}" "$bin/loadbench" "${args[@]}" "$@"
