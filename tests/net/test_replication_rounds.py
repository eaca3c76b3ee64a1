"""Anti-entropy and hand-off rounds in-process: real SQLite stores, the real Replicator ops, and
links that hand each request (CBOR round-tripped, as on the wire) straight to the peer's op.
Exact counts; no sockets, no timing."""

import os

import cbor2
import nacl.signing
import pytest
import trio

from firmware.identity import Identity
from firmware.link import LinkDown
from firmware.logs import Log
from firmware.net.replication import Replicator, message_wire
from firmware.proto.hashing import message_hash
from firmware.proto.placement import Placement, rank
from firmware.serve.pipeline import ConnInfo
from firmware.store import Message, MessageStore

NOW = 1_800_000_000_000
IDS = [Identity(bytes([i + 1]) * 32) for i in range(3)]


class Cfg:
    replicate_timeout = 5.0
    anti_entropy_interval = 30.0
    settle_delay = 0.0


class StaticRoster:
    """The roster's face replication uses (placement, addresses, changes) over a fixed set."""

    def __init__(self, ids, k):
        self.placement = Placement(ids, k=k)

    def address_of(self, node_id):
        return ("127.0.0.1", 1)

    def swarm(self, recipient):
        return self.placement.swarm(recipient)

    async def changed(self):
        await trio.sleep_forever()


class DirectLinks:
    """request() runs the target replicator's op as if it came over an authenticated link."""

    def __init__(self, me, nodes, down=()):
        self.me, self.nodes, self.down = me, nodes, set(down)
        self.calls = []

    async def request(self, node_id, address, op, args, *, timeout=None):
        self.calls.append((node_id, op))
        if node_id in self.down:
            raise LinkDown("down")
        r = self.nodes[node_id]
        fn = {"replicate": r.op_replicate, "handoff": r.op_replicate, "summary": r.op_summary,
              "fetch_missing": r.op_fetch_missing}[op]  # fmt: skip
        frame = cbor2.loads(cbor2.dumps({"op": op, "args": args}))
        result = await fn(frame, ConnInfo("127.0.0.1", peer_id=self.me), NOW)
        return cbor2.loads(cbor2.dumps(result))


def msg(recipient, data, ns=0):
    ts = NOW - 1000
    return Message(message_hash(recipient, ns, ts, data), recipient, ns, ts, NOW + 3_600_000, data)


@pytest.fixture
async def trio_nodes(tmp_path, nursery):
    async def make(k, down=()):
        ids = [i.node_id for i in IDS]
        nodes = {}
        for ident in IDS:
            store = MessageStore.open(tmp_path / f"{ident.id_hex[:8]}.sqlite3", quota_bytes=1 << 30,
                                      clock_ms=lambda: NOW)  # fmt: skip
            await nursery.start(store.run)
            links = DirectLinks(ident.node_id, nodes, down)
            nodes[ident.node_id] = Replicator(ident, store, StaticRoster(ids, k), links, Cfg(),
                                              clock_ms=lambda: NOW, log=Log("error"))  # fmt: skip
        return [nodes[i] for i in ids]

    return make


async def hashes(rep, recipient):
    return {h for _ns, h, _exp in await rep.store.hashes_for(recipient)}


def recipient_where(pred):
    while True:
        r = bytes(nacl.signing.SigningKey(os.urandom(32)).verify_key)
        if pred(rank([i.node_id for i in IDS], r, 2)):
            return r


async def test_anti_entropy_repairs_both_ways_then_rests(trio_nodes):
    a, b, c = await trio_nodes(k=3)
    r = recipient_where(lambda s: True)
    m1, m2, m3, m4 = (msg(r, bytes([i])) for i in range(4))
    for m in (m1, m2):
        await a.store.put(m)
    for m in (m2, m3):
        await b.store.put(m)
    await c.store.put(m4)
    await a._sync_with(b.node_id)  # one peer at a time: exact counts
    assert await hashes(a, r) == await hashes(b, r) == {m1.hash, m2.hash, m3.hash}
    assert (a.counters["repairs_in"], a.counters["repairs_out"]) == (1, 1)
    await a._sync_with(c.node_id)
    everything = {m1.hash, m2.hash, m3.hash, m4.hash}
    assert await hashes(a, r) == await hashes(c, r) == everything
    assert (a.counters["repairs_in"], a.counters["repairs_out"]) == (2, 4)
    await b.anti_entropy_round()
    assert await hashes(b, r) == everything
    # converged: a round is one summary per peer and moves nothing
    calls, before = len(a.pool.calls), dict(a.counters)
    await a.anti_entropy_round()
    assert sorted(a.pool.calls[calls:]) == sorted([(b.node_id, "summary"), (c.node_id, "summary")])
    assert (a.counters["repairs_in"], a.counters["repairs_out"]) == (2, 4)
    assert a.counters["anti_entropy_rounds"] == before["anti_entropy_rounds"] + 1


async def test_only_shared_recipients_are_compared(trio_nodes):
    a, b, c = await trio_nodes(k=2)
    ia, ib = a.node_id, b.node_id
    r_ab = recipient_where(lambda s: set(s) == {ia, ib})
    r_ac = recipient_where(lambda s: set(s) == {ia, c.node_id})
    await a.store.put(msg(r_ab, b"1"))
    await a.store.put(msg(r_ac, b"2"))
    await a.anti_entropy_round()
    assert await hashes(b, r_ab) == {msg(r_ab, b"1").hash}
    assert await hashes(b, r_ac) == set()  # b is not in r_ac's swarm: never sent there
    assert await hashes(c, r_ac) == {msg(r_ac, b"2").hash}


async def test_handoff_drops_only_after_every_owner_confirmed(trio_nodes):
    a, b, c = await trio_nodes(k=2, down=())
    r = recipient_where(lambda s: a.node_id not in s)
    m = msg(r, b"moving")
    await a.store.put(m)
    a.pool.down = {c.node_id}
    await a.handoff_round()
    assert await hashes(a, r) == {m.hash}  # c did not confirm: a keeps its copy
    assert await hashes(b, r) == {m.hash} and a.counters["handoff_dropped"] == 0
    a.pool.down = set()
    await a.handoff_round()
    assert await hashes(a, r) == set() and a.counters["handoff_dropped"] == 1
    assert await hashes(c, r) == {m.hash}


async def test_node_ops_refuse_links_without_hello(trio_nodes):
    a, _, _ = await trio_nodes(k=3)
    from firmware.proto.errors import BadRequest

    for op in (a.op_replicate, a.op_summary, a.op_fetch_missing):
        with pytest.raises(BadRequest, match="nodes only"):
            await op({"op": "x", "args": {}}, ConnInfo("127.0.0.1"), NOW)


async def test_replicate_rejects_a_bad_message_and_stores_nothing_of_it(trio_nodes):
    a, b, _ = await trio_nodes(k=3)
    from firmware.proto.errors import BadRequest

    good = {"recipient": b"\x01" * 32, "ns": 0, "ts": NOW - 10, "expiry": NOW + 60_000,
            "data": b"ok"}  # fmt: skip
    with pytest.raises(BadRequest, match="expiry"):
        await a.op_replicate({"op": "replicate", "args": {"messages": [good, dict(good, expiry=1)]}},
                             ConnInfo("127.0.0.1", peer_id=b.node_id), NOW)  # fmt: skip
    assert await hashes(a, b"\x01" * 32) == set()


async def test_a_deleted_message_is_not_brought_back(trio_nodes):
    a, b, _ = await trio_nodes(k=3)
    r = recipient_where(lambda s: True)
    m = msg(r, b"secret")
    await a.store.put(m)
    await b.store.put(m)  # b missed the delete (it was off)

    class Delete:
        op, recipient, ns, hashes, sig_ts, sig = "delete", r, 0, (m.hash,), NOW, bytes(64)

    assert await a.store.delete(r, 0, [m.hash]) == [m.hash]
    from_node = ConnInfo("127.0.0.1", peer_id=b.node_id)  # as if forwarded: no re-forwarding
    assert await a.after_write(Delete, {"deleted": [m.hash]}, from_node, NOW) == {}
    await a._sync_with(b.node_id)
    assert await hashes(a, r) == set() and a.counters["repairs_in"] == 0
    res = await a.op_replicate({"op": "handoff", "args": {"messages": [message_wire(m)]}},
                               from_node, NOW)  # fmt: skip
    assert res == {"stored": [m.hash]}  # "handled": the sender may drop its copy
    assert await hashes(a, r) == set()
    assert a._is_dead(m.hash, NOW + 30 * 86_400_000) is False  # tombstones end with max ttl


async def test_a_fresh_client_store_clears_the_tombstone(trio_nodes):
    a, b, _ = await trio_nodes(k=3)
    m = msg(b"\x09" * 32, b"again")
    a._tombstone([m.hash], NOW)
    from_b = ConnInfo("127.0.0.1", peer_id=b.node_id)
    item = message_wire(m)
    assert await a.op_replicate({"op": "replicate", "args": {"messages": [item]}}, from_b, NOW) \
        == {"stored": [m.hash]}
    assert await hashes(a, m.recipient) == set()  # repair traffic: still deleted
    item["fresh"] = True
    assert await a.op_replicate({"op": "replicate", "args": {"messages": [item]}}, from_b, NOW) \
        == {"stored": [m.hash]}
    assert await hashes(a, m.recipient) == {m.hash}


async def test_store_is_forwarded_while_written_here(trio_nodes, nursery):
    from firmware.proto.schema import StoreRequest

    a, b, c = await trio_nodes(k=3)
    a._nursery = nursery  # what Replicator.run provides
    r = b"\x0a" * 32
    req = StoreRequest(id=7, recipient=r, ns=0, ts=NOW - 1000, ttl=60_000, data=b"hi")
    h = message_hash(r, 0, NOW - 1000, b"hi")
    client = ConnInfo("127.0.0.1")
    copies = a.start_store(req, client, NOW)  # copies leave now...
    await a.store.put(Message(h, r, 0, NOW - 1000, NOW + 59_000, b"hi"))  # ...while a writes
    result = {"hash": h, "new": True, "expiry": NOW + 59_000}
    assert await copies.finish(result) == {"replicas": 3}
    assert await hashes(b, r) == await hashes(c, r) == {h}
    assert a.counters["replicas_last"] == 3

    calls = len(a.pool.calls)
    from_node = ConnInfo("127.0.0.1", peer_id=b.node_id)
    assert a.start_store(req, from_node, NOW) is None  # a node's copy: never forwarded twice
    assert len(a.pool.calls) == calls


async def test_one_index_scan_serves_every_peer_and_tracks_our_writes(trio_nodes):
    a, b, c = await trio_nodes(k=3)
    r = recipient_where(lambda s: True)
    m1, m2 = msg(r, b"1"), msg(r, b"2")
    await a.store.put(m1)
    await a._sync_with(b.node_id)
    await a._sync_with(c.node_id)
    assert a.counters["index_scans"] == 1
    # a copy arriving by replicate updates the cached index in place: offered on, no rescan
    await a.op_replicate({"op": "replicate", "args": {"messages": [message_wire(m2)]}},
                         ConnInfo("127.0.0.1", peer_id=b.node_id), NOW)  # fmt: skip
    await a._sync_with(c.node_id)
    assert await hashes(c, r) == {m1.hash, m2.hash} and a.counters["index_scans"] == 1
    a.roster.placement.update([i.node_id for i in IDS[:2]])  # c left: a new live set
    await a._sync_with(b.node_id)
    assert a.counters["index_scans"] == 2
