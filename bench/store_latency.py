"""Adaptive group commit vs the fixed 50 ms window it replaced, side by side in one run.

Four figures, each for both committers (`batch_ms=0`: commit a lone write at once and group the
writes that queue meanwhile; `batch_ms=50`: hold each batch open 50 ms, the committer before):

- store, sequential: one putter awaiting each durable ack (1 KiB) -> ack latency p50 / p99
- store, burst: --messages 1 KiB messages from --putters concurrent putters, --bursts times
  (median) -> msg/s and CPU us per message (this process, all threads: steadier than wall time
  on a shared machine)
- node, sequential: a real node process (networking off, TLS on loopback), one client storing
  one message at a time -> ack latency p50 / p99
- node, burst: --clients links with --inflight stores each in flight -> stores/s

The fixed window is the floor: latency targets are absolute (p50 <= 5 ms), throughput is the
adaptive/window ratio (target >= 0.9). Every ack is durable (fsync'd WAL) in both modes.
Medians over --runs runs, the two modes alternating so drift in machine load hits both.

    .venv/bin/python bench/store_latency.py [--runs 5] [--seq 300] [--messages 20000]
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.store_throughput import make_messages  # noqa: E402
from firmware.client import connect  # noqa: E402
from firmware.store import MessageStore  # noqa: E402
from tests.conftest import NodeProcess  # noqa: E402

MODES = {"adaptive": 0, "window_50ms": 50}


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def store_sequential(path: Path, batch_ms: int, n: int) -> list[float]:
    store = MessageStore.open(path, quota_bytes=1 << 40, batch_ms=batch_ms,
                              clock_ms=lambda: 1_700_000_000_000)
    lat = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            for m in make_messages(n, seed=1):
                t0 = time.perf_counter()
                await store.put(m)
                lat.append((time.perf_counter() - t0) * 1000)
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    return lat


def cpu_s() -> float:
    """CPU seconds of this process, every thread (the committer's worker threads included)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def store_burst(path: Path, batch_ms: int, msgs, putters: int) -> tuple[float, float]:
    """(msg/s, CPU us per message)"""
    store = MessageStore.open(path, quota_bytes=1 << 40, batch_ms=batch_ms,
                              clock_ms=lambda: 1_700_000_000_000)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            it = iter(msgs)

            async def putter():
                for m in it:
                    await store.put(m)

            t0, c0 = time.perf_counter(), cpu_s()
            async with trio.open_nursery() as inner:
                for _ in range(putters):
                    inner.start_soon(putter)
            elapsed, cpu = time.perf_counter() - t0, cpu_s() - c0
            nursery.cancel_scope.cancel()
        assert store.stats()["count"] == len(msgs)
    finally:
        store.close()
    return len(msgs) / elapsed, cpu / len(msgs) * 1e6


async def node_run(work: Path, batch_ms: int, seq: int, clients: int, inflight: int,
                   burst: int) -> dict:
    node = NodeProcess(work, {"network": {"enabled": False}, "node": {"log_level": "warning"},
                              "store": {"batch_ms": batch_ms},
                              "limits": {"rate_per_sec": 1e6, "rate_burst": 10_000_000}},
                       name=f"node-{batch_ms}")
    node.start()
    try:
        recipient = bytes(range(32))
        data = os.urandom(1024)
        async with connect(node.host, node.port, node.node_id) as c:
            for _ in range(20):  # warm-up: TLS session, page cache, first commits
                await c.store(recipient, data)
            lat = []
            for _ in range(seq):
                t0 = time.perf_counter()
                await c.store(recipient, os.urandom(1024))
                lat.append((time.perf_counter() - t0) * 1000)
        per_link = burst // clients
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(_link_burst, node, recipient, per_link, inflight)
        rate = per_link * clients / (time.perf_counter() - t0)
    finally:
        node.stop()
    return {"lat": lat, "rate": rate}


async def _link_burst(node, recipient, n, inflight):
    async with connect(node.host, node.port, node.node_id) as c:
        left = iter(range(n))

        async def worker():
            for _ in left:
                await c.store(recipient, os.urandom(1024))

        async with trio.open_nursery() as nursery:
            for _ in range(inflight):
                nursery.start_soon(worker)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seq", type=int, default=300, help="sequential puts/stores per run")
    ap.add_argument("--messages", type=int, default=10_000, help="store burst size")
    ap.add_argument("--bursts", type=int, default=3, help="store bursts per mode per run")
    ap.add_argument("--putters", type=int, default=256)
    ap.add_argument("--clients", type=int, default=4, help="node burst: links")
    ap.add_argument("--inflight", type=int, default=16, help="node burst: stores in flight per link")
    ap.add_argument("--node-burst", type=int, default=4000, help="node burst: stores in all")
    ap.add_argument("--no-node", action="store_true", help="store-level figures only")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    res = {m: {"store_seq_p50": [], "store_seq_p99": [], "store_burst": [],
               "store_burst_cpu_us": [], "node_seq_p50": [],
               "node_seq_p99": [], "node_burst": []} for m in MODES}
    for run in range(args.runs):
        msgs = make_messages(args.messages, seed=100 + run)
        order = list(MODES) if run % 2 == 0 else list(reversed(MODES))
        for mode in order:
            batch_ms = MODES[mode]
            work = Path(tempfile.mkdtemp(prefix="store-lat-", dir=args.dir))
            try:
                lat = trio.run(store_sequential, work / "seq.sqlite3", batch_ms, args.seq)
                res[mode]["store_seq_p50"].append(pct(lat, 0.5))
                res[mode]["store_seq_p99"].append(pct(lat, 0.99))
                rates, cpus = [], []
                for i in range(args.bursts):  # several short bursts: less exposed to a spike
                    rate, cpu = trio.run(store_burst, work / f"burst{i}.sqlite3", batch_ms,
                                         msgs, args.putters)
                    rates.append(rate)
                    cpus.append(cpu)
                res[mode]["store_burst"].append(statistics.median(rates))
                res[mode]["store_burst_cpu_us"].append(statistics.median(cpus))
                if not args.no_node:
                    n = trio.run(node_run, work, batch_ms, args.seq, args.clients, args.inflight,
                                 args.node_burst)
                    res[mode]["node_seq_p50"].append(pct(n["lat"], 0.5))
                    res[mode]["node_seq_p99"].append(pct(n["lat"], 0.99))
                    res[mode]["node_burst"].append(n["rate"])
            finally:
                shutil.rmtree(work, ignore_errors=True)
    med = {m: {k: (round(statistics.median(v), 2) if v else None) for k, v in r.items()}
           for m, r in res.items()}
    a, w = med["adaptive"], med["window_50ms"]
    # paired: each run measured both modes back to back, so the per-run ratio cancels the drift
    ratio = {k: (round(statistics.median(x / y for x, y in zip(
        res["adaptive"][k], res["window_50ms"][k], strict=True)), 3) if res["adaptive"][k] else None)
        for k in ("store_burst", "store_burst_cpu_us", "node_burst")}
    out = {"bench": "store_latency", "runs": args.runs, "seq": args.seq,
           "messages": args.messages, "putters": args.putters, "clients": args.clients,
           "inflight": args.inflight, "node_burst_stores": args.node_burst,
           "median": med, "burst_ratio_adaptive_over_window_median_of_runs": ratio,
           "all": {m: {k: [round(x, 2) for x in v] for k, v in r.items()}
                   for m, r in res.items()},
           "load": os.getloadavg()}
    print(json.dumps(out))
    print(f"store_latency: store sequential ack p50 {a['store_seq_p50']} ms adaptive vs "
          f"{w['store_seq_p50']} ms window (p99 {a['store_seq_p99']} / {w['store_seq_p99']}); "
          f"store burst {a['store_burst']:.0f} vs {w['store_burst']:.0f} msg/s, ratio "
          f"{ratio['store_burst']}x (median of the runs' ratios; target >= 0.9); CPU per "
          f"message {a['store_burst_cpu_us']} vs {w['store_burst_cpu_us']} us, ratio "
          f"{ratio['store_burst_cpu_us']}x")
    if not args.no_node:
        print(f"store_latency: node over TLS sequential store p50 {a['node_seq_p50']} ms "
              f"adaptive vs {w['node_seq_p50']} ms window (target <= 5 ms; p99 "
              f"{a['node_seq_p99']} / {w['node_seq_p99']}); node burst {a['node_burst']:.0f} vs "
              f"{w['node_burst']:.0f} stores/s, ratio {ratio['node_burst']}x; median of {args.runs}, "
              f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
