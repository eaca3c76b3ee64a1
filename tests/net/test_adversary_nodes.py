"""Issue 12's rules on real node processes (127.0.0.1): a peer that completes hello cannot
inject into a private namespace; a delete survives restarts and reaches the member that was
down; the id proof of work is made at first boot in the background, kept, and demanded of
others. (Placement over addresses needs several networks: tests/net/test_adversary_netns.py.)

The peer here is the test itself speaking the node-to-node protocol over a pinned link
(challenge, hello with a signed record): exactly what any stranger's node can do.
"""

import os
import socket
import time

import nacl.signing
import pytest
import trio

from firmware.client import connect
from firmware.clock import wall_ms
from firmware.identity import ID_WORK_FILE, Identity
from firmware.proto import pow as id_pow
from firmware.proto.copies import store_proof
from firmware.proto.errors import BadRequest, BadSignature
from firmware.proto.hashing import message_hash, sign_request
from firmware.proto.records import FLAG_REACHABLE, make_record, sign_hello, verify_record
from firmware.settings import default_schema
from tests.conftest import TEST_POW_BITS, NodeProcess, write_toml
from tests.net.test_cluster import NET, converged, infos, wait_for, with_identity

pytestmark = pytest.mark.slow

LIMITS = {"rate_per_sec": 100_000.0, "rate_burst": 100_000}


def run(fn, *args):
    return trio.run(fn, *args)


def peer_record(ident, *, pow_bits=TEST_POW_BITS, proof=None):
    now = wall_ms()
    nonce = id_pow.solve(ident.node_id, pow_bits) if proof is None else proof
    return make_record(ident.signing_key, seq=1, addrs=["127.0.0.1"], port=9, version="t",
                       flags=FLAG_REACHABLE, issued=now, expires=now + 600_000, pow=nonce)


async def as_peer(node, ident, record, fn):
    """Run ``fn(client)`` on a link where we proved to be node ``ident`` (hello)."""
    async with connect(node.host, node.port, node.node_id, timeout=5) as c:
        ch = await c.request("challenge", {})
        await c.request("hello", {"node_id": ident.node_id, "record": record.wire,
                                  "sig": sign_hello(ident.signing_key, node.node_id,
                                                    ch["nonce"])})  # fmt: skip
        return await fn(c)


async def status(node):
    async with connect(node.host, node.port, node.node_id, timeout=5) as c:
        return await c.info()


def data_dir_holds(node, needle):
    for root, _, files in os.walk(node.data_dir):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                if needle in fh.read():
                    return True
    return False


def held(n, key, ns):
    """Hashes node `n` holds in `key`'s namespace `ns` (a signed retrieve)."""

    async def main():
        async with connect(n.host, n.port, n.node_id, timeout=5) as c:
            return {m.hash for m in await c.retrieve_all(key, ns=ns)}

    return run(main)


def copy(owner, ns, data, *, sign_with=None, proof=None):
    r = bytes(owner.verify_key)
    ts = wall_ms() - 1000
    item = {"recipient": r, "ns": ns, "ts": ts, "expiry": ts + 3_600_000, "data": data}
    if sign_with is not None:
        h = message_hash(r, ns, ts, data)
        item["proof"] = store_proof(ts, sign_request(sign_with, "store", r, ns, ts, msg_hash=h))
    if proof is not None:
        item["proof"] = proof
    return item


def test_an_injected_unsigned_private_copy_is_refused_by_a_real_node(node_factory):
    node = node_factory(limits=LIMITS, network=NET).start()
    owner = nacl.signing.SigningKey.generate()
    stranger = Identity.generate()
    rec = peer_record(stranger)
    unsigned = copy(owner, 5, b"INJECTED-no-proof")
    forged = copy(owner, 5, b"INJECTED-own-key", sign_with=stranger.signing_key)
    borrowed = copy(owner, 5, b"INJECTED-borrowed",
                    proof=copy(owner, 5, b"a real one", sign_with=owner)["proof"])
    good = copy(owner, 5, b"the owner's own", sign_with=owner)

    async def inject(c):
        refused = []
        for bad in (unsigned, forged, borrowed):
            with pytest.raises(BadSignature) as info:
                await c.request("replicate", {"messages": [good, bad]})
            refused.append("proof" in info.value.msg)  # the wire error names it
        return refused

    assert run(as_peer, node, stranger, rec, inject) == [True] * 3
    for data in (b"INJECTED-no-proof", b"INJECTED-own-key", b"INJECTED-borrowed"):
        assert not data_dir_holds(node, data)

    async def owners_view():
        async with connect(node.host, node.port, node.node_id, timeout=5) as c:
            return [m.data for m in await c.retrieve_all(owner, ns=5)]

    assert run(owners_view) == []  # the whole batch was refused, the good copy with it
    st = run(status, node)
    assert st["copies_refused"] == 3

    async def one_more_forgery_then_a_good_copy(c):
        with pytest.raises(BadSignature):
            await c.request("replicate", {"messages": [unsigned]})
        # 4 x 25 points: below the ban score, this peer is not taken copies from any more
        with pytest.raises(BadRequest, match="takes no copies from yours"):
            await c.request("replicate", {"messages": [good]})

    run(as_peer, node, stranger, rec, one_more_forgery_then_a_good_copy)
    assert run(owners_view) == []

    # control: another peer's signed copy is taken (the check refuses only what it should)
    honest = Identity.generate()

    async def give(c):
        return await c.request("replicate", {"messages": [good]})

    assert len(run(as_peer, node, honest, peer_record(honest), give)["stored"]) == 1
    assert run(owners_view) == [b"the owner's own"]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_a_delete_survives_restarts_and_reaches_the_member_that_was_down(tmp_path):
    ports = _free_ports(4)  # fixed ports and keys: the bootstrap entry holds across restarts
    seed_id = Identity(b"\x01" * 32).node_id
    boot = [f"127.0.0.1:{ports[0]}@{seed_id.hex()}"]
    nodes = []
    try:
        for i, port in enumerate(ports):
            n = NodeProcess(tmp_path, {"node": {"listen_port": port}, "limits": LIMITS,
                                       "network": dict(NET, bootstrap=boot if i else [])},
                            name=f"d{i}")  # fmt: skip
            with_identity(n, bytes([i + 1]) * 32)
            nodes.append(n.start())
        n0 = nodes[0]
        wait_for("4 nodes to agree", lambda: converged(nodes))
        st = infos(nodes)
        assert {(s["placement_level"], s["placement_rule"]) for s in st} == {
            (3, "plain ranking: too few networks to spread copies")}  # one /24: v1's ranking

        owner = nacl.signing.SigningKey.generate()
        r = bytes(owner.verify_key)

        async def put():
            async with connect(n0.host, n0.port, n0.node_id, timeout=5) as c:
                kept = await c.store(r, b"kept", ns=3, signing_key=owner, ttl_ms=3_600_000)
                gone = await c.store(r, b"to be deleted", ns=3, signing_key=owner,
                                     ttl_ms=3_600_000)  # fmt: skip
                return kept, gone

        kept, gone = run(put)
        assert kept.replicas == gone.replicas == 4  # k = 5: every node holds the mailbox
        down = nodes[3]
        down.stop()

        async def delete():
            async with connect(n0.host, n0.port, n0.node_id, timeout=5) as c:
                return await c.delete(owner, [gone.hash], ns=3)

        assert tuple(run(delete)) == (gone.hash,)
        for n in nodes[:3]:
            assert held(n, owner, 3) == {kept.hash}

        for n in nodes[:3]:  # everyone restarts: tombstones live in the stores, not in memory
            n.stop()
        for n in nodes:
            n.start()
        wait_for("4 nodes to agree again", lambda: converged(nodes))
        wait_for("the member that was down to be shown the delete",
                 lambda: held(down, owner, 3) == {kept.hash})
        before = [s["anti_entropy_rounds"] for s in infos(nodes)]
        wait_for("two more anti-entropy rounds everywhere", lambda: all(
            s["anti_entropy_rounds"] >= b + 2 for s, b in zip(infos(nodes), before, strict=True)))
        assert all(held(n, owner, 3) == {kept.hash} for n in nodes)
        st = infos(nodes)
        assert st[3]["deletes_applied"] == 1
        assert sum(s["deletes_sent"] for s in st[:3]) >= 1
        assert all(s["copies_refused"] == 0 for s in st)
    finally:
        for n in nodes:
            n.kill()


def test_first_boot_makes_the_identity_in_the_background_then_keeps_it(node_factory):
    # 40 bits (~2^40 tries, days) never finishes here: the node must say so and stop at once
    node = node_factory(limits=LIMITS, network={"pow_bits": 40})
    node.start()
    st = run(status, node)
    assert (st["health"], st["identity"], st["pow_bits"]) == ("booting", "making (proof of "
                                                              "work)", 40)  # fmt: skip
    assert st["health_reason"].startswith("making identity: proof of work at 40 bits")

    async def own_mailbox_works():  # the node serves its own mailbox meanwhile
        me = nacl.signing.SigningKey.generate()
        async with connect(node.host, node.port, node.node_id, timeout=5) as c:
            r = await c.store(bytes(me.verify_key), b"while grinding")
            return [m.hash for m in await c.retrieve_all(me)] == [r.hash]

    assert run(own_mailbox_works)
    started = time.monotonic()
    assert node.stop() == 0
    assert time.monotonic() - started < 10  # the search thread stopped at its next slice
    assert not os.path.exists(os.path.join(node.data_dir, ID_WORK_FILE))
    assert "making_identity" in node.output() and "identity_made" not in node.output()

    node.config["network"]["pow_bits"] = TEST_POW_BITS
    write_toml(node.config_path, node.config)
    node.start()
    wait_for("the proof to be made", lambda: run(status, node)["identity"] == "ready")
    assert os.path.exists(os.path.join(node.data_dir, ID_WORK_FILE))

    async def own_record():
        async with connect(node.host, node.port, node.node_id, timeout=5) as c:
            return (await c.request("nodes", {}))["records"]

    wires = run(own_record)
    rec = verify_record(wires[0], wall_ms(), pow_bits=TEST_POW_BITS)  # raises without work
    assert rec.id == node.node_id and rec.pow
    node.restart()
    assert node.output().count("making_identity") == 0  # this run's log: the proof was kept
    assert run(status, node)["identity"] == "ready"


def test_gossip_refuses_a_record_without_the_networks_work(node_factory):
    node = node_factory(limits=LIMITS, network=NET).start()
    lazy = Identity.generate()
    while True:  # b"" passes 8 bits for 1 id in 256: take one it does not
        try:
            id_pow.verify(lazy.node_id, b"", TEST_POW_BITS)
            lazy = Identity.generate()
        except id_pow.PowError:
            break
    before = run(status, node)["records_refused"]

    async def hello_only(c):
        return await c.request("nodes", {})

    answer = run(as_peer, node, lazy, peer_record(lazy, proof=b""), hello_only)
    assert run(status, node)["records_refused"] == before + 1
    assert lazy.node_id not in [verify_record(w, wall_ms()).id for w in answer["records"]]


def test_the_default_difficulty_is_the_real_one():
    """Test networks lower [network] pow_bits (tests/conftest.py); a node's default is the
    network's real difficulty, ~a minute of a Pi Zero 2 W (bench/pow.py measures it)."""
    assert default_schema().defaults()["network"]["pow_bits"] == id_pow.DEFAULT_BITS == 24
