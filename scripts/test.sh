#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs them.
#   ./scripts/test.sh            every test (unit, property, end-to-end)
#   ./scripts/test.sh e2e flips  extra arguments go to `cargo test` (a filter, --nocapture...)
# The full run then lints the Dockerfile and the Kubernetes manifests (scripts/lint-deploy.sh)
# and ends with the load benchmark's quick check (benches/load.sh --quick): Switchyard,
# nginx and HAProxy each answer a moment of load, and every answer must be right.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
  echo "cargo is missing: install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# DynamoDB Local for the DynamoDB store's tests: each test starts its own on a free loopback
# port from .ddb-local.
. scripts/ddb-local.sh
# ss (iproute2) reads a listener's backlog, and curl is a client nobody here wrote, in the
# HTTP edge tests.
. scripts/apt-install.sh
if ! need ss || ! need curl; then
  apt_install iproute2 curl
fi
# Debian's chromium and its WebDriver, for the console's tests in a real browser.
if ! need chromium || ! need chromedriver; then
  apt_install chromium chromium-driver
fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# No backtrace unless asked (RUST_BACKTRACE=1): a CI log that keeps only its tail then still
# shows a failed test's panic message, which names the assertion and its values.
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"

if [ "$#" -gt 0 ] && [ "$1" = "e2e" ]; then
  shift
  exec cargo test --workspace --test e2e -- "$@"
fi
cargo test --workspace "$@"
if [ "$#" -eq 0 ]; then
  scripts/lint-deploy.sh
  benches/load.sh --quick --json target/loadbench-quick.json
fi
