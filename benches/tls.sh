#!/usr/bin/env bash
# TLS and HTTP/2 side by side: Switchyard, nginx and HAProxy terminating TLS with the same
# certificate (EC P-256, made here) in front of the load benchmark's upstream, measured by
# clients nobody here wrote: `openssl s_time` (handshakes a second, one client) and `h2load`
# (keep-alive requests a second at 64 connections over HTTP/1.1, and HTTP/2 over TLS and in
# cleartext, 8 connections of 32 streams). Then, by benches/tls_client.py (Python's ssl, on
# OpenSSL): p50/p99 at a fixed rate kept alive, with a full handshake a request and with a
# resumed one, in rounds that take the three proxies in turn (the median of the rounds is
# shown, so that a slow spell of the machine does not land on one proxy only), and the
# memory an idle TLS connection holds.
# The peers do Switchyard's job, as in the load benchmark: `Host` kept, `X-Forwarded-For`,
# `-Proto` and `-Host` set, and an `X-Request-ID` kept or made, sent on and returned to the
# client. `--no-ids` spares them the request ids (Switchyard always has them).
#   benches/tls.sh                 5 s a measure, 3 latency rounds
#   benches/tls.sh --seconds 10 --rounds 5
#   benches/tls.sh --no-ids
# One core for the proxy under test, the other for the clients and the upstream.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=5
rounds=3
ids=true
while [ "$#" -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --no-ids) ids=false; shift ;;
    *) echo "usage: benches/tls.sh [--seconds N] [--rounds N] [--no-ids]" >&2; exit 64 ;;
  esac
done

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v curl >/dev/null 2>&1 || missing+=(curl)
. scripts/apt-install.sh
if [ "${#missing[@]}" -gt 0 ]; then apt_install "${missing[@]}"; fi
PATH="$PATH:/usr/sbin"
# A thousand idle TLS connections, each an open file on both sides.
ulimit -n 65536 2>/dev/null || true

cargo build --release -p switchyard --bin switchyard -p switchyard-benches --bin loadbench

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

pin_proxy=(); pin_client=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  pin_proxy=(taskset -c 1); pin_client=(taskset -c 0)
fi

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/both.pem"

"${pin_client[@]}" target/release/loadbench --upstream-only > "$work/upstream.txt" &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$work/upstream.txt" ] && break; sleep 0.1; done
upstream=$(awk '{print $2}' "$work/upstream.txt")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_switchyard() {
  local port=$1 plain=$2 dir="$work/switchyard"
  mkdir -p "$dir"
  echo '{"version":1,"items":[{"tenant":"acme","target":"app"}]}' > "$dir/flags.json"
  cat > "$dir/router.toml" <<EOF
[server]
listen = "127.0.0.1:$plain"
admin_listen = "127.0.0.1:$(free_port)"
workers = 1
[server.tls]
listen = "127.0.0.1:$port"
[[server.tls.certificates]]
name = "bench"
cert = "$work/cert.pem"
key = "$work/key.pem"
[flags]
source = "file:flags.json"
default_target = "app"
[tenant]
from = ["header:x-tenant-id"]
[targets.app]
endpoints = ["http://$upstream"]
[[routes]]
name = "api"
path_prefix = "/"
EOF
  RUST_LOG=warn "${pin_proxy[@]}" target/release/switchyard serve --config "$dir/router.toml" &
  pids+=($!)
}

start_nginx() {
  local port=$1 plain=$2 dir="$work/nginx" request_ids=""
  mkdir -p "$dir"
  if $ids; then
    request_ids='proxy_set_header X-Request-ID $request_id_out;
      add_header X-Request-ID $request_id_out always;'
  fi
  cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server $upstream; keepalive 128; }
  map \$http_x_request_id \$request_id_out { "" \$request_id; default \$http_x_request_id; }
  server {
    listen 127.0.0.1:$port ssl http2;
    listen 127.0.0.1:$plain http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
      $request_ids
    }
  }
}
EOF
  "${pin_proxy[@]}" nginx -c "$dir/nginx.conf" -p "$dir" &
  pids+=($!)
}

start_haproxy() {
  local port=$1 plain=$2 dir="$work/haproxy" request_ids=""
  mkdir -p "$dir"
  # A cheap unique-id format (hex): process, start second, request counter.
  if $ids; then
    request_ids='unique-id-format %{+X}o%pid-%Ts-%rt
  http-request set-header X-Request-ID %[unique-id] unless { req.hdr(x-request-id) -m found }
  http-request set-var(txn.request_id) req.hdr(x-request-id)
  http-response set-header X-Request-ID %[var(txn.request_id)]'
  fi
  cat > "$dir/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend tls
  bind 127.0.0.1:$port ssl crt $work/both.pem alpn h2,http/1.1
  bind 127.0.0.1:$plain proto h2
  option forwardfor
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http unless { ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  $request_ids
  default_backend app
backend app
  http-reuse always
  server app $upstream
EOF
  "${pin_proxy[@]}" haproxy -f "$dir/haproxy.cfg" -db &
  pids+=($!)
}

wait_tls() {
  for _ in $(seq 1 100); do
    if echo | openssl s_client -connect "127.0.0.1:$1" -servername localhost >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers TLS on port $1" >&2; return 1
}

# s_time prints "N connections in T real seconds"; the rate is N / T.
handshakes() {
  "${pin_client[@]}" openssl s_time -connect "127.0.0.1:$1" -CAfile "$work/cert.pem" "$2" -time "$seconds" 2>/dev/null \
    | awk '/connections in .* real seconds/ { printf "%.0f", $1 / $4; exit }'
}

# h2load's "finished in ..., N req/s" line; "wrong" unless every request got a 2xx.
h2rate() {
  "${pin_client[@]}" h2load "$@" 2>/dev/null | awk '
    /^finished in/ { gsub(",", "", $4); rate = $4 }
    /^requests:/ { done = $8 }
    /^status codes:/ { ok = $3 }
    END { if (done > 0 && ok == done) printf "%.0f", rate; else printf "wrong(%s of %s 2xx)", ok, done }'
}

# CPU ticks (utime + stime) of a process and its children (nginx's worker).
ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

# One measure: "rate/s (per proxy CPU-second)". The clients share one core, so the rate may be
# theirs; the work per proxy CPU-second is the proxy's own.
measure() {
  local pid=$1; shift
  local before rate after
  before=$(ticks "$pid")
  rate=$("$@")
  after=$(ticks "$pid")
  awk -v r="$rate" -v t="$((after - before))" -v hz="$hz" -v s="$seconds" \
    'BEGIN { cpu = t / hz; printf "%s (%s)", r, (cpu > 0 ? sprintf("%.0f", r * s / cpu) : "-") }'
}

# p50 and p99 in us at a fixed rate on one client connection: "p50 p99", or "wrong ...".
fixed() {
  "${pin_client[@]}" python3 benches/tls_client.py latency "$1" "$work/cert.pem" \
    --mode "$2" --rate "$3" --seconds "$seconds" \
    | awk '{ if ($1 ~ /^wrong/) print $0; else if ($3 < 1 && "'"$2"'" == "resume") print "wrong(not resumed)"; else print $1, $2 }'
}

# The median of the numbers given (the middle one; the lower middle of an even count).
median() { printf "%s\n" "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

names=(switchyard nginx haproxy)
declare -A port plain pid
for name in "${names[@]}"; do
  port[$name]=$(free_port)
  plain[$name]=$(free_port)
  "start_$name" "${port[$name]}" "${plain[$name]}"
  pid[$name]=${pids[-1]}
done
for name in "${names[@]}"; do wait_tls "${port[$name]}"; done
# Each answers over HTTP/2 and TLS, and returns the request's id unless spared it.
for name in "${names[@]}"; do
  head=$(curl -s --http2 --cacert "$work/cert.pem" -D - -o /dev/null -H 'x-tenant-id: acme' \
    "https://localhost:${port[$name]}/")
  case "$head" in "HTTP/2 200"*) ;; *) echo "$name did not answer 200 over HTTP/2: $head" >&2; exit 1 ;; esac
  if $ids && ! grep -qi '^x-request-id: ' <<<"$head"; then
    echo "$name returned no X-Request-ID: $head" >&2; exit 1
  fi
done

echo "each cell: per second (per proxy CPU-second); $seconds s a measure"
printf "%-11s %20s %20s %20s %20s %20s\n" proxy "full handshakes" "-reuse handshakes" "h1 keep-alive req" "h2 (TLS) req" "h2c req"
for name in "${names[@]}"; do
  p=${pid[$name]}
  url="https://localhost:${port[$name]}/"
  full=$(measure "$p" handshakes "${port[$name]}" -new)
  resumed=$(measure "$p" handshakes "${port[$name]}" -reuse)
  h1=$(measure "$p" h2rate --h1 -c 64 -D "$seconds" -H 'x-tenant-id: acme' "$url")
  h2=$(measure "$p" h2rate -c 8 -m 32 -D "$seconds" -H 'x-tenant-id: acme' "$url")
  h2c=$(measure "$p" h2rate -c 8 -m 32 -D "$seconds" -H 'x-tenant-id: acme' "http://127.0.0.1:${plain[$name]}/")
  printf "%-11s %20s %20s %20s %20s %20s\n" "$name" "$full" "$resumed" "$h1" "$h2" "$h2c"
done

# Latency in rounds, each round taking the proxies in turn.
declare -A samples
for round in $(seq 1 "$rounds"); do
  for name in "${names[@]}"; do
    for row in "keepalive 1000" "new 100" "resume 100"; do
      set -- $row
      got=$(fixed "${port[$name]}" "$1" "$2")
      case "$got" in wrong*) echo "$name $1: $got" >&2; exit 1 ;; esac
      samples[$name.$1.p50]+=" ${got% *}"
      samples[$name.$1.p99]+=" ${got#* }"
    done
  done
done

echo
echo "p50 / p99 us at a fixed rate, one client (benches/tls_client.py), median of $rounds rounds; idle: bytes per idle TLS connection"
printf "%-11s %24s %24s %24s %14s\n" proxy "keep-alive @1000/s" "full handshake @100/s" "resumed handshake @100/s" "idle bytes"
for name in "${names[@]}"; do
  cells=()
  for mode in keepalive new resume; do
    # shellcheck disable=SC2086 # the samples are space-separated numbers
    cells+=("$(median ${samples[$name.$mode.p50]}) / $(median ${samples[$name.$mode.p99]})")
  done
  idle=$("${pin_client[@]}" python3 benches/tls_client.py idle "${port[$name]}" "$work/cert.pem" --count 1000 --pid "${pid[$name]}")
  printf "%-11s %24s %24s %24s %14s\n" "$name" "${cells[0]}" "${cells[1]}" "${cells[2]}" "$idle"
done
