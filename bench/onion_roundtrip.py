"""3-hop onion round trip on loopback: p50 / p99 latency and requests/s, 1 and 50 clients.

Three real node processes on 127.0.0.1 (no bootstrap, so nothing else runs); the clients are
trio tasks in this process using the real client library (firmware.client.open_onion_client: fresh
X25519 keys per hop per request, paths are random orders of the three nodes, one TLS link per
client to its first hops). The request is ``info`` so that store batching does not hide the
path's cost.

floor:  the same clients sending the same ``info`` directly to one node over a pinned link
        (firmware.client), same run: what a single hop of TLS + framing costs.

Also per request: CPU of the three node processes together and of the client process (user +
sys from /proc): steadier than latency on a shared, noisy machine.

Prints one JSON object (medians over --runs) and a one-line summary with ratios.
Usage: .venv/bin/python bench/onion_roundtrip.py [--runs 3] [--requests 400]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import psutil
import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodes import launch, stop_all  # noqa: E402  (same directory)

from firmware.client import connect, open_onion_client  # noqa: E402
from firmware.proto import onion  # noqa: E402

# network on (onions are relayed only by a node in the network) but no bootstrap: the three
# nodes know nobody, so no gossip, replication or reachability runs beside the onions
NODE_CONFIG = {"limits": {"max_inflight_per_conn": 256}}


def start_node(base, name):
    """A real node (bench/nodes.py) and its onion.Hop."""
    node = launch(base, name, NODE_CONFIG)
    return node, onion.Hop(node.node_id, node.host, node.port)


def pct(sorted_xs, p):
    return sorted_xs[min(len(sorted_xs) - 1, int(p / 100 * len(sorted_xs)))]


async def _timed(clients, per_client, open_client, call):
    """Every client connects and warms up first; then all start together on a gate."""
    lat = []
    ready, gate, t = [0], trio.Event(), {}

    async def one():
        async with open_client() as c:
            for _ in range(3):
                await call(c)  # open the links (TLS handshakes) before timing
            ready[0] += 1
            if ready[0] == clients:
                t["start"] = time.perf_counter()
                gate.set()
            await gate.wait()
            for _ in range(per_client):
                t0 = time.perf_counter()
                await call(c)
                lat.append(time.perf_counter() - t0)
            t["end"] = time.perf_counter()

    async with trio.open_nursery() as n:
        for _ in range(clients):
            n.start_soon(one)
    return lat, t["end"] - t["start"]


async def run_onion(hops, clients, total):
    return await _timed(clients, max(1, total // clients),
                        lambda: open_onion_client(hops, attempts=1), lambda oc: oc.info())


async def run_direct(hop, clients, total):
    return await _timed(clients, max(1, total // clients),
                        lambda: connect(hop.host, hop.port, hop.node_id), lambda c: c.info())


def summarize(lat, wall):
    s = sorted(lat)
    return {"p50_ms": pct(s, 50) * 1e3, "p99_ms": pct(s, 99) * 1e3, "req_s": len(s) / wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=400, help="per phase and run (50 clients: "
                    "at least 20 each)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="onion-rt-")
    nodes, hops = [], []
    try:
        for i in range(3):
            n, h = start_node(base, f"n{i}")
            nodes.append(n)
            hops.append(h)
        results = {}
        node_ps = [psutil.Process(n.proc.pid) for n in nodes]
        me = psutil.Process()

        def measured(fn, *a):
            t0 = [p.cpu_times() for p in node_ps + [me]]
            lat, wall = trio.run(fn, *a)
            t1 = [p.cpu_times() for p in node_ps + [me]]
            cpu = [(b.user - a_.user + b.system - a_.system) / len(lat) * 1e6
                   for a_, b in zip(t0, t1, strict=True)]
            return {**summarize(lat, wall), "nodes_cpu_us": sum(cpu[:-1]),
                    "client_cpu_us": cpu[-1]}

        for clients in (1, 50):
            per = {"onion": [], "direct": []}
            n = max(args.requests, 20 * clients)
            for _ in range(args.runs):
                per["onion"].append(measured(run_onion, hops, clients, n))
                per["direct"].append(measured(run_direct, hops[0], clients, n))
            for kind, rows in per.items():
                results[f"{kind}_{clients}"] = {k: round(statistics.median(r[k] for r in rows), 2)
                                                for k in rows[0]}
    finally:
        stop_all(nodes)
        shutil.rmtree(base, ignore_errors=True)
    out = {"runs": args.runs, "requests_per_phase": args.requests, **results}
    for c in (1, 50):
        out[f"p50_over_direct_{c}"] = round(results[f"onion_{c}"]["p50_ms"]
                                            / results[f"direct_{c}"]["p50_ms"], 2)
        out[f"reqs_direct_over_onion_{c}"] = round(results[f"direct_{c}"]["req_s"]
                                                   / results[f"onion_{c}"]["req_s"], 2)
    print(json.dumps(out))
    o1, o50 = results["onion_1"], results["onion_50"]
    d50 = results["direct_50"]
    print(f"onion 3-hop round trip: 1 client p50 {o1['p50_ms']} ms p99 {o1['p99_ms']} ms "
          f"{o1['req_s']} req/s ({out['p50_over_direct_1']}x direct p50); 50 clients p50 "
          f"{o50['p50_ms']} ms p99 {o50['p99_ms']} ms {o50['req_s']} req/s "
          f"(direct is {out['reqs_direct_over_onion_50']}x the req/s); node CPU per request "
          f"{o50['nodes_cpu_us']:.0f} us onion vs {d50['nodes_cpu_us']:.0f} us direct, client "
          f"{o50['client_cpu_us']:.0f} us vs {d50['client_cpu_us']:.0f} us")


if __name__ == "__main__":
    main()
