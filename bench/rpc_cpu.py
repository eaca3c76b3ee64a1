"""Server CPU per RPC: the real homenode daemon vs bare CBOR-framed trio echo servers.

Each server runs as its own process; a trio load generator in this process keeps 50 client
connections busy (each one request at a time, so 50 in flight) and we read the server's CPU time
(user + system, all threads, from /proc/<pid>/stat via psutil) over a measured window:
CPU per request = delta CPU / requests answered in the window.

  node_info   the daemon answering `info` (TLS, framing, safe CBOR, schema, rate limit)
  node_store  the daemon answering 200-byte ns-0 `store`s (plus hashing and SQLite group commits)
  echo_tls    floor: trio + the same TLS 1.3 (the node's own TLS driver, firmware/link/tlsstream)
              + length-prefixed cbor2, answering every request
              with the info map the real node returned (captured at the start of the run), so
              both sides encode and encrypt the same bytes
  echo_plain  floor without TLS (the design brief's "CBOR-framed trio request floor")

The ratio that the target (<= 1.5x) applies to is node_info / echo_tls: the same transport and
work a node cannot avoid. node_info / echo_plain is printed too. Medians of --runs rounds,
servers interleaved within each round (the machine is shared and noisy).

    .venv/bin/python bench/rpc_cpu.py [--runs 5] [--seconds 3] [--clients 50]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodes import launch, node_addr  # noqa: E402  (same directory)

BENCH_LIMITS = {"max_connections": 1000}  # (and no request rate limit: nodes.launch's default)


# ------------------------------------------------------------------------ processes


def start_daemon(tmp: str):
    """`homenode run` (tests/conftest.NodeProcess through bench/nodes.py), started."""
    return launch(tmp, "node", {"limits": BENCH_LIMITS})


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_echo(tmp: str, tls: bool, reply_file: str) -> tuple[subprocess.Popen, str, int, bytes]:
    """The floor server, this same file run with --serve-echo."""
    port_file = os.path.join(tmp, f"echo-{tls}.port")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-echo",
                             port_file, "--reply", reply_file, "--tls" if tls else "--plain"],
                            cwd=tmp)
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file) or not open(port_file).read().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("echo server did not start")
        time.sleep(0.05)
    port, node_id = open(port_file).read().split()
    return proc, "127.0.0.1", int(port), bytes.fromhex(node_id)


# ------------------------------------------------------------------------ the floor server


def serve_echo(port_file: str, tls: bool, reply_file: str) -> None:
    """Bare CBOR-framed trio server: read frames, cbor2.loads, answer a fixed result map."""
    import cbor2

    from firmware.identity import Identity
    from firmware.link import server_ssl_context
    from firmware.link.tlsstream import TlsStream

    ident = Identity(b"\x11" * 32)
    ctx = server_ssl_context(ident) if tls else None
    with open(reply_file, "rb") as f:
        ok_result = cbor2.loads(f.read())
    ok_result["node_id"] = ident.node_id

    async def handle(stream):
        buf = bytearray()
        try:
            if ctx is not None:  # the TLS driver the node's listener uses
                stream = TlsStream(stream, ctx, server_side=True)
                await stream.do_handshake()
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
                out = []
                while len(buf) >= 4:
                    n = int.from_bytes(buf[:4], "big")
                    if len(buf) < 4 + n:
                        break
                    req = cbor2.loads(bytes(buf[4:4 + n]))
                    del buf[:4 + n]
                    body = cbor2.dumps({"v": 2, "id": req["id"], "ok": ok_result})
                    out.append(len(body).to_bytes(4, "big") + body)
                if out:
                    await stream.send_all(b"".join(out))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def main():
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        tmp = port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port} {ident.node_id.hex()}\n")
        os.replace(tmp, port_file)
        await trio.serve_listeners(handle, listeners)

    trio.run(main)


# ------------------------------------------------------------------------ load generator


async def load(host, port, node_id, *, op, clients, seconds, warmup, pid, tls=True):
    """Keep `clients` links busy; return (requests in window, server CPU seconds in window)."""
    from firmware.client import NodeClient
    from firmware.identity import Identity
    from firmware.link import Dialer, open_link

    proc = psutil.Process(pid)
    count = 0
    counting = False
    rcpt = Identity(b"\x22" * 32).node_id

    async def one_client(i):
        nonlocal count
        if tls:
            stream = await Dialer().open(host, port, node_id)
        else:
            stream = await trio.open_tcp_stream(host, port)
        async with open_link(stream) as link:
            client = NodeClient(link)
            j = 0
            while True:
                if op == "info":
                    await client.info()
                else:
                    j += 1
                    await client.store(rcpt, b"%08d-%08d" % (i, j) + b"\x00" * 183)
                if counting:
                    count += 1

    async with trio.open_nursery() as n:
        for i in range(clients):
            n.start_soon(one_client, i)
        await trio.sleep(warmup)
        cpu0 = sum(proc.cpu_times()[:2])
        counting = True
        await trio.sleep(seconds)
        counting = False
        cpu1 = sum(proc.cpu_times()[:2])
        done = count
        n.cancel_scope.cancel()
    return done, cpu1 - cpu0


def capture_info(tmp) -> str:
    """The node's real `info` result, CBOR-encoded to a file, for the echo floor to send."""
    import cbor2

    from firmware.client import connect

    node = start_daemon(tempfile.mkdtemp(dir=tmp))

    async def get():
        async with connect(*node_addr(node)) as c:
            return await c.info()

    try:
        info = trio.run(get)
    finally:
        node.stop()
    path = os.path.join(tmp, "info.cbor")
    with open(path, "wb") as f:
        f.write(cbor2.dumps(info))
    return path


def measure(kind, tmp, a, reply_file):
    sub = tempfile.mkdtemp(dir=tmp)
    if kind.startswith("node"):
        node = start_daemon(sub)
        proc, (host, port, nid) = node.proc, node_addr(node)
        op, tls, stop_it = ("info" if kind == "node_info" else "store"), True, node.stop
    else:
        tls = kind == "echo_tls"
        proc, host, port, nid = start_echo(sub, tls, reply_file)
        op, stop_it = "info", lambda: stop(proc)
    try:
        n, cpu = trio.run(lambda: load(host, port, nid, op=op, clients=a.clients,
                                       seconds=a.seconds, warmup=a.warmup, pid=proc.pid,
                                       tls=tls))
    finally:
        stop_it()
    return {"requests": n, "server_cpu_s": round(cpu, 3), "rps": round(n / a.seconds, 1),
            "cpu_us_per_request": round(cpu / n * 1e6, 2) if n else None}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--serve-echo", metavar="PORT_FILE")
    p.add_argument("--reply", metavar="CBOR_FILE")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--plain", action="store_true")
    a = p.parse_args()
    if a.serve_echo:
        return serve_echo(a.serve_echo, a.tls, a.reply)

    kinds = ["echo_plain", "echo_tls", "node_info", "node_store"]
    samples = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp:
        reply_file = capture_info(tmp)
        with open(reply_file, "rb") as f:
            reply_bytes = len(f.read())
        for _ in range(a.runs):
            for k in kinds:
                samples[k].append(measure(k, tmp, a, reply_file))
    med = {k: statistics.median(s["cpu_us_per_request"] for s in v) for k, v in samples.items()}
    out = {
        "clients": a.clients, "seconds": a.seconds, "runs": a.runs,
        "info_result_bytes": reply_bytes,
        "cpu_us_per_request_median": {k: round(v, 1) for k, v in med.items()},
        "rps_median": {k: statistics.median(s["rps"] for s in v) for k, v in samples.items()},
        "ratio_node_info_vs_echo_tls": round(med["node_info"] / med["echo_tls"], 2),
        "ratio_node_info_vs_echo_plain": round(med["node_info"] / med["echo_plain"], 2),
        "ratio_node_store_vs_echo_tls": round(med["node_store"] / med["echo_tls"], 2),
        "target_ratio": 1.5,
        "samples": samples,
    }
    print(json.dumps(out, indent=2))
    print(f"rpc_cpu (median of {a.runs}, {a.clients} clients): node info "
          f"{med['node_info']:.0f} us/req vs echo over TLS {med['echo_tls']:.0f} us "
          f"({out['ratio_node_info_vs_echo_tls']}x, target <= 1.5x), vs plain echo "
          f"{med['echo_plain']:.0f} us ({out['ratio_node_info_vs_echo_plain']}x); "
          f"node 200-byte store {med['node_store']:.0f} us/req "
          f"({out['ratio_node_store_vs_echo_tls']}x TLS echo)")


if __name__ == "__main__":
    main()
