"""A bridge started by a real node, among real nodes on loopback: what the network learns of it,
and clients through it (`homenode send/fetch --bridge`, `homenode bridge line`).

Topology: three ordinary nodes (the first two are the bridge's relays, its `[network]
bootstrap`) and one bridge node; every process is a real daemon (tests/conftest.py).
The censor's view in network namespaces is tests/bridge/test_censor_netns.py.
"""

import json
import os
import re
import time

import pytest
import trio

from firmware.bridge.line import parse_line
from firmware.identity import Identity
from firmware.link import Dialer
from firmware.net.peers import authenticated_dial
from firmware.proto.records import FLAG_RELAYED, make_record, verify_record
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

FAST_NET = {"gossip_interval": 0.3, "test_interval": 0.5, "test_backoff_max": 2.0,
            "test_timeout": 3.0, "anti_entropy_interval": 2.0, "link_timeout": 3.0}


def _boot(nodes):
    return [f"127.0.0.1:{n.port}@{n.node_id.hex()}" for n in nodes]


def wait_for(what, check, timeout=30.0, every=0.2):
    """Poll real daemons (other processes: nothing to await on) until `check()` is truthy."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not reached within {timeout} s (last: {last!r})")


def status(node) -> dict:
    r = node.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from tests.conftest import NodeProcess

    base = tmp_path_factory.mktemp("bridgenet")
    made = []
    try:
        plain = []
        for i in range(3):
            n = NodeProcess(base, {"network": {**FAST_NET, "bootstrap": _boot(plain)},
                                   "nat": {"mode": "off"}}, name=f"n{i}")
            made.append(n)
            plain.append(n.start())
        bridge = NodeProcess(base, {
            "node": {"listen_host": "0.0.0.0"},  # the bridge must bind loopback regardless
            "network": {**FAST_NET, "bootstrap": _boot(plain[:2])},
            "bridge": {"enabled": True, "host": "127.0.0.1", "port": 0,
                       "public_host": "127.0.0.1"},
        }, name="bridge")
        made.append(bridge)
        bridge.start()
        wait_for("every plain node sees the other two live",
                 lambda: all(status(n)["peers_live"] >= 2 for n in plain))
        wait_for("the bridge's relays answer", lambda: status(bridge)["reachability"] == "bridge")
        yield plain, bridge
    finally:
        for n in made:
            n.kill()


def test_bridge_node_port_listens_on_loopback_only(net):
    _, bridge = net
    with open(os.path.join(bridge.data_dir, "node.json")) as f:
        info = json.load(f)
    assert info["host"] == "127.0.0.1"  # configured 0.0.0.0: a bridge's node port stays local
    assert info["bridge_port"] > 0


async def _records_held_by(node, me: Identity) -> list:
    """Every record `node` holds (live or not), asked as a node would (hello + gossip)."""
    now = int(time.time() * 1000)
    own = make_record(me.signing_key, seq=1, addrs=["127.0.0.1"], port=9, version="test",
                      flags=FLAG_RELAYED, relays=[node.node_id], issued=now,
                      expires=now + 60_000)
    dial = authenticated_dial(Dialer(), me, lambda: own)
    async with dial(node.node_id, "127.0.0.1", node.port, 5.0) as link:
        ok = await link.request("gossip", {"have": [], "limit": 10_000}, timeout=5.0)
    return [verify_record(w, now) for w in ok["records"]]


def test_no_record_anywhere_names_the_bridge_address(net):
    plain, bridge = net
    me = Identity.generate()
    held = {}
    for n in plain:
        held[n.dir.name] = trio.run(_records_held_by, n, me)
    theirs = [r for recs in held.values() for r in recs if r.id == bridge.node_id]
    assert theirs, "the bridge joined the network: its record reached the relays and beyond"
    relay = plain[0]
    for r in theirs:  # relayed, through its relays, at the first relay's address (not its own)
        assert (list(r.addrs), r.port, r.flags) == (["127.0.0.1"], relay.port, FLAG_RELAYED)
        assert set(r.relays) == {p.node_id for p in plain[:2]}
    # nor does any `nodes` answer hand it out (its record is never live: nobody reaches it)
    for n in plain:
        r = n.cli("status", "--json")
        assert r.returncode == 0
    for n in plain:
        ids = trio.run(_nodes_ids, n)
        assert bridge.node_id not in ids and len(ids) >= 3


async def _nodes_ids(node):
    from firmware.client import connect

    async with connect("127.0.0.1", node.port, node.node_id) as c:
        ok = await c.request("nodes", {})
    return {verify_record(w, int(time.time() * 1000)).id for w in ok["records"]}


def test_bridge_connects_to_no_node_but_its_relays(net):
    plain, bridge = net
    st = status(bridge)
    assert st["bridge_refused_dials"] > 0  # it wanted to test the third node, and did not dial
    assert f"record=127.0.0.1:{plain[0].port}" in bridge.output()  # its relay's address
    third = plain[2]
    assert third.node_id[:4].hex() not in st["relays"]
    # the third node holds the bridge's record (gossip) but never reached it: never live there
    assert f"peer_live peer={bridge.node_id[:4].hex()}" not in third.output()


def test_bridge_line_prints_line_and_qr(net):
    _, bridge = net
    r = bridge.cli("bridge", "line", "--config", bridge.config_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    line = parse_line(out.splitlines()[0])
    with open(os.path.join(bridge.data_dir, "node.json")) as f:
        assert (line.host, line.port) == ("127.0.0.1", json.load(f)["bridge_port"])
    assert "▀" in out or "▄" in out  # the QR code, in half blocks
    assert b"Give this line only to people you trust" in r.stderr
    # the secret never reaches `info`, the status text or the log
    secret_hex = line.secret.hex()
    from firmware.bridge.line import b64url

    for text in (json.dumps(status(bridge)), bridge.cli("status").stdout.decode(),
                 bridge.output()):
        assert secret_hex not in text and b64url(line.secret) not in text


def _line(bridge) -> str:
    r = bridge.cli("bridge", "line", "--config", bridge.config_path, "--no-qr")
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


def test_send_and_fetch_through_the_bridge(net, tmp_path):
    plain, bridge = net
    line = _line(bridge)
    key = str(tmp_path / "me.key")
    assert run_cli("keygen", "--out", key).returncode == 0
    me = run_cli("id", "--key", key).stdout.decode().strip()
    before = status(bridge)["bridge"]["links"]
    # a dead line first: bridges are tried in turn
    dead = re.sub(r":\d+/", ":1/", line, count=1)
    r = run_cli("send", "--bridge", dead, "--bridge", line, "--to", me, "hello via bridge",
                "--timeout", "10", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()
    r = run_cli("fetch", "--bridge", line, "--key", key, "--timeout", "10", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().splitlines() == ["hello via bridge"]
    st = status(bridge)
    assert st["bridge"]["links"] >= before + 2
    # every onion went on to one of the bridge's relays, and nowhere else
    assert st["onion"]["forwarded"] >= 2 and st["bridge"]["to_relays"] >= 2
    assert st["bridge"]["refused_next_hops"] == 0


def test_no_bridge_works_is_one_clear_line(net, tmp_path):
    _, bridge = net
    line = parse_line(_line(bridge))
    from firmware.bridge.line import BridgeLine, format_line

    wrong_secret = format_line(BridgeLine(line.host, line.port, line.pin, b"\x01" * 32))
    r = run_cli("send", "--bridge", wrong_secret, "--to", Identity.generate().id_hex, "x",
                "--timeout", "5",
                cwd=str(tmp_path))
    err = r.stderr.decode().strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1, err
    assert "no bridge works" in err and "secret in the bridge line is wrong" in err
