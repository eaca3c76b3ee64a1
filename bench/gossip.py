"""Membership convergence: time for N real node processes on 127.0.0.1 to agree on the live set.

One seed node starts first; the other N-1 start at once (or ``--stagger`` seconds apart) with
the seed as their only bootstrap entry. "Converged" = every node's `info` reports the fingerprint of the full set of N ids (each
record gossiped AND reachability-tested by every node). Polled every 0.25 s over real TLS links.

floor:  the same measurement with 2 nodes in the same run (one exchange + one reachability
        test each way, on the same intervals): the ratio says what scale costs.
Also: startup time of the N processes (python + imports + store + TLS, which dominates on a
2-core box), total CPU the nodes used while converging, and median RSS.

Usage: .venv/bin/python bench/gossip.py [--nodes 50] [--runs 3] [--gossip-interval 1.0]
       [--test-interval 2.0] [--timeout 240]
Prints one JSON object and a one-line summary.
"""

import argparse
import hashlib
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
from nodes import cpu_s, launch_many, prepare, stop_all  # noqa: E402  (same directory)

from firmware.client import connect  # noqa: E402


def address(node) -> str:
    """A node as a bootstrap entry: HOST:PORT@NODEID."""
    return f"{node.host}:{node.port}@{node.node_id.hex()}"


async def fingerprints(nodes):
    out = [None] * len(nodes)

    async def one(i, n):
        try:
            async with connect(n.host, n.port, n.node_id, timeout=10) as c:
                out[i] = await c.info()
        except (ConnectionError, OSError):
            pass

    async with trio.open_nursery() as nursery:
        for i, n in enumerate(nodes):
            nursery.start_soon(one, i, n)
    return out


def cpu_seconds(nodes):
    total = 0.0
    for n in nodes:
        try:
            total += cpu_s(n.proc.pid)
        except OSError:  # a node that has exited
            pass
    return total


def one_run(n, net, timeout, stagger=0.0):
    base = tempfile.mkdtemp(prefix="hn-gossip-bench-")
    nodes = []
    try:
        t_launch = time.monotonic()
        seed = prepare(base, "n000", {"network": net})
        nodes.append(seed)
        seed.start(timeout=timeout)
        net_b = dict(net, bootstrap=[address(seed)])
        others = [prepare(base, f"n{i:03d}", {"network": net_b}) for i in range(1, n)]
        nodes += others
        launch_many(others, timeout=timeout, stagger=stagger)
        t_ready = time.monotonic()
        cpu0 = cpu_seconds(nodes)
        want = hashlib.blake2b(b"".join(sorted(x.node_id for x in nodes)),
                               digest_size=8).hexdigest()
        while True:
            infos = trio.run(fingerprints, nodes)
            agreeing = sum(bool(i) and i.get("live_set") == want for i in infos)
            if agreeing == n:
                break
            if time.monotonic() - t_ready > timeout:
                raise RuntimeError(f"not converged after {timeout} s: {agreeing}/{n} agree")
            time.sleep(0.25)
        t_conv = time.monotonic()
        rss = [psutil.Process(x.proc.pid).memory_info().rss / 2**20 for x in nodes]
        failed = sum(i.get("reachability_failed", 0) for i in infos)
        relayed = sum("relayed" in str(i.get("record_flags")) for i in infos)
        return {"startup_s": t_ready - t_launch, "converge_s": t_conv - t_ready,
                "launch_to_converge_s": t_conv - t_launch,
                "cpu_s_while_converging": cpu_seconds(nodes) - cpu0,
                "rss_mib_median": statistics.median(rss),
                "reachability_failures": failed, "relayed_at_end": relayed}  # fmt: skip
    finally:
        stop_all(nodes, kill=True)
        shutil.rmtree(base, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gossip-interval", type=float, default=1.0)
    ap.add_argument("--test-interval", type=float, default=2.0)
    ap.add_argument("--max-test-rate", type=float, default=5.0)
    ap.add_argument("--stagger", type=float, default=0.0,
                    help="seconds between launching two nodes (0: all at once)")
    ap.add_argument("--timeout", type=float, default=240.0)
    a = ap.parse_args()
    net = {"gossip_interval": a.gossip_interval, "test_interval": a.test_interval,
           "test_backoff_max": 4 * a.test_interval, "max_test_rate": a.max_test_rate}  # fmt: skip
    floors, runs = [], []
    for _ in range(a.runs):
        floors.append(one_run(2, net, a.timeout, a.stagger))
        runs.append(one_run(a.nodes, net, a.timeout, a.stagger))

    def med(rs, key):
        return statistics.median(r[key] for r in rs)

    keys = runs[0].keys()
    res = {"bench": "gossip", "nodes": a.nodes, "runs": a.runs, "cores": os.cpu_count(),
           "intervals": net, "stagger_s": a.stagger, "floor_2_nodes": {k: med(floors, k) for k in keys},
           "result": {k: med(runs, k) for k in keys}, "all_runs": runs}  # fmt: skip
    r, f = res["result"], res["floor_2_nodes"]
    res["converge_ratio_vs_2_nodes"] = r["converge_s"] / f["converge_s"]
    print(json.dumps(res, indent=2))
    print(f"gossip: {a.nodes} node processes converged on the same live set in "
          f"{r['converge_s']:.1f} s after all were up ({res['converge_ratio_vs_2_nodes']:.1f}x the "
          f"{f['converge_s']:.2f} s of 2 nodes; gossip {a.gossip_interval:g} s, tests "
          f"{a.test_interval:g} s); startup of all {r['startup_s']:.1f} s; "
          f"{r['cpu_s_while_converging']:.1f} CPU-s used converging; RSS median "
          f"{r['rss_mib_median']:.0f} MiB; {os.cpu_count()} cores, median of {a.runs} runs")


if __name__ == "__main__":
    main()
