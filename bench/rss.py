"""Daemon memory (RSS): idle and under load, vs a process that only imports the libraries.

  floor   python -c "import trio, nacl..., cbor2, psutil, sqlite3" (the design brief's 29 MiB)
  idle    `homenode run` as bench/rpc_cpu.py starts it (no request rate limit, up to 1000
          connections, the rest default), 2 s after READY=1
  loaded  peak RSS while 50 clients store 1 KiB messages and read their mailboxes back
          (40 storing, 10 retrieving up to 100 messages per call) for --seconds
  after   RSS 2 s after the load stopped

Targets: idle <= 1.3x floor, loaded <= 64 MiB. Medians of --runs rounds.

    .venv/bin/python bench/rss.py [--runs 3] [--seconds 8] [--clients 50]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodes import node_addr  # noqa: E402  (same directory)
from rpc_cpu import start_daemon  # noqa: E402

MIB = 1024 * 1024
FLOOR_CODE = ("import trio, nacl.signing, nacl.public, cbor2, psutil, sqlite3, sys; "
              "print('ready', flush=True); sys.stdin.read()")


def rss(pid) -> int:
    return psutil.Process(pid).memory_info().rss


def measure_floor() -> int:
    proc = subprocess.Popen([sys.executable, "-c", FLOOR_CODE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.5)
        return rss(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait(10)


async def load_and_sample(host, port, node_id, pid, clients, seconds):
    from firmware.client import connect
    from firmware.identity import Identity

    peak = 0
    counts = {"stored": 0, "retrieved": 0}
    owners = [Identity(bytes([i + 1]) * 32) for i in range(10)]

    async def storer(i):
        owner = owners[i % len(owners)]
        async with connect(host, port, node_id) as c:
            j = 0
            while True:
                j += 1
                await c.store(owner.node_id, os.urandom(1000) + b"%06d%06d" % (i, j))
                counts["stored"] += 1

    async def reader(i):
        owner = owners[(i // 5) % len(owners)]  # readers are i = 4, 9, 14, ...: cover them all
        async with connect(host, port, node_id) as c:
            after = None
            while True:
                msgs, _more = await c.retrieve(owner.signing_key, after=after, max_count=100)
                counts["retrieved"] += len(msgs)
                after = msgs[-1].hash if msgs and _more else None
                if not msgs:
                    await trio.sleep(0.05)

    async with trio.open_nursery() as n:
        for i in range(clients):
            n.start_soon(reader if i % 5 == 4 else storer, i)
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            peak = max(peak, rss(pid))
            await trio.sleep(0.1)
        n.cancel_scope.cancel()
    return peak, counts


def measure_node(tmp, a):
    node = start_daemon(tempfile.mkdtemp(dir=tmp))
    pid = node.proc.pid
    try:
        time.sleep(2)
        idle = rss(pid)
        peak, counts = trio.run(lambda: load_and_sample(*node_addr(node), pid, a.clients,
                                                        a.seconds))
        time.sleep(2)
        after = rss(pid)
    finally:
        node.stop()
    return {"idle": idle, "loaded_peak": peak, "after": after, **counts}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=50)
    a = p.parse_args()
    floors, nodes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        for _ in range(a.runs):
            floors.append(measure_floor())
            nodes.append(measure_node(tmp, a))
    floor = statistics.median(floors)
    med = {k: statistics.median(n[k] for n in nodes) for k in ("idle", "loaded_peak", "after")}
    out = {
        "runs": a.runs, "clients": a.clients, "seconds": a.seconds,
        "floor_mib": round(floor / MIB, 1),
        "idle_mib": round(med["idle"] / MIB, 1),
        "loaded_peak_mib": round(med["loaded_peak"] / MIB, 1),
        "after_load_mib": round(med["after"] / MIB, 1),
        "ratio_idle_vs_floor": round(med["idle"] / floor, 2),
        "targets": {"ratio_idle_vs_floor": 1.3, "loaded_peak_mib": 64},
        "samples": {"floor": floors, "node": nodes},
    }
    print(json.dumps(out, indent=2))
    print(f"rss (median of {a.runs}): floor {out['floor_mib']} MiB; node idle "
          f"{out['idle_mib']} MiB ({out['ratio_idle_vs_floor']}x, target <= 1.3x); loaded peak "
          f"{out['loaded_peak_mib']} MiB (target <= 64) with {a.clients} clients; "
          f"{out['after_load_mib']} MiB after")


if __name__ == "__main__":
    main()
