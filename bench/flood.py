"""Connection floods: is a normal client still served while strangers tie up connections?

A real node process (tests/conftest.NodeProcess, default [limits]) on 127.0.0.1. The attacker
(bench/flood_attacker.py, its own process) holds `--conns` connections from other source
addresses, re-opening each as soon as the node drops it, at most `--attack-rate` new ones per
second: TCP-only silence, half a TLS ClientHello then silence (half-open handshakes), re-open
loops that never finish TLS, TLS then silence, and frame headers announcing 60,000 bytes
followed by one byte every 3 s. The attacker runs at `--attacker-nice` (10): on a real network
its CPU is another machine's, here it would otherwise take this 2-core box's from the node.
Scenarios:

  one_address     every attacker connection from 127.0.0.2 (the issue's case)
  many_addresses  from `--addresses` addresses spread over `--subnets` /24s (127.0.2.x ...)

Meanwhile a normal client from another network (127.0.1.1: not a trusted address, not the
attacker's /24) sends `--rate` requests per second, open-loop (each on its own schedule, late
answers do not slow the next request): `info` and 1 KiB `store`, half on one kept-open link,
half on fresh TCP + TLS links. A request counts as served if its answer came within 1 s
of its scheduled start (the fresh link's connect and handshake included).

floor:   the same client, same node, same run, no attack (the first phase of every run).
Printed per phase (medians over `--runs`): share served within 1 s (target >= 99 %), latency
p50/p90/p99/max, node RSS peak during and after (VmRSS from /proc; target <= 64 MiB), node CPU,
and the attacker's connections as the node counted them (accepted, refused, shed, closed by a
deadline). Then `--churn` half-open and re-opened connections from 2,048 addresses in 64 /24s
as fast as they go, and the node's RSS after them (the issue saw 110-120 MiB after ~60,000).

    .venv/bin/python bench/flood.py [--runs 3] [--seconds 20] [--conns 1000] [--churn 60000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodes import cpu_s, launch, node_addr, run_delay_s  # noqa: E402

from firmware.client import NodeClient, connect  # noqa: E402
from firmware.link import check_pin, client_ssl_context, open_link  # noqa: E402

ATTACKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flood_attacker.py")
CLIENT_SOURCE = "127.0.1.1"
SERVED_WITHIN_S = 1.0
REQUEST_TIMEOUT_S = 5.0
MIB = 1 << 20
MODES = ("silent_tcp", "half_open", "reopen", "tls_silent", "trickle")
NODE_COUNTERS = ("accepted", "refused", "shed", "refused_rate", "refused_share", "refused_full",
                 "closed_handshake", "handshake_failed", "closed_slow_frame", "closed_idle",
                 "closed_stalled", "bad_frames")


# -- the node, seen from outside -----------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def node_info(addr) -> dict:
    """The node's `info` from the box itself (127.0.0.1 is trusted: never refused)."""
    async with connect(*addr, timeout=10) as c:
        return await c.info()


class Sampler:
    """RSS every 0.1 s and the listener's table every 0.5 s, while a phase runs."""

    def __init__(self, pid, addr):
        self.pid, self.addr = pid, addr
        self.rss: list[int] = []
        self.table_max = {"connections": 0, "handshaking": 0, "frame_buffer_bytes": 0}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        async with trio.open_nursery() as n:
            n.start_soon(self._table)
            while True:
                self.rss.append(rss_bytes(self.pid))
                await trio.sleep(0.1)

    async def _table(self):
        while True:
            try:
                with trio.move_on_after(2):
                    lis = (await node_info(self.addr))["listener"]
                    for k in self.table_max:
                        self.table_max[k] = max(self.table_max[k], lis.get(k, 0))
            except (ConnectionError, OSError):
                pass
            await trio.sleep(0.5)


# -- the normal client ---------------------------------------------------------------------------


async def open_pinned(host, port, node_id, times=None):
    tcp = await trio.open_tcp_stream(host, port, local_address=CLIENT_SOURCE)
    if times is not None:
        times["connected"] = trio.current_time()
    tls = trio.SSLStream(tcp, client_ssl_context())
    try:
        await tls.do_handshake()
        if times is not None:
            times["handshaken"] = trio.current_time()
        check_pin(tls, node_id, f"{host}:{port}")
    except BaseException:
        await trio.aclose_forcefully(tls)
        raise
    return tls


class KeptLink:
    """One link kept open between requests; re-opened when the node drops it."""

    def __init__(self, addr):
        self.addr = addr
        self.client: NodeClient | None = None
        self.ready = trio.Event()
        self.broken = trio.Event()
        self.reopened = 0

    async def run(self):
        while True:
            try:
                async with open_link(await open_pinned(*self.addr)) as link:
                    self.client = NodeClient(link)
                    self.ready.set()
                    await self.broken.wait()
            except (ConnectionError, OSError, trio.BrokenResourceError):
                await trio.sleep(0.05)
            self.client, self.ready, self.broken = None, trio.Event(), trio.Event()
            self.reopened += 1

    async def call(self, op):
        await self.ready.wait()
        client, broken = self.client, self.broken
        try:
            return await op(client)
        except (ConnectionError, OSError, trio.BrokenResourceError):
            broken.set()
            raise


async def call_fresh(addr, op, times):
    async with open_link(await open_pinned(*addr, times=times)) as link:
        return await op(NodeClient(link))


RECIPIENT = bytes(range(32))
KINDS = [("info", "kept"), ("store", "kept"), ("info", "fresh"), ("store", "fresh")]


def operation(kind):
    if kind == "info":
        return lambda c: c.info()
    return lambda c: c.store(RECIPIENT, os.urandom(1024), ttl_ms=600_000)


async def normal_client(addr, rate: float, seconds: float) -> list[dict]:
    """Requests at a steady `rate` (open loop) for `seconds`; one record per request."""
    records = []
    kept = KeptLink(addr)

    async def one(i, at):
        kind, how = KINDS[i % len(KINDS)]
        rec = {"kind": kind, "link": how, "latency_s": None, "error": None}
        records.append(rec)
        times = {}
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                if how == "kept":
                    await kept.call(operation(kind))
                else:
                    await call_fresh(addr, operation(kind), times)
            rec["latency_s"] = trio.current_time() - at
            if how == "fresh":
                rec["connect_s"] = times["connected"] - at
                rec["tls_s"] = times["handshaken"] - times["connected"]
        except trio.TooSlowError:
            rec["error"] = "timeout"
        except Exception as e:  # noqa: BLE001 - every failure is a figure here
            rec["error"] = type(e).__name__

    async with trio.open_nursery() as n:
        n.start_soon(kept.run)
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            await kept.ready.wait()  # (the first kept link opens before the clock starts)
        async with trio.open_nursery() as reqs:
            t0 = trio.current_time()
            for i in range(int(seconds * rate)):
                at = t0 + i / rate
                await trio.sleep_until(at)
                reqs.start_soon(one, i, at)
        n.cancel_scope.cancel()
    return records


def summarize(records) -> dict:
    lat = sorted(r["latency_s"] for r in records if r["latency_s"] is not None)
    served = sum(1 for x in lat if x <= SERVED_WITHIN_S)
    errors = {}
    for r in records:
        if r["error"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e3, 1) if lat else None

    out = {"requests": len(records), "served_1s_pct": round(100 * served / len(records), 2),
           "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
           "max_ms": round(lat[-1] * 1e3, 1) if lat else None, "errors": errors}
    for how in ("kept", "fresh"):
        sub = [r for r in records if r["link"] == how]
        ok = sum(1 for r in sub if r["latency_s"] is not None and r["latency_s"] <= 1)
        out[f"served_1s_pct_{how}"] = round(100 * ok / len(sub), 2) if sub else None
    for part in ("connect_s", "tls_s"):  # where a fresh link's time went
        xs = sorted(r[part] for r in records if part in r)
        if xs:
            out[part.replace("_s", "_ms")] = {
                "p50": round(xs[len(xs) // 2] * 1e3, 1),
                "p99": round(xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1e3, 1),
                "max": round(xs[-1] * 1e3, 1)}
    return out


def listen_drops() -> int:
    """SYNs the kernel dropped because a listen queue was full (whole machine: TcpExt)."""
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))["ListenDrops"])


# -- phases --------------------------------------------------------------------------------------


def attacker_spec(addr, a, scenario) -> dict:
    per = a.conns // len(MODES)
    slots = {m: per for m in MODES}
    if scenario == "one_address":
        sources = ["127.0.0.2"]
    else:
        sources = many_sources(a.addresses, a.subnets, first_subnet=2)
    return {"host": addr[0], "port": addr[1], "sources": sources, "slots": slots,
            "rate": a.attack_rate, "nice": a.attacker_nice}


def many_sources(n, subnets, first_subnet):
    per = max(1, -(-n // subnets))
    return [f"127.0.{first_subnet + i // per}.{2 + i % per}" for i in range(n)]


class AttackerProcess:
    def __init__(self, spec):
        self.proc = subprocess.Popen([sys.executable, ATTACKER, json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def stop(self) -> dict:
        out, _ = self.proc.communicate(timeout=60)  # (closes its stdin: the signal to stop)
        return json.loads(out.decode().strip().splitlines()[-1])

    def wait(self, timeout) -> dict:
        """Until it stops on its own (its `limit`)."""
        self.proc.wait(timeout)
        return self.stop()


def counters_delta(before, after) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in NODE_COUNTERS}


async def phase(node, addr, a, spec=None) -> dict:
    """One measured phase: an optional attack, warm-up, the normal client, RSS throughout."""
    pid = node.proc.pid
    before = (await node_info(addr))["listener"]
    sampler = Sampler(pid, addr)
    attacker = AttackerProcess(spec) if spec else None
    cpu0, t0, drops0 = cpu_s(pid), time.monotonic(), listen_drops()
    wait0 = run_delay_s(pid)
    try:
        async with trio.open_nursery() as n:
            await n.start(sampler.run)
            if attacker:
                await trio.sleep(a.warmup)
            records = await normal_client(addr, a.rate, a.seconds)
            n.cancel_scope.cancel()
    finally:
        attack = attacker.stop() if attacker else None
    took = time.monotonic() - t0
    cpu = (cpu_s(pid) - cpu0) / took
    waited = (run_delay_s(pid) - wait0) / took
    after = (await node_info(addr))["listener"]
    res = {**summarize(records), "rss_peak_mib": round(max(sampler.rss) / MIB, 1),
           "node_cpu_pct": round(100 * cpu, 1), "node_waiting_for_cpu_pct": round(100 * waited, 1),
           "table_max": sampler.table_max, "listener": after,
           "node_counters": counters_delta(before, after),
           "listen_drops": listen_drops() - drops0}
    if attack:
        res["attacker"] = attack
        # the attacker's connections as the node saw them (the client's fresh links taken out)
        fresh = sum(1 for r in records if r["link"] == "fresh")
        res["attacker_accepted"] = res["node_counters"]["accepted"] - fresh
        res["attacker_refused"] = res["node_counters"]["refused"]
        res["attacker_shed"] = res["node_counters"]["shed"]
        res["attacker_conns_per_s"] = round(attack["opened"] / attack["seconds"])
        res["attacker_cpu_pct"] = round(100 * attack["cpu_s"] / attack["seconds"], 1)
    return res


async def settle_rss(pid, seconds) -> float:
    await trio.sleep(seconds)
    return round(rss_bytes(pid) / MIB, 1)


def churn(node, addr, a) -> dict:
    """`a.churn` half-open / re-opened connections from 2,048 addresses in 64 /24s (so that
    the node's per-address and per-network accept rates let a good part of them in), then
    RSS."""
    pid = node.proc.pid
    before = trio.run(node_info, addr)["listener"]
    rss0 = rss_bytes(pid)
    half = 500
    spec = {"host": addr[0], "port": addr[1], "sources": many_sources(2048, 64, first_subnet=16),
            "slots": {"half_open": half, "reopen": half}, "rate": a.churn_rate,
            "limit": a.churn, "nice": a.attacker_nice}
    t0 = time.monotonic()
    attack = AttackerProcess(spec).wait(timeout=max(600, 10 * a.churn / a.churn_rate))
    took = time.monotonic() - t0
    rss_after = trio.run(settle_rss, pid, a.settle)
    after = trio.run(node_info, addr)["listener"]
    return {"connections_opened": attack["opened"], "seconds": round(took, 1),
            "node_counters": counters_delta(before, after),
            "rss_before_mib": round(rss0 / MIB, 1), "rss_after_mib": rss_after}


def one_run(a, tmp, i) -> dict:
    node = launch(tmp, f"target{i}", rate_limit=True)
    addr = node_addr(node)
    try:
        out = {"rss_idle_mib": round(rss_bytes(node.proc.pid) / MIB, 1)}
        out["floor"] = trio.run(phase, node, addr, a)
        for scenario in a.scenarios:
            out[scenario] = trio.run(phase, node, addr, a, attacker_spec(addr, a, scenario))
        out["rss_after_mib"] = trio.run(settle_rss, node.proc.pid, a.settle)
        if a.churn:
            out["churn"] = churn(node, addr, a)
        return out
    finally:
        node.stop()


def med(runs, *path):
    xs = []
    for r in runs:
        for p in path:
            r = r.get(p) if isinstance(r, dict) else None
        if r is not None:
            xs.append(r)
    return statistics.median(xs) if xs else None


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="client time per phase")
    ap.add_argument("--warmup", type=float, default=5.0, help="attack before the client starts")
    ap.add_argument("--rate", type=float, default=20.0, help="normal requests per second")
    ap.add_argument("--conns", type=int, default=1000, help="connections the attacker holds")
    ap.add_argument("--attack-rate", type=float, default=1000.0,
                    help="new attacker connections per second, at most")
    ap.add_argument("--addresses", type=int, default=200, help="(many_addresses)")
    ap.add_argument("--subnets", type=int, default=4, help="(many_addresses) /24s")
    ap.add_argument("--scenarios", default="one_address,many_addresses")
    ap.add_argument("--attacker-nice", type=int, default=10,
                    help="the attacker's niceness: on a real network its CPU is not the "
                         "node's box's (0: compete for this box's cores as an equal)")
    ap.add_argument("--churn", type=int, default=60_000, help="0: skip")
    ap.add_argument("--churn-rate", type=float, default=5000.0)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds before RSS 'after'")
    a = ap.parse_args()
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        runs = [one_run(a, tmp, i) for i in range(a.runs)]
    phases = ["floor", *a.scenarios]
    res = {"bench": "flood", "runs": a.runs, "seconds": a.seconds, "rate": a.rate,
           "conns": a.conns, "attack_rate": a.attack_rate, "cores": os.cpu_count(),
           "load_before": load_before, "load_after": load_average(), "all_runs": runs,
           "targets": {"served_1s_pct": 99.0, "rss_mib": 64}}
    keys = ("served_1s_pct", "served_1s_pct_kept", "served_1s_pct_fresh", "p50_ms", "p90_ms",
            "p99_ms", "max_ms", "rss_peak_mib", "node_cpu_pct", "node_waiting_for_cpu_pct",
            "attacker_accepted", "attacker_refused", "attacker_shed", "attacker_conns_per_s",
            "attacker_cpu_pct")
    res["median"] = {p: {k: med(runs, p, k) for k in keys} for p in phases}
    res["median"]["rss_idle_mib"] = med(runs, "rss_idle_mib")
    res["median"]["rss_after_mib"] = med(runs, "rss_after_mib")
    if a.churn:
        res["median"]["churn"] = {k: med(runs, "churn", k) for k in
                                  ("connections_opened", "seconds", "rss_before_mib",
                                   "rss_after_mib")}
    print(json.dumps(res, indent=2))
    m = res["median"]
    f = m["floor"]
    print(f"flood (median of {a.runs}; {os.cpu_count()} cores; load {load_before} -> "
          f"{res['load_after']}): normal client {a.rate:g} req/s from {CLIENT_SOURCE}")
    for p in phases:
        x = m[p]
        line = (f"  {p:15s} served within 1 s {x['served_1s_pct']} % (kept {x['served_1s_pct_kept']}"
                f" %, fresh {x['served_1s_pct_fresh']} %); p50 {x['p50_ms']} ms p90 {x['p90_ms']}"
                f" ms p99 {x['p99_ms']} ms max {x['max_ms']} ms; RSS peak {x['rss_peak_mib']} MiB;"
                f" node CPU {x['node_cpu_pct']} %")
        line += f" (waiting for a CPU {x['node_waiting_for_cpu_pct']} %)"
        if p != "floor":
            line += (f"; attacker {x['attacker_conns_per_s']} conns/s (CPU "
                     f"{x['attacker_cpu_pct']} % at nice {a.attacker_nice}): the node accepted "
                     f"{x['attacker_accepted']}, refused {x['attacker_refused']}, shed "
                     f"{x['attacker_shed']}; p50 {x['p50_ms'] / f['p50_ms']:.2f}x the floor's")
        print(line)
    print(f"  RSS idle {m['rss_idle_mib']} MiB, after the attacks {m['rss_after_mib']} MiB "
          f"(target <= 64)")
    if a.churn:
        c = m["churn"]
        print(f"  churn: {c['connections_opened']:.0f} half-open/re-opened connections in "
              f"{c['seconds']} s; RSS {c['rss_before_mib']} -> {c['rss_after_mib']} MiB "
              f"{a.settle:g} s after")


if __name__ == "__main__":
    main()
