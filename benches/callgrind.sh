#!/usr/bin/env bash
# Instructions a request on the idle hot path: builds, side by side, by callgrind.
#   benches/callgrind.sh ROUNDS BINARY...
# Each round runs every binary once, in turn (so a sitting's drift falls on all alike), under
# the load benchmark for four seconds (one tenant, keep-alive HTTP/1.1, one core for the
# router), and prints the binary, its total, the requests and the instructions a request.
# Requests are the calls of the HTTP/1.1 server's `encode_head` (one response head each); the
# router's start, about 24 million instructions, is taken off the total first. The binaries
# are release builds (`cargo build --release -p switchyard`, copied aside for each commit).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -lt 2 ]; then
  sed -n '2,3p' "$0" >&2
  exit 2
fi
rounds=$1
shift
command -v valgrind >/dev/null 2>&1 || { . scripts/apt-install.sh; apt_install valgrind; }
cargo build --release -p switchyard-benches --bin loadbench
loadbench="${CARGO_TARGET_DIR:-target}/release/loadbench"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# loadbench starts this as the router and kills it with SIGKILL when done: valgrind runs in a
# session of its own, so the kill does not lose its profile, and gets SIGTERM after.
cat > "$work/router.sh" <<'EOF'
#!/usr/bin/env bash
setsid -f valgrind --tool=callgrind --callgrind-out-file="$CG_OUT" "$CG_BIN" "$@" \
  >"$CG_OUT.log" 2>&1
sleep 1000
EOF
chmod +x "$work/router.sh"
# The figures are read with `grep -m1`, which closes the pipe early.
set +o pipefail

for round in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    out="$work/$round-$(basename "$bin").cg"
    CG_BIN=$(realpath "$bin") CG_OUT=$out taskset -c 0 "$loadbench" \
      --switchyard "$work/router.sh" --proxy-cpu 1 --only switchyard \
      --no-swap --no-rss --no-crowd --duration 4 >"$work/loadbench.log" 2>&1
    pkill -TERM -f -- "--callgrind-out-file=$out" || true
    while pgrep -f -- "--callgrind-out-file=$out" >/dev/null; do sleep 1; done
    total=$(callgrind_annotate "$out" | grep -m1 'PROGRAM TOTALS' | awk '{print $1}' | tr -d ,)
    requests=$(callgrind_annotate --inclusive=yes --tree=calling "$out" |
      grep -m1 -E '  > .*http1::server::encode_head \(' | sed 's/.*(\([0-9,]*\)x).*/\1/' | tr -d ,)
    echo "$bin round $round: $total instructions, $requests requests," \
      "$(((total - 24000000) / requests)) a request"
  done
done
