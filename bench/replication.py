"""What replication costs a store: latency and throughput into a k=5 swarm vs a lone node.

floor:  a node with [network] enabled = false (store = one durable local write), the same client,
        the same 1 KiB messages, in the same run.
swarm:  5 node processes (k = 5, so every store is forwarded to 4 members and answered once
        all acknowledged a durable copy); the client talks to one of them.
Both: sequential stores (p50/p99 latency) and 50 concurrent stores on one link (stores/s).
Also checks every answer says replicas == 5.

Usage: .venv/bin/python bench/replication.py [--stores 300] [--runs 3]
Prints one JSON object and a one-line summary.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import nacl.signing
import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodes import launch, node_addr, stop_all  # noqa: E402  (same directory)

from firmware.client import connect  # noqa: E402

NET = {"gossip_interval": 0.5, "test_interval": 1.0, "anti_entropy_interval": 60.0}


def start(base, name, network):
    """A real node (bench/nodes.py: no request rate limit) with this [network] section."""
    return launch(base, name, {"network": network})


async def live_count(addr):
    async with connect(*addr) as c:
        return (await c.info())["peers_live"]


async def measure(addr, n):
    recipient = bytes(nacl.signing.SigningKey.generate().verify_key)
    data = os.urandom(1024)
    lat, replicas = [], set()
    async with connect(*addr) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = await c.store(recipient, data + os.urandom(8), ttl_ms=3_600_000)
            lat.append((time.perf_counter() - t0) * 1e3)
            replicas.add(r.replicas)
        done = 0

        async def worker(count):
            nonlocal done
            for _ in range(count):
                await c.store(recipient, data + os.urandom(8), ttl_ms=3_600_000)
                done += 1

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(worker, max(1, n // 50))
        rate = done / (time.perf_counter() - t0)
    lat.sort()
    return {"p50_ms": lat[len(lat) // 2], "p99_ms": lat[int(len(lat) * 0.99)],
            "stores_per_s_50_concurrent": rate, "replicas_seen": sorted(map(str, replicas))}  # fmt: skip


def one_run(n):
    base = tempfile.mkdtemp(prefix="hn-repl-bench-")
    nodes = []
    try:
        nodes.append(start(base, "lone", {"enabled": False}))
        lone = node_addr(nodes[-1])
        nodes.append(start(base, "s0", NET))
        seed = node_addr(nodes[-1])
        boot = f"{seed[0]}:{seed[1]}@{seed[2].hex()}"
        for i in range(1, 5):
            nodes.append(start(base, f"s{i}", dict(NET, bootstrap=[boot])))
        deadline = time.monotonic() + 60
        while trio.run(live_count, seed) < 4:
            if time.monotonic() > deadline:
                raise RuntimeError("swarm did not form")
            time.sleep(0.2)
        time.sleep(2)  # let every member see all the others
        return {"floor": trio.run(measure, lone, n), "swarm": trio.run(measure, seed, n)}
    finally:
        stop_all(nodes, kill=True)
        shutil.rmtree(base, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    runs = [one_run(a.stores) for _ in range(a.runs)]

    def med(side, key):
        return statistics.median(r[side][key] for r in runs)

    res = {"bench": "replication", "stores": a.stores, "runs": a.runs, "k": 5,
           "cores": os.cpu_count(), "all_runs": runs}  # fmt: skip
    for side in ("floor", "swarm"):
        res[side] = {k: med(side, k) for k in ("p50_ms", "p99_ms", "stores_per_s_50_concurrent")}
    f, s = res["floor"], res["swarm"]
    res["latency_ratio_p50"] = s["p50_ms"] / f["p50_ms"]
    res["throughput_ratio"] = s["stores_per_s_50_concurrent"] / f["stores_per_s_50_concurrent"]
    print(json.dumps(res, indent=2))
    print(f"replication: a 1 KiB store acknowledged by all 5 swarm members takes p50 "
          f"{s['p50_ms']:.1f} ms / p99 {s['p99_ms']:.1f} ms ({res['latency_ratio_p50']:.1f}x a "
          f"lone node's {f['p50_ms']:.1f} ms); {s['stores_per_s_50_concurrent']:.0f} stores/s "
          f"with 50 in flight ({res['throughput_ratio']:.2f}x the lone node's "
          f"{f['stores_per_s_50_concurrent']:.0f}); {os.cpu_count()} cores, median of {a.runs}")


if __name__ == "__main__":
    main()
