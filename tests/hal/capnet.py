"""The monthly cap measured on a wire: a node in one network namespace, a traffic generator in
another, nftables counting every byte between them.

    [cap-<pid>-n] node 10.231.0.1 --veth-- 10.231.0.2 [cap-<pid>-g] tests/hal/cap_generator.py

The node runs with a cap of a few MB and a cycle of `cycle_s` seconds (`[bandwidth] cycle_s`);
the generator wants far more than the cap. nft in the node's namespace counts the IP bytes both
ways on the veth, and separately those whose time stamp falls inside one whole cycle
(`meta time`), so the cycle's edges are exact. GSO is off on both veth ends (`gso_max_segs 1`):
each packet nft counts is then one TCP segment with its own headers, as a physical line carries
it (with GSO, nft would count 64 KB super-packets with one header). Meanwhile `homenode status`
runs on the node's box over and over, by node.json (loopback) and by the box's own address.

Used by tests/hal/test_cap_netns.py (asserts) and bench/cap_wire.py (prints runs and medians).
Every process that talks to 10.231.0.0/24 runs inside the namespaces; nothing leaves them.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from tests.conftest import REPO, write_toml

P = f"cap-{os.getpid() % 100000}"
NS_NODE, NS_GEN = P + "-n", P + "-g"
VETH_NODE, VETH_GEN = f"cap{os.getpid() % 100000}n", f"cap{os.getpid() % 100000}g"
NODE_IP, GEN_IP = "10.231.0.1", "10.231.0.2"
TABLE = "cap_meter"


def why_not():
    """None when this machine can run it, else the reason (root, ip, nft, netns)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 nftables)"
    probe = P + "-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*cmd, ns=None, input=None, check=True, env=None):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    r = subprocess.run(full, capture_output=True, text=True, input=input, env=env)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(full)} failed: {r.stderr.strip()}")
    return r


def utc(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


NFT = """
table inet {table} {{
  counter all_in {{
  }}
  counter all_out {{
  }}
  counter cycle_in {{
  }}
  counter cycle_out {{
  }}
  chain in {{
    type filter hook input priority -300; policy accept;
    iifname "{veth}" counter name "all_in"
    iifname "{veth}" meta time >= "{start}" meta time < "{end}" counter name "cycle_in"
  }}
  chain out {{
    type filter hook output priority -300; policy accept;
    oifname "{veth}" counter name "all_out"
    oifname "{veth}" meta time >= "{start}" meta time < "{end}" counter name "cycle_out"
  }}
}}
"""


class CapNet:
    def __init__(self):
        self.made = []
        self.dir = tempfile.mkdtemp(prefix=P + "-")
        self.node = self.gen = None

    def build(self):
        for ns in (NS_NODE, NS_GEN):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            # no IPv6 link-local chatter (router solicitations, MLD) among the counted bytes
            sh("sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        sh("ip", "link", "add", VETH_NODE, "type", "veth", "peer", "name", VETH_GEN)
        for ns, dev, ip in ((NS_NODE, VETH_NODE, NODE_IP), (NS_GEN, VETH_GEN, GEN_IP)):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "link", "set", dev, "gso_max_segs", "1")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")

    def count_cycle(self, start, end):
        """nft counters: everything on the veth, and what is stamped inside [start, end)."""
        sh("nft", "-f", "-", ns=NS_NODE, env=dict(os.environ, TZ="UTC"),
           input=NFT.format(table=TABLE, veth=VETH_NODE, start=utc(start), end=utc(end)))

    def counters(self):
        out = json.loads(sh("nft", "-j", "list", "counters", "table", "inet", TABLE,
                            ns=NS_NODE).stdout)
        return {c["counter"]["name"]: c["counter"]["bytes"]
                for c in out["nftables"] if "counter" in c}

    def start_node(self, config):
        data = os.path.join(self.dir, "data")
        cfg = write_toml(os.path.join(self.dir, "homenode.toml"), config)
        notify_path = os.path.join(self.dir, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify_path)
        sock.settimeout(0.2)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, PYTHONUNBUFFERED="1")
        env.pop("JOURNAL_STREAM", None)
        self.node_log = open(os.path.join(self.dir, "node.log"), "wb")
        self.node = subprocess.Popen(
            ["ip", "netns", "exec", NS_NODE, sys.executable, "-m", "firmware.cli", "run",
             "--config", cfg, "--data-dir", data],
            stdout=self.node_log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + 30
        try:
            while True:
                if self.node.poll() is not None:
                    raise RuntimeError(f"node exited with {self.node.returncode}: "
                                       f"{self.node_output()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError("node not ready within 30 s: "
                                       + self.node_output()[-3000:])
                try:
                    if b"READY=1" in sock.recv(4096):
                        break
                except TimeoutError:
                    pass
        finally:
            sock.close()
        with open(os.path.join(data, "node.json")) as f:
            info = json.load(f)
        self.data_dir, self.port, self.node_id = data, int(info["port"]), info["node_id"]

    def node_output(self):
        try:
            with open(os.path.join(self.dir, "node.log"), "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def start_generator(self, links=3, inflight=4, size=30_000):
        self.gen = subprocess.Popen(
            ["ip", "netns", "exec", NS_GEN, sys.executable, "-m", "tests.hal.cap_generator",
             NODE_IP, str(self.port), self.node_id, "--links", str(links),
             "--inflight", str(inflight), "--size", str(size)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)

    def stop_generator(self):
        if self.gen is None:
            return {}
        self.gen.send_signal(signal.SIGTERM)
        try:
            out, err = self.gen.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.gen.kill()
            out, err = self.gen.communicate()
        self.gen = None
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {"error": err[-2000:]}

    def status(self, own_address=False, timeout=8.0):
        """`homenode status --json` on the node's box: (seconds taken, exit code, info or err)."""
        args = ["status", "--json", "--timeout", str(timeout), "--data-dir", self.data_dir]
        if own_address:
            args += ["--node", f"{NODE_IP}:{self.port}", "--node-id", self.node_id]
        t0 = time.monotonic()
        r = sh(sys.executable, "-m", "firmware.cli", *args, ns=NS_NODE, check=False)
        took = time.monotonic() - t0
        if r.returncode:
            return took, r.returncode, r.stderr.strip()[-300:]
        return took, 0, json.loads(r.stdout)

    def destroy(self):
        for proc in (self.gen, self.node):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if getattr(self, "node_log", None):
            self.node_log.close()
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def measure(cap_bytes=4_000_000, cycle_s=20, links=3, inflight=4, size=30_000, min_lead_s=3.0,
            log=None):
    """One whole cycle under a generator that wants far more than the cap. Returns the figures:
    wire bytes in the cycle (nft, both ways) against the cap, the node's own count, and every
    status probe made meanwhile."""
    say = log or (lambda *a: None)
    net = CapNet()
    try:
        net.build()
        net.start_node({
            "node": {"listen_host": "0.0.0.0", "listen_port": 0, "log_level": "info"},
            "network": {"enabled": False},
            "hal": {"backend": "sim"},
            "limits": {"rate_per_sec": 100_000.0, "rate_burst": 100_000},
            "bandwidth": {"monthly_cap_gb": cap_bytes / 1e9, "cycle_s": cycle_s,
                          "persist_interval": 0.5},
        })
        now = time.time()
        start = (int(now + min_lead_s) // cycle_s + 1) * cycle_s  # the next whole cycle
        end = start + cycle_s
        net.count_cycle(start, end)
        net.start_generator(links, inflight, size)  # under load before the cycle begins
        say(f"node up on {NODE_IP}:{net.port}; cycle {utc(start)} .. {utc(end)} UTC")

        probes = []

        def probe_loop():
            i = 0
            while time.time() < end + 1.0:
                took, rc, info = net.status(own_address=i % 2 == 1)
                probes.append({"at": time.time(), "took_s": round(took, 2), "rc": rc,
                               "own_address": i % 2 == 1, "info": info})
                i += 1
                time.sleep(0.5)

        prober = threading.Thread(target=probe_loop, daemon=True)
        prober.start()
        while time.time() < end + 1.5:  # 1.5 s: the last packets of the cycle have landed
            time.sleep(0.2)
        counters = net.counters()
        prober.join(30)
        gen = net.stop_generator()
        time.sleep(2.0)  # links closed, the node's last sweep done: compare whole counts
        totals = net.counters()
        _, rc, after = net.status()
        bw = after["device"]["bandwidth"] if rc == 0 else {}
        counted = bw.get("up_bytes", 0) + bw.get("down_bytes", 0)
        in_cycle = [p for p in probes if p["rc"] == 0
                    and p["info"]["device"]["bandwidth"]["cycle_end_ms"] == end * 1000]
        last = in_cycle[-1]["info"]["device"]["bandwidth"] if in_cycle else {}
        wire = counters["cycle_in"] + counters["cycle_out"]
        return {
            "cap_bytes": cap_bytes, "cycle_s": cycle_s, "wire_bytes": wire,
            "wire_in": counters["cycle_in"], "wire_out": counters["cycle_out"],
            "wire_per_cap": wire / cap_bytes,
            "node_used_bytes_last_status": last.get("used_bytes"),
            "node_reserve_bytes_last_status": last.get("reserve_bytes"),
            "wire_all_in": totals["all_in"], "wire_all_out": totals["all_out"],
            "wire_all_bytes": totals["all_in"] + totals["all_out"], "node_counted_bytes": counted,
            "wire_per_counted": (totals["all_in"] + totals["all_out"]) / counted if counted else None,
            "node_bandwidth_after": bw, "probes": probes, "generator": gen,
        }
    except BaseException:
        sys.stderr.write(net.node_output()[-4000:])
        raise
    finally:
        net.destroy()
