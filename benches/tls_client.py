#!/usr/bin/env python3
"""The TLS benchmark's own client (Python's ssl module, OpenSSL underneath), for what
h2load and s_time do not print.

latency: requests at a fixed rate on one client, each timed from the moment it was due
  (so a slow answer also counts against the requests it held up), for one of three ways in:
    keepalive  one TLS connection, kept alive
    new        a new connection and a full handshake for each request
    resume     a new connection for each request, resuming the first one's session
  prints: "p50_us p99_us resumed_share" (resumed_share: of the handshakes, those resumed).
idle: opens N TLS connections that send nothing, in two halves, and prints the growth of
  the proxy's resident memory (its process and children) between the halves, in bytes per
  connection: "bytes_per_connection".
"""

import argparse
import os
import socket
import ssl
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: localhost\r\nx-tenant-id: acme\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: localhost\r\nx-tenant-id: acme\r\nConnection: close\r\n\r\n"


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def read_answer(sock):
    """Reads one response with a content-length; fails unless it is a 2xx."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the answer's head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if not status.startswith(b"2"):
        raise RuntimeError("answer " + status.decode())
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed inside the body")
        body += chunk


def connect(ctx, port, session=None):
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def latency(args):
    ctx = context(args.cafile)
    interval = 1.0 / args.rate
    kept = connect(ctx, args.port) if args.mode == "keepalive" else None
    session = None
    if args.mode == "resume":
        # The first connection's session (a TLS 1.3 ticket arrives after the handshake,
        # so it is read once an answer has come).
        first = connect(ctx, args.port)
        first.sendall(CLOSE)
        read_answer(first)
        session = first.session
        first.close()
    times, handshakes, resumed = [], 0, 0
    start = time.perf_counter()
    n = int(args.seconds * args.rate)
    for i in range(n):
        due = start + i * interval
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
        if kept is not None:
            kept.sendall(REQUEST)
            read_answer(kept)
        else:
            s = connect(ctx, args.port, session)
            handshakes += 1
            resumed += 1 if s.session_reused else 0
            s.sendall(CLOSE)
            read_answer(s)
            s.close()
        times.append(time.perf_counter() - due)
    if kept is not None:
        kept.close()
    times.sort()
    share = resumed / handshakes if handshakes else 0.0
    print("%.0f %.0f %.2f" % (percentile(times, 0.5) * 1e6, percentile(times, 0.99) * 1e6, share))


def rss(pid):
    """Resident bytes of `pid` and its children."""
    total = 0
    pids = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        with open("/proc/%d/status" % p) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def settle(pid):
    """The proxy's memory once two readings 200 ms apart agree."""
    last = rss(pid)
    for _ in range(25):
        time.sleep(0.2)
        now = rss(pid)
        if now == last:
            return now
        last = now
    return last


def idle(args):
    ctx = context(args.cafile)
    half = args.count // 2
    held = [connect(ctx, args.port) for _ in range(half)]
    before = settle(args.pid)
    held += [connect(ctx, args.port) for _ in range(half)]
    after = settle(args.pid)
    print("%.0f" % ((after - before) / half))
    for s in held:
        s.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("port", type=int)
    lat.add_argument("cafile")
    lat.add_argument("--mode", choices=["keepalive", "new", "resume"], required=True)
    lat.add_argument("--rate", type=float, required=True)
    lat.add_argument("--seconds", type=float, required=True)
    idl = sub.add_parser("idle")
    idl.add_argument("port", type=int)
    idl.add_argument("cafile")
    idl.add_argument("--count", type=int, default=1000)
    idl.add_argument("--pid", type=int, required=True)
    args = p.parse_args()
    try:
        latency(args) if args.what == "latency" else idle(args)
    except (OSError, RuntimeError, ssl.SSLError) as e:
        print("wrong(%s)" % e)
        sys.exit(0)


if __name__ == "__main__":
    main()
