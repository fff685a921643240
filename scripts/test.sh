#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs them.
#   ./scripts/test.sh            every test (unit, property, end-to-end)
#   ./scripts/test.sh e2e flips  extra arguments go to `cargo test` (a filter, --nocapture...)
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
  echo "cargo is missing: install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# The end-to-end tests start the real binary and real upstreams on 127.0.0.1; nothing else
# outside Cargo is needed yet.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

if [ "$#" -gt 0 ] && [ "$1" = "e2e" ]; then
  shift
  exec cargo test --workspace --test e2e -- "$@"
fi
exec cargo test --workspace "$@"
