#!/usr/bin/env bash
# The propagation benchmark: N routers (release build, default poll interval) on one DynamoDB
# Local table, F flips; prints p50/p99/max of how long after a flip's write returned each
# router applied it, and the store reads an idle router makes a second.
#   benches/propagation.sh                      20 routers, 20 flips
#   benches/propagation.sh --routers 5 --flips 10
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ddb-local.sh
cargo build --release -p switchyard --bin switchyard -p switchyard-benches --bin propbench
exec target/release/propbench --switchyard target/release/switchyard --ddb-lib "$SWITCHYARD_DDB_LOCAL_LIB" "$@"
