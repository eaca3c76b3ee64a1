"""Network-ranked placement on real node processes that really sit in different networks.

One network namespace of our own (its name starts with this branch's prefix and the pid) whose
loopback holds one address per "home": six honest nodes in six /16s, and an attacker's three
nodes in one /24 whose ids were ground (2,000 keys made, the three best kept) to the top of the
plain id ranking for one target mailbox. Under v1's id ranking they would take 3 of its 5
places; under the v2 rules every node - computing placement from the signed records alone -
gives them one, and that is where the message lands. Nothing here leaves the namespace.
"""

import json
import os
import subprocess
import sys
import time

import nacl.signing
import pytest

from firmware.client.onion_client import member_of_hop
from firmware.identity import Identity
from firmware.proto import onion
from firmware.proto.placement import Placement, rank
from tests.conftest import REPO
from tests.net.test_cluster import with_identity
from tests.net.test_nat_netns import NetnsNode, sh

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NS = f"adv2{os.getpid() % 100000}"
HONEST = [f"10.{i}.0.1" for i in range(1, 7)]  # six /16 networks
CROWD = ["10.99.7.1", "10.99.7.2", "10.99.7.3"]  # one /24
FAST_NET = {"gossip_interval": 0.5, "test_interval": 1.0, "test_backoff_max": 2.0,
            "test_timeout": 3.0, "anti_entropy_interval": 2.0, "link_timeout": 3.0,
            "max_test_rate": 50.0}  # fmt: skip
LIMITS = {"rate_per_sec": 100_000.0, "rate_burst": 100_000}


def _why_not():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    r = subprocess.run(["ip", "netns", "add", NS + "p"], capture_output=True, text=True)
    if r.returncode:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", NS + "p"], capture_output=True)
    return None


def ground_ids(target, honest_ids, n=3, tries=2000):
    """What an attacker does: make keys until some rank at the top for `target`."""
    seeds = [os.urandom(32) for _ in range(tries)]
    by_id = {Identity(s).node_id: s for s in seeds}
    best = rank(list(by_id), target, n)
    assert set(best) <= set(rank(list(best) + honest_ids, target, 5))
    return [by_id[i] for i in best]


def in_ns(code, **args):
    """Run a client script inside the namespace; its stdout parsed as JSON."""
    r = sh(sys.executable, "-c", code, json.dumps(args, default=bytes.hex), ns=NS, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


STORE = """
import json, sys, trio
from firmware.client import connect
a = json.loads(sys.argv[1])
async def main():
    async with connect("127.0.0.1", a["port"], bytes.fromhex(a["node_id"])) as c:
        r = await c.store(bytes.fromhex(a["rcpt"]), b"for the target", ttl_ms=600000)
    print(json.dumps({"hash": r.hash.hex(), "replicas": r.replicas}))
trio.run(main)
"""

HELD = """
import json, sys, trio, nacl.signing
from firmware.client import connect
a = json.loads(sys.argv[1])
me = nacl.signing.SigningKey(bytes.fromhex(a["seed"]))
async def main():
    out = []
    for port, nid in a["nodes"]:
        async with connect("127.0.0.1", port, bytes.fromhex(nid)) as c:
            out.append([m.hash.hex() for m in await c.retrieve_all(me)])
    print(json.dumps(out))
trio.run(main)
"""


@pytest.fixture(scope="module")
def crowd_net(tmp_path_factory):
    why = _why_not()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("adv2")
    nodes = []
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        for a in HONEST + CROWD:
            sh("ip", "-n", NS, "addr", "add", f"{a}/32", "dev", "lo")
        owner_seed = os.urandom(32)
        target = bytes(nacl.signing.SigningKey(owner_seed).verify_key)
        honest_seeds = [bytes([i + 1]) * 32 for i in range(len(HONEST))]
        crowd_seeds = ground_ids(target, [Identity(s).node_id for s in honest_seeds])
        boot = []
        for i, (host, seed) in enumerate(zip(HONEST + CROWD, honest_seeds + crowd_seeds,
                                             strict=True)):  # fmt: skip
            n = NetnsNode(base, NS, {
                # every node listens on all of the namespace's addresses and names its own
                "node": {"listen_host": "0.0.0.0"},
                "network": {**FAST_NET, "advertise_host": host, "bootstrap": boot},
                "nat": {"mode": "off", "check_interval": 2.0}, "limits": LIMITS,
            }, name=f"n{i}")  # fmt: skip
            with_identity(n, seed)
            n.host_in_ns = host
            nodes.append(n)
            n.start(extra_env={"PYTHONPATH": REPO})
            if not boot:
                boot = [f"{host}:{n.port}@{n.node_id.hex()}"]
        yield nodes, target, owner_seed, [n.node_id for n in nodes[len(HONEST):]]
    finally:
        for n in nodes:
            n.kill()
        sh("ip", "netns", "del", NS, check=False)


def test_ground_ids_from_a_crowded_slash24_get_one_place(crowd_net):
    nodes, target, owner_seed, crowd = crowd_net
    deadline = time.monotonic() + 120
    while True:
        st = [n.status() for n in nodes]
        if all(s.get("peers_live") == len(nodes) - 1 for s in st):
            break
        assert time.monotonic() < deadline, f"no convergence: {[s.get('peers_live') for s in st]}"
        time.sleep(1)
    # every node: enough networks for the strictest rule
    assert {(s["placement_level"], s["placement_rule"]) for s in st} == {(0, "one node per /16")}

    ids = [n.node_id for n in nodes]
    assert set(crowd) <= set(rank(ids, target, 5))  # v1: the attacker held 3 of 5 places
    members = [member_of_hop(onion.Hop(n.node_id, n.host_in_ns, 1)) for n in nodes]
    swarm = set(Placement(members).swarm(target))
    assert len(swarm & set(crowd)) <= 1

    entry = nodes[0]
    r = in_ns(STORE, port=entry.port, node_id=entry.node_id, rcpt=target)
    assert r["replicas"] == 5

    def holders():
        held = in_ns(HELD, seed=owner_seed, nodes=[[n.port, n.node_id] for n in nodes])
        return {n.node_id for n, h in zip(nodes, held, strict=True) if h == [r["hash"]]}

    deadline = time.monotonic() + 60  # a non-member entry node hands its copy off
    while holders() != swarm:
        assert time.monotonic() < deadline, f"held by {len(holders())}, want the 5 placed"
        time.sleep(1)
    assert len(holders() & set(crowd)) <= 1
