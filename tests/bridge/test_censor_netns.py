"""A censor in network namespaces: the client's network drops every public node address, as a
national firewall holding the public node list would; only the bridge's address gets through.

Topology (made and removed by the fixture; namespaces `br-<pid>-*`, one per machine; the
"internet" is one L2 switch; 192.0.1.0/24 exists only inside these namespaces - an address
range miniupnpd accepts as public, as tests/net/test_nat_netns.py explains)::

    n0 .11   n1 .12   n2 .13        ordinary nodes (n0, n1: the bridge's relays)
    router .20 (wan) -- 192.168.77.1 (lan) -- bridge 192.168.77.10
                                    a home router (nftables masquerade + Debian's miniupnpd)
                                    and behind it a node with [bridge] enabled on port 443,
                                    no public_host: it asks the router to forward 443 (UPnP)
    client .30                      nftables: output to .11 .12 .13 dropped

What it shows: the router forwards 443 because the bridge asked, and `homenode bridge line`
names the router's public address; `homenode send` / `fetch` work with `--bridge LINE` and
fail with a clear line without it; the client reaches nothing but port 443 of that address,
where a prober gets nginx's welcome page; n2, which is not a relay, never receives a single
packet from the bridge's address (an nftables counter says so), and no record any node holds
names that address.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, NodeProcess

pytestmark = [pytest.mark.netns, pytest.mark.slow]

P = f"br-{os.getpid() % 100000}-"
NET = "192.0.1"
NODES = {"n0": f"{NET}.11", "n1": f"{NET}.12", "n2": f"{NET}.13"}
BRIDGE_IP, CLIENT_IP = f"{NET}.20", f"{NET}.30"  # the bridge's address: its router's
LAN_GW, HOME_IP = "192.168.77.1", "192.168.77.10"
NODE_PORT = 7070
FAST_NET = {"gossip_interval": 0.5, "test_interval": 1.0, "test_backoff_max": 2.0,
            "test_timeout": 3.0, "anti_entropy_interval": 2.0, "link_timeout": 3.0}

CENSOR_NFT = """
table inet censor {{
  chain output {{
    type filter hook output priority 0; policy accept;
    ip daddr {{ {blocked} }} counter drop
  }}
}}
"""
ROUTER_NFT = """
table inet filter {
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "wan" masquerade
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
"""
MINIUPNPD_CONF = """ext_ifname=wan
listening_ip=lan
port=0
enable_natpmp=yes
enable_upnp=yes
secure_mode=yes
system_uptime=yes
uuid=3e0b2a1c-2222-4222-8333-444455556666
lease_file={dir}/upnp.leases
allow 1-65535 192.168.77.0/24 1-65535
deny 0-65535 0.0.0.0/0 0-65535
"""
WATCH_NFT = """
table inet watch {{
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {bridge} counter
  }}
}}
"""


def sh(*cmd, ns=None, input=None, check=True, timeout=60):
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    r = subprocess.run(full, capture_output=True, text=True, input=input, timeout=timeout)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(full)} failed: {r.stderr.strip()}")
    return r


def cli(ns, *args, timeout=90):
    return sh(sys.executable, "-m", "firmware.cli", *args, ns=ns, check=False, timeout=timeout)


class NetnsNode(NodeProcess):
    """A daemon inside a namespace (NodeProcess's readiness protocol, run through a wrapper)."""

    def __init__(self, tmp_path, ns, config, name):
        super().__init__(tmp_path, config, name=name)
        self.ns = ns

    def start(self, timeout=40.0):
        wrapper = self.dir / "python-in-netns"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {self.ns} {sys.executable} "$@"\n')
        wrapper.chmod(0o755)
        real = sys.executable
        sys.executable = str(wrapper)
        try:
            return super().start(timeout=timeout, extra_env={"PYTHONPATH": REPO})
        finally:
            sys.executable = real

    def status(self) -> dict:
        r = cli(self.ns, "status", "--json", "--data-dir", self.data_dir)
        return json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr.strip()}


def wait_for(what, check, timeout=90.0):
    """Poll real daemons in other processes (nothing to await on) until `check()` holds."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


class Censored:
    def __init__(self, workdir):
        self.namespaces = []
        self.dir = workdir
        self.miniupnpd = None
        self._veths = 0

    def build(self):
        sw = P + "sw"
        self._ns(sw)
        sh("ip", "-n", sw, "link", "add", "sw0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "sw0", "up")
        hosts = {**NODES, "router": BRIDGE_IP, "client": CLIENT_IP}
        for name, ip in hosts.items():
            self._ns(P + name)
            port = "wan" if name == "router" else "eth0"
            b = self._veth(P + name, port, ip, sw, None)
            sh("ip", "-n", sw, "link", "set", b, "master", "sw0")
            sh("ip", "-n", sw, "link", "set", b, "up")
        self._ns(P + "bridge")  # at home, behind the router
        self._veth(P + "router", "lan", LAN_GW, P + "bridge", HOME_IP, name_b="eth0")
        sh("ip", "-n", P + "bridge", "route", "add", "default", "via", LAN_GW)
        sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", ns=P + "router")
        sh("nft", "-f", "-", ns=P + "router", input=ROUTER_NFT)
        sh("nft", "-f", "-", ns=P + "client",
           input=CENSOR_NFT.format(blocked=", ".join(NODES.values())))
        for name in NODES:
            sh("nft", "-f", "-", ns=P + name, input=WATCH_NFT.format(bridge=BRIDGE_IP))
        conf = os.path.join(self.dir, "miniupnpd.conf")
        with open(conf, "w") as f:
            f.write(MINIUPNPD_CONF.format(dir=self.dir))
        self.miniupnpd_log = open(os.path.join(self.dir, "miniupnpd.log"), "wb")
        self.miniupnpd = subprocess.Popen(
            ["ip", "netns", "exec", P + "router", "miniupnpd", "-d", "-f", conf, "-P",
             os.path.join(self.dir, "miniupnpd.pid")],
            stdout=self.miniupnpd_log, stderr=subprocess.STDOUT)

    def _veth(self, ns_a, name_a, ip_a, ns_b, ip_b, name_b=None):
        self._veths += 1
        a, b = f"br{os.getpid() % 10000}a{self._veths}", f"br{os.getpid() % 10000}b{self._veths}"
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", ns_a, "name", name_a)
        sh("ip", "link", "set", b, "netns", ns_b, *(["name", name_b] if name_b else []))
        sh("ip", "-n", ns_a, "addr", "add", f"{ip_a}/24", "dev", name_a)
        sh("ip", "-n", ns_a, "link", "set", name_a, "up")
        if ip_b:
            sh("ip", "-n", ns_b, "addr", "add", f"{ip_b}/24", "dev", name_b or b)
            sh("ip", "-n", ns_b, "link", "set", name_b or b, "up")
        return name_b or b

    def _ns(self, ns):
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def packets_from_bridge(self, name) -> int:
        out = sh("nft", "-j", "list", "table", "inet", "watch", ns=P + name).stdout
        for item in json.loads(out)["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    return expr["counter"]["packets"]
        raise AssertionError(f"no counter in {out}")

    def destroy(self):
        if self.miniupnpd is not None and self.miniupnpd.poll() is None:
            self.miniupnpd.terminate()
            try:
                self.miniupnpd.wait(5)
            except subprocess.TimeoutExpired:
                self.miniupnpd.kill()
                self.miniupnpd.wait()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)


def _require():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables)")
    missing = [t for t in ("ip", "nft", "curl", "miniupnpd") if shutil.which(t) is None]
    assert not missing, (f"missing {missing}: run scripts/setup.sh (iproute2 nftables curl "
                         "miniupnpd)")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    _require()
    base = tmp_path_factory.mktemp("censor")
    c = Censored(str(base))
    nodes = []
    try:
        c.build()
        plain = []
        for name, ip in NODES.items():
            boot = [f"{NODES['n0']}:{NODE_PORT}@{plain[0].node_id.hex()}"] if plain else []
            n = NetnsNode(base, P + name, {
                "node": {"listen_host": ip, "listen_port": NODE_PORT},
                "network": {**FAST_NET, "bootstrap": boot}, "nat": {"mode": "off"}}, name)
            nodes.append(n)
            plain.append(n.start())
        bridge = NetnsNode(base, P + "bridge", {  # as a home user's box: no public_host
            "node": {"listen_host": "0.0.0.0", "listen_port": NODE_PORT},
            "network": {**FAST_NET, "bootstrap": [f"{NODES[x]}:{NODE_PORT}@{n.node_id.hex()}"
                                                  for x, n in zip(("n0", "n1"), plain[:2],
                                                                  strict=True)]},
            "bridge": {"enabled": True, "port": 443},
            "nat": {"mode": "auto", "lease": 600},
        }, "bridge")
        nodes.append(bridge)
        bridge.start()
        wait_for("every node sees the other two live",
                 lambda: all(n.status().get("peers_live", 0) >= 2 for n in plain))
        wait_for("the bridge's relays answer", lambda: bridge.status().get("reachability")
                 == "bridge")
        wait_for("the router forwards the bridge port", lambda: bridge.status().get(
            "bridge", {}).get("port_mapping") == "upnp")
        c.plain, c.bridge, c.base = plain, bridge, base
        yield c
    finally:
        for n in nodes:
            n.kill()
        c.destroy()


def _line(world) -> str:
    r = cli(P + "bridge", "bridge", "line", "--config", world.bridge.config_path,
            "--data-dir", world.bridge.data_dir)  # no public_host: the router's address
    assert r.returncode == 0, r.stderr
    assert "▄" in r.stdout or "▀" in r.stdout  # and its QR code
    return r.stdout.splitlines()[0]


def test_send_and_fetch_through_the_bridge_and_not_without(world, tmp_path):
    cl = P + "client"
    line = _line(world)
    assert line.startswith(f"homenode-bridge://{BRIDGE_IP}:443/")
    key = str(tmp_path / "me.key")
    assert cli(cl, "keygen", "--out", key).returncode == 0
    me = cli(cl, "id", "--key", key).stdout.strip()
    n0 = world.plain[0]
    blocked = ["--node", f"{NODES['n0']}:{NODE_PORT}", "--node-id", n0.node_id.hex(),
               "--timeout", "3"]
    # without a bridge: every node address is dropped on the way
    r = cli(cl, "send", *blocked, "--to", me, "no way")
    assert r.returncode == 1
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "cannot talk to the node" in err, err
    assert "--bridge" in err  # ... and it says what to do
    r = cli(cl, "fetch", *blocked, "--key", key)
    assert r.returncode == 1 and "--bridge" in r.stderr, r.stderr
    # with it
    r = cli(cl, "send", "--bridge", line, "--to", me, "hello through the wall", "--timeout", "15")
    assert r.returncode == 0, r.stderr + world.bridge.output()[-3000:]
    r = cli(cl, "fetch", "--bridge", line, "--key", key, "--timeout", "15")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["hello through the wall"]
    # the censor's firewall really dropped the client's tries to reach n0 directly
    rules = sh("nft", "list", "table", "inet", "censor", ns=cl).stdout
    assert "counter packets 0 " not in rules, rules


def test_the_client_meets_only_a_web_server(world):
    cl = P + "client"
    r = sh("curl", "-sk", "--max-time", "10", f"https://{BRIDGE_IP}/", ns=cl, check=False)
    assert "<title>Welcome to nginx!</title>" in r.stdout
    r = sh("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
           f"https://{BRIDGE_IP}/homenode", ns=cl, check=False)
    assert r.stdout == "404"
    # the router forwards 443 because the bridge asked, nothing else
    rules = sh("nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd",
               ns=P + "router").stdout
    assert f"dnat ip to {HOME_IP}:443" in rules and str(NODE_PORT) not in rules, rules
    r = sh("curl", "-sk", "--max-time", "5", f"https://{BRIDGE_IP}:{NODE_PORT}/", ns=cl,
           check=False)
    assert r.returncode == 7, (r.returncode, r.stderr)  # 7: could not connect (refused)
    # and on the bridge's own address the node port is not open either: loopback only
    r = sh("curl", "-sk", "--max-time", "5", f"https://{HOME_IP}:{NODE_PORT}/",
           ns=P + "router", check=False)
    assert r.returncode == 7, (r.returncode, r.stderr)


def test_only_the_relays_ever_hear_from_the_bridge_address(world):
    # the bridge has tried to test n2 (a live record) all along, and never connected
    assert world.bridge.status()["bridge_refused_dials"] > 0
    assert world.packets_from_bridge("n0") + world.packets_from_bridge("n1") > 0
    assert world.packets_from_bridge("n2") == 0


def test_no_record_names_the_bridge_address(world):
    script = RECORDS_SCRIPT.format(nodes=[(n.node_id.hex(), ip) for n, ip in
                                          zip(world.plain, NODES.values(), strict=True)],
                                   port=NODE_PORT, self_ip=NODES["n2"])
    r = sh(sys.executable, "-c", script, ns=P + "n2", check=False)
    assert r.returncode == 0, r.stderr
    held = json.loads(r.stdout)
    bridge_id = world.bridge.node_id.hex()
    for who, records in held.items():
        for rec in records:
            assert BRIDGE_IP not in rec["addrs"], (who, rec)
        mine = [rec for rec in records if rec["id"] == bridge_id]  # its first relay's address
        assert all(rec["addrs"] == [NODES["n0"]] and rec["flags"] == ["relayed"] for rec in mine)
    assert any(rec["id"] == bridge_id for recs in held.values() for rec in recs), \
        "the bridge's record went round"


RECORDS_SCRIPT = """
import json, time, trio
from firmware.identity import Identity
from firmware.link import Dialer
from firmware.net.peers import authenticated_dial
from firmware.proto.records import FLAG_RELAYED, make_record, verify_record

async def held(node_id, host, port, me, own):
    async with authenticated_dial(Dialer(), me, lambda: own)(node_id, host, port, 5.0) as link:
        ok = await link.request("gossip", {{"have": [], "limit": 10000}}, timeout=5.0)
    now = int(time.time() * 1000)
    return [verify_record(w, now) for w in ok["records"]]

async def main():
    me = Identity.generate()
    now = int(time.time() * 1000)
    out = {{}}
    for hexid, host in {nodes!r}:
        nid = bytes.fromhex(hexid)
        own = make_record(me.signing_key, seq=1, addrs=["{self_ip}"], port=9, version="censor",
                          flags=FLAG_RELAYED, relays=[nid], issued=now, expires=now + 60000)
        out[hexid[:8]] = [{{"id": r.id.hex(), "addrs": list(r.addrs), "flags": r.flag_names}}
                          for r in await held(nid, host, {port}, me, own)]
    print(json.dumps(out))

trio.run(main)
"""
