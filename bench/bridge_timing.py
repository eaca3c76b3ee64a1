"""Does trying to authenticate change how fast the bridge answers a probe? And vs nginx?

A prober without the secret can time answers. For each server (a stock Debian nginx, the
bridge; same cert and site, tests/bridge/stock.py) one keep-alive TLS connection per request
kind; kinds interleaved request by request so load drifts hit all of them alike:
  plain:   GET / (the welcome page)
  upgrade: GET / as a WebSocket upgrade with a well-formed wrong key (what a prober who
           suspects a bridge sends; the bridge checks the key, then serves the same page)
  missing: GET /nope (404)
  padded:  the upgrade request's bytes under other header names (no key to check)
Client-side round-trip time per request; median per kind per run; the figure that matters is
the ratio upgrade/plain at the bridge (target: 1.00 within noise, as at nginx). bridge/nginx is
informational (Python vs C; a prober who knows the host's nginx timing could use it).
Usage: .venv/bin/python bench/bridge_timing.py [--runs 5] [--requests 300]
"""

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.bridge import probes  # noqa: E402
from tests.bridge.stock import (  # noqa: E402
    BridgeInThread,
    StockNginx,
    make_snakeoil,
    read_answer,
    require_tools,
    tls_client_context,
)

KINDS = {
    "plain": b"GET / HTTP/1.1\r\n" + probes.H + b"\r\n",
    "upgrade": probes.upgrade(probes.WRONG_KEY),
    "missing": b"GET /nope HTTP/1.1\r\n" + probes.H + b"\r\n",
    # the upgrade request's bytes with the header names disguised (same length, parsed the
    # same way, but no key to check): upgrade/padded isolates the authenticator check
    "padded": probes.upgrade(probes.WRONG_KEY).replace(b"Upgrade:", b"X-Upgr1:")
    .replace(b"Sec-WebSocket-Key:", b"X-WebSocket-Key1:"),
}


def one_run(port: int, n: int) -> dict:
    conns = {}
    for kind in KINDS:
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns[kind] = tls_client_context().wrap_socket(raw)
    times = {k: [] for k in KINDS}
    for _ in range(n):
        for kind, data in KINDS.items():
            s = conns[kind]
            t0 = time.perf_counter()
            s.sendall(data)
            answer = read_answer(s)
            times[kind].append(time.perf_counter() - t0)
            assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    for s in conns.values():
        s.close()
    return {k: statistics.median(v) * 1e6 for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    require_tools()
    d = tempfile.mkdtemp(prefix="bridge-bench-")
    key, cert = make_snakeoil(d)
    nginx, bridge = StockNginx(d, key, cert), BridgeInThread(key, cert, os.urandom(32))
    runs = {"nginx": [], "bridge": []}
    try:
        for _ in range(args.runs):
            runs["nginx"].append(one_run(nginx.port, args.requests))
            runs["bridge"].append(one_run(bridge.port, args.requests))
    finally:
        nginx.stop()
        bridge.stop()
    med = {srv: {k: statistics.median(r[k] for r in rs) for k in KINDS}
           for srv, rs in runs.items()}
    ratios = {srv: {k: [r[k] / r["plain"] for r in rs] for k in ("upgrade", "missing", "padded")}
              for srv, rs in runs.items()}
    ratios["bridge"]["upgrade_vs_padded"] = [r["upgrade"] / r["padded"] for r in runs["bridge"]]
    out = {"median_us": med, "ratio_to_plain": ratios,
           "bridge_vs_nginx_plain": med["bridge"]["plain"] / med["nginx"]["plain"],
           "load": os.getloadavg()}
    print(json.dumps(out, indent=1))
    b = ratios["bridge"]["upgrade"]
    p = ratios["bridge"]["upgrade_vs_padded"]
    print(f"bridge: plain {med['bridge']['plain']:.0f} us, upgrade-with-wrong-key "
          f"{med['bridge']['upgrade']:.0f} us (ratio {min(b):.3f}-{max(b):.3f}), same bytes "
          f"without a key {med['bridge']['padded']:.0f} us (upgrade/padded "
          f"{min(p):.3f}-{max(p):.3f}); nginx: plain "
          f"{med['nginx']['plain']:.0f} us, upgrade {med['nginx']['upgrade']:.0f} us; "
          f"bridge/nginx {out['bridge_vs_nginx_plain']:.2f}x; load {out['load'][0]:.1f}")


if __name__ == "__main__":
    main()
