"""NAT and reachability in real network namespaces, against a real IGD (Debian's miniupnpd).

Topology (made and removed by the fixture; every name starts with a per-run prefix)::

    [home ns] 192.168.77.10 --veth-- 192.168.77.1 [router ns] 192.0.1.1 --veth--+
                                       nftables masquerade,                     |
                                       miniupnpd (UPnP-IGD + NAT-PMP)      [inet ns] bridge
                                                                            192.0.1.2: 3 seed nodes
    [pub ns] 192.0.1.3 --veth-------------------------------------------------------+

192.0.1.0/24 is used because miniupnpd refuses to map when its external address is private or
reserved (RFC 1918, TEST-NETs, 198.18/15, ...). These addresses exist only inside the test's own
namespaces, which have no link to the host's network; nothing in the host namespace ever sends to
them (every process that talks to them runs under ``ip netns exec``).
"""

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import REPO, NodeProcess
from tests.tools import require_tools

pytestmark = [pytest.mark.netns, pytest.mark.slow]

P = f"hn{os.getpid() % 100000}"
NS_HOME, NS_ROUTER, NS_INET, NS_PUB, NS_ISO = P + "h", P + "r", P + "i", P + "p", P + "x"
WAN_IP, SEED_IP, PUB_IP, LAN_GW, HOME_IP = "192.0.1.1", "192.0.1.2", "192.0.1.3", "192.168.77.1", \
    "192.168.77.10"

FAST_NET = {"gossip_interval": 0.5, "test_interval": 1.0, "test_backoff_max": 2.0,
            "test_timeout": 3.0, "anti_entropy_interval": 2.0, "link_timeout": 3.0}


def _why_not():
    if os.geteuid() != 0:
        return "needs root (network namespaces, nftables, miniupnpd)"
    require_tools("ip", "nft", "miniupnpd", package="iproute2 nftables miniupnpd")
    probe = P + "x"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*cmd, ns=None, input=None, check=True):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    r = subprocess.run(full, capture_output=True, text=True, input=input)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(full)} failed: {r.stderr.strip()}")
    return r


ROUTER_NFT = """
table inet filter {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }}
  chain miniupnpd {{
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "{wan}" masquerade
  }}
  chain prerouting_miniupnpd {{
  }}
  chain postrouting_miniupnpd {{
  }}
}}
"""


class Topology:
    def __init__(self):
        self.made = []
        self.miniupnpd = None
        self.dir = tempfile.mkdtemp(prefix=P + "-")

    def build(self):
        for ns in (NS_HOME, NS_ROUTER, NS_INET, NS_PUB, NS_ISO):
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", NS_INET, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", NS_INET, "addr", "add", f"{SEED_IP}/24", "dev", "br0")
        sh("ip", "-n", NS_INET, "link", "set", "br0", "up")
        self._veth(NS_ROUTER, "wan", WAN_IP, NS_INET, "rtr", None)
        self._veth(NS_PUB, "eth0", PUB_IP, NS_INET, "pub", None)
        self._veth(NS_ROUTER, "lan", LAN_GW, NS_HOME, "eth0", HOME_IP)
        sh("ip", "-n", NS_HOME, "route", "add", "default", "via", LAN_GW)
        sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", ns=NS_ROUTER)
        sh("nft", "-f", "-", ns=NS_ROUTER, input=ROUTER_NFT.format(wan="wan"))

    def _veth(self, ns_a, name_a, ip_a, ns_b, name_b, ip_b):
        tmp_a, tmp_b = f"{P}a{len(self.made)}", f"{P}b{len(self.made)}"
        self.made.append(None)  # only to make temp names unique
        sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        sh("ip", "link", "set", tmp_a, "netns", ns_a, "name", name_a)
        sh("ip", "link", "set", tmp_b, "netns", ns_b, "name", name_b)
        sh("ip", "-n", ns_a, "addr", "add", f"{ip_a}/24", "dev", name_a)
        sh("ip", "-n", ns_a, "link", "set", name_a, "up")
        if ip_b:
            sh("ip", "-n", ns_b, "addr", "add", f"{ip_b}/24", "dev", name_b)
        else:
            sh("ip", "-n", ns_b, "link", "set", name_b, "master", "br0")
        sh("ip", "-n", ns_b, "link", "set", name_b, "up")

    def start_miniupnpd(self, upnp=True):
        conf = os.path.join(self.dir, "miniupnpd.conf")
        with open(conf, "w") as f:
            f.write("ext_ifname=wan\nlistening_ip=lan\nport=0\nenable_natpmp=yes\n"
                    f"enable_upnp={'yes' if upnp else 'no'}\nsecure_mode=yes\nsystem_uptime=yes\n"
                    "uuid=3e0b2a1c-1111-4222-8333-444455556666\n"
                    f"lease_file={self.dir}/upnp.leases\n"
                    "allow 1024-65535 192.168.77.0/24 1024-65535\n"
                    "deny 0-65535 0.0.0.0/0 0-65535\n")
        self.miniupnpd_log = open(os.path.join(self.dir, "miniupnpd.log"), "wb")
        self.miniupnpd = subprocess.Popen(
            ["ip", "netns", "exec", NS_ROUTER, "miniupnpd", "-d", "-f", conf, "-P",
             os.path.join(self.dir, "miniupnpd.pid")],
            stdout=self.miniupnpd_log, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        assert self.miniupnpd.poll() is None, open(self.miniupnpd_log.name).read()

    def stop_miniupnpd(self):
        if self.miniupnpd is not None and self.miniupnpd.poll() is None:
            self.miniupnpd.terminate()
            try:
                self.miniupnpd.wait(5)
            except subprocess.TimeoutExpired:
                self.miniupnpd.kill()
                self.miniupnpd.wait()
        self.miniupnpd = None
        # a router without UPnP: no mappings left behind either
        sh("nft", "flush", "chain", "inet", "filter", "prerouting_miniupnpd", ns=NS_ROUTER,
           check=False)

    def destroy(self):
        self.stop_miniupnpd()
        for ns in self.made:
            if ns:
                sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class NetnsNode(NodeProcess):
    """A daemon started inside a network namespace (same readiness protocol as NodeProcess)."""

    def __init__(self, tmp_path, ns, config, name):
        super().__init__(tmp_path, config, name=name)
        self.ns = ns

    def start(self, timeout=30.0, extra_env=None):
        real = sys.executable
        wrapper = self.dir / "python-in-netns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {self.ns} {real} "$@"\n')
        wrapper.chmod(0o755)
        old = sys.executable
        sys.executable = str(wrapper)  # NodeProcess.start runs [sys.executable, -m, ...]
        try:
            return super().start(timeout=timeout, extra_env=dict(extra_env or {},
                                                                 PYTHONPATH=REPO))
        finally:
            sys.executable = old

    def status(self):
        r = sh(sys.executable, "-m", "firmware.cli", "status", "--json", "--data-dir",
               self.data_dir, ns=self.ns, check=False)
        if r.returncode:
            return {"error": r.stderr.strip()}
        return json.loads(r.stdout)

    def wait_status(self, key, want, timeout=60.0):
        deadline = time.monotonic() + timeout
        st = {}
        while time.monotonic() < deadline:
            st = self.status()
            if st.get(key) in want:
                return st
            time.sleep(0.5)
        raise AssertionError(f"{self.dir.name}: {key} never became {want}; last status {st}\n"
                             f"log tail:\n{self.output()[-3000:]}")


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    why = _why_not()
    if why:
        pytest.skip(why)
    t = Topology()
    nodes = []
    try:
        t.build()
        base = tmp_path_factory.mktemp("nat")
        seeds = []
        for i in range(3):
            boot = [f"{SEED_IP}:{s.port}@{s.node_id.hex()}" for s in seeds]
            n = NetnsNode(base, NS_INET, {"node": {"listen_host": SEED_IP},
                                          "network": {**FAST_NET, "bootstrap": boot},
                                          "nat": {"mode": "off", "check_interval": 2.0}},
                          name=f"seed{i}")
            nodes.append(n)
            seeds.append(n.start())
        t.seeds = seeds
        t.nodes = nodes
        t.base = base
        yield t
    finally:
        for n in nodes:
            n.kill()
        t.destroy()


def _boot(topo):
    return [f"{SEED_IP}:{s.port}@{s.node_id.hex()}" for s in topo.seeds]


def _home_node(topo, name, port):
    n = NetnsNode(topo.base, NS_HOME, {
        "node": {"listen_host": HOME_IP, "listen_port": port},
        "network": {**FAST_NET, "bootstrap": _boot(topo), "advertise_host": HOME_IP},
        "nat": {"mode": "auto", "check_interval": 3.0, "lease": 600},
    }, name=name)
    topo.nodes.append(n)
    return n


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_home_behind_nat_with_upnp_router_is_mapped(topo):
    topo.start_miniupnpd()
    try:
        home = _home_node(topo, "home-mapped", _free_port()).start()
        st = home.wait_status("reachability", {"mapped"})
        assert st["port_mapping"].startswith("upnp ") and WAN_IP in st["port_mapping"]
        assert "mapped" in st["record_flags"].split(",")
        assert "nothing to do" in st["reachability_advice"]
        # the router really forwards: its nftables now holds a DNAT to the home node
        rules = sh("nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd",
                   ns=NS_ROUTER).stdout
        assert f"dnat ip to {HOME_IP}:{home.port}" in rules
        assert home.stop() == 0
        # a clean stop gives the port back to the router
        rules = sh("nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd",
                   ns=NS_ROUTER).stdout
        assert f"{HOME_IP}:{home.port}" not in rules
        assert "port_unmapped method=upnp" in home.output()
    finally:
        topo.stop_miniupnpd()


def test_router_with_only_nat_pmp_is_mapped_too(topo):
    topo.start_miniupnpd(upnp=False)
    try:
        home = _home_node(topo, "home-natpmp", _free_port()).start()
        st = home.wait_status("reachability", {"mapped"})
        assert st["port_mapping"] == f"natpmp {WAN_IP}:{home.port}"
        assert "reason=\"upnp: no UPnP router answered" in home.output()  # tried first
        assert home.stop() == 0
    finally:
        topo.stop_miniupnpd()


def test_home_behind_nat_without_upnp_is_relayed_and_still_serves(topo):
    home = _home_node(topo, "home-relayed", 0).start()
    st = home.wait_status("reachability", {"relayed"})
    assert "relayed" in st["record_flags"].split(",")
    assert "switch on UPnP or NAT-PMP" in st["reachability_advice"]
    assert st["relays"]
    # a client on the internet side sends an onion whose final hop is the relayed home node;
    # the middle hop reaches it only through its relay
    relays = st["relays"].split(",")
    seeds = topo.seeds
    middle = next(s for s in seeds if s.node_id[:4].hex() not in relays)
    first = next(s for s in seeds if s is not middle)
    script = CLIENT_SCRIPT.format(
        first=(first.node_id.hex(), SEED_IP, first.port),
        middle=(middle.node_id.hex(), SEED_IP, middle.port),
        final=(home.node_id.hex(), HOME_IP, home.port))
    deadline = time.monotonic() + 60
    while True:
        r = sh(sys.executable, "-c", script, ns=NS_INET, check=False)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)  # the seeds may not have the home node's relayed record yet
    assert r.returncode == 0, r.stderr[-3000:] + "\n" + home.output()[-3000:]
    out = json.loads(r.stdout)
    assert out["stored"] and out["fetched"] == out["stored"]
    st = home.status()
    assert st["messages"] >= 1
    passed_down = sum(s.status().get("relayed_passed_down", 0) for s in seeds)
    assert passed_down >= 2, "store and retrieve reached the home node through its relays"
    # its record names the address its relays see (the router's), not its LAN address: that
    # network is what placement and paths count it in, and what its relays checked
    assert _hosts_seen_by_seed(topo, home) == [WAN_IP]
    home.stop()


def _hosts_seen_by_seed(topo, node, want=None, timeout=30):
    seed = topo.seeds[0]
    script = (f"import trio; from firmware.client.onion_client import bootstrap\n"
              f"hops = trio.run(bootstrap, {SEED_IP!r}, {seed.port}, "
              f"bytes.fromhex({seed.node_id.hex()!r}))\n"
              f"print([h.host for h in hops if h.node_id.hex() == {node.node_id.hex()!r}])")
    deadline = time.monotonic() + timeout
    while True:
        out = ast.literal_eval(sh(sys.executable, "-c", script, ns=NS_INET).stdout.strip() or "[]")
        if (out if want is None else out == want) or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def test_box_without_a_network_says_unreachable(topo):
    n = NetnsNode(topo.base, NS_ISO, {  # a namespace with nothing but loopback
        "node": {"listen_host": "127.0.0.1"},
        "network": {**FAST_NET, "bootstrap": _boot(topo)},
        "nat": {"mode": "auto", "check_interval": 3.0},
    }, name="isolated")
    topo.nodes.append(n)
    n.start()
    st = n.wait_status("reachability", {"unreachable"})
    assert "check its cable or Wi-Fi" in st["reachability_advice"]
    n.stop()


def test_node_with_a_public_address_is_direct(topo):
    n = NetnsNode(topo.base, NS_PUB, {
        "node": {"listen_host": "0.0.0.0"},  # no address configured anywhere
        "network": {**FAST_NET, "bootstrap": _boot(topo)},
        "nat": {"mode": "auto", "check_interval": 3.0},
    }, name="public")
    topo.nodes.append(n)
    n.start()
    st = n.wait_status("reachability", {"direct"})
    assert PUB_IP in st["reachability_advice"]
    assert "port_mapping" not in st
    # it now advertises the address the peers reached it at, and the seeds learn it
    seed = topo.seeds[0]
    script = (f"import trio; from firmware.client.onion_client import bootstrap\n"
              f"hops = trio.run(bootstrap, {SEED_IP!r}, {seed.port}, "
              f"bytes.fromhex({seed.node_id.hex()!r}))\n"
              f"print([h.host for h in hops if h.node_id.hex() == {n.node_id.hex()!r}])")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = sh(sys.executable, "-c", script, ns=NS_INET).stdout.strip()
        if out == repr([PUB_IP]):
            break
        time.sleep(0.5)
    assert out == repr([PUB_IP])
    n.stop()


CLIENT_SCRIPT = """
import json, os, sys
import nacl.signing, trio
from firmware.client import connect, wall_ms
from firmware.proto import onion
from firmware.proto.codec import encode_map
from firmware.proto.hashing import sign_request

path = [onion.Hop(bytes.fromhex(i), h, p) for i, h, p in ({first}, {middle}, {final})]
me = nacl.signing.SigningKey.generate()
rcpt = bytes(me.verify_key)

async def through(op, args):
    frame = {{"v": 2, "id": 1, "op": op, "args": args}}
    blob, keys = onion.build_onion(path, encode_map(frame), wall_ms(), os.urandom)
    async with connect(path[0].host, path[0].port, path[0].node_id) as c:
        ok = await c.request("onion", {{"blob": blob}})
    resp = onion.unwrap_response(keys, ok["blob"])
    if "err" in resp:
        raise SystemExit(f"{{op}} failed: {{resp['err']}}")
    return resp["ok"]

async def main():
    now = wall_ms()
    r = await through("store", {{"recipient": rcpt, "ns": 0, "ts": now, "ttl": 600000,
                                "data": b"via relay"}})
    sig_ts = wall_ms()
    got = await through("retrieve", {{"recipient": rcpt, "ns": 0, "after": None,
                                     "max_count": 10, "max_bytes": 100000, "sig_ts": sig_ts,
                                     "sig": sign_request(me, "retrieve", rcpt, 0, sig_ts)}})
    print(json.dumps({{"stored": r["hash"].hex(),
                      "fetched": [m["hash"].hex() for m in got["messages"]][0]}}))

trio.run(main)
"""
