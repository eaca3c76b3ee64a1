"""Anti-entropy, hand-off, owners' proofs and delete exchange in-process: real SQLite stores,
the real Replicator ops, and links that hand each request (CBOR round-tripped, as on the wire)
straight to the peer's op. Exact counts; no sockets, no timing."""

import os

import cbor2
import nacl.signing
import pytest
import trio

from firmware.identity import Identity
from firmware.link import LinkDown
from firmware.logs import Log
from firmware.net.replica_wire import message_wire
from firmware.net.replication import Replicator
from firmware.proto.copies import delete_proof, store_proof
from firmware.proto.errors import BadSignature
from firmware.proto.gossip import PENALTIES
from firmware.proto.hashing import message_hash, sign_request
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
        self.scores = {}

    def charge(self, peer, reason):
        self.scores[peer] = self.scores.get(peer, 0) - PENALTIES[reason]

    def banned(self, peer):
        return self.scores.get(peer, 0) <= -100

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
              "fetch_missing": r.op_fetch_missing, "tombstones": r.op_tombstones}[op]  # fmt: skip
        frame = cbor2.loads(cbor2.dumps({"op": op, "args": args}))
        result = await fn(frame, ConnInfo("127.0.0.1", peer_id=self.me), NOW)
        return cbor2.loads(cbor2.dumps(result))


def msg(recipient, data, ns=0, owner=None):
    """A message; in a private namespace signed by ``owner`` (its proof kept, as a store does)."""
    ts = NOW - 1000
    h = message_hash(recipient, ns, ts, data)
    proof = None
    if owner is not None:
        proof = store_proof(NOW, sign_request(owner, "store", recipient, ns, NOW, msg_hash=h))
    return Message(h, recipient, ns, ts, NOW + 3_600_000, data, proof)


def signed_delete(owner, ns, hashes):
    r = bytes(owner.verify_key)
    return delete_proof(NOW, sign_request(owner, "delete", r, ns, NOW, hashes=hashes))


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


def owner_where(pred):
    while True:
        k = nacl.signing.SigningKey(os.urandom(32))
        if pred(rank([i.node_id for i in IDS], bytes(k.verify_key), 2)):
            return k


async def test_a_member_that_missed_a_delete_is_shown_it_and_deletes_too(trio_nodes):
    a, b, _ = await trio_nodes(k=3)
    owner = owner_where(lambda s: True)
    r = bytes(owner.verify_key)
    m, keep = msg(r, b"secret"), msg(r, b"kept")
    for node in (a, b):
        await node.store.put(m)
        await node.store.put(keep)  # b was off during the delete: it still holds m
    proof = signed_delete(owner, 0, [m.hash])
    assert await a.store.delete(r, 0, [m.hash], proof=proof) == [m.hash]
    await a._sync_with(b.node_id)
    assert await hashes(a, r) == await hashes(b, r) == {keep.hash}
    assert a.counters["repairs_in"] == 0  # never fetched back
    assert (a.counters["deletes_sent"], b.counters["deletes_applied"]) == (1, 1)
    assert await b.store.is_deleted([m.hash]) == {m.hash}  # b's own durable tombstone now
    # a copy of it sent to either is "handled" (the sender may drop it) and not stored
    from_a = ConnInfo("127.0.0.1", peer_id=a.node_id)
    res = await b.op_replicate({"op": "handoff", "args": {"messages": [message_wire(m)]}},
                               from_a, NOW)  # fmt: skip
    assert res == {"stored": [m.hash]} and await hashes(b, r) == {keep.hash}
    # converged: the next round shows nothing again
    await a._sync_with(b.node_id)
    assert a.counters["deletes_sent"] == 1


async def test_a_delete_not_signed_by_the_owner_deletes_nothing(trio_nodes):
    a, b, _ = await trio_nodes(k=3)
    owner, other = owner_where(lambda s: True), nacl.signing.SigningKey.generate()
    r = bytes(owner.verify_key)
    m, m2 = msg(r, b"mine"), msg(r, b"also mine")
    await b.store.put(m)
    await b.store.put(m2)
    from_a = ConnInfo("127.0.0.1", peer_id=a.node_id)
    forged = {"recipient": r, "ns": 0, "hashes": [m.hash],
              "proof": delete_proof(NOW, sign_request(other, "delete", r, 0, NOW,
                                                      hashes=[m.hash]))}  # fmt: skip
    # and the owner's real delete of m2, replayed for m: the signature covers the hashes
    moved = {"recipient": r, "ns": 0, "hashes": [m.hash], "proof": signed_delete(owner, 0, [m2.hash])}
    res = await b.op_tombstones({"op": "tombstones", "args": {"deletes": [forged, moved]}}, from_a, NOW)
    assert res == {"deleted": 0} and b.counters["deletes_unverified"] == 2
    assert await hashes(b, r) == {m.hash, m2.hash} and await b.store.is_deleted([m.hash]) == set()


async def test_a_fresh_store_of_a_deleted_message_stays_deleted(trio_nodes):
    """v1 let a client's "fresh" copy clear the tombstone; the store's tombstones are final (to
    send it again, a client sends a new message), so nobody can undo the owner's delete."""
    a, b, _ = await trio_nodes(k=3)
    m = msg(b"\x09" * 32, b"again")
    await a.store.delete(m.recipient, 0, [m.hash])
    from_b = ConnInfo("127.0.0.1", peer_id=b.node_id)
    item = dict(message_wire(m), fresh=True)
    assert await a.op_replicate({"op": "replicate", "args": {"messages": [item]}}, from_b, NOW) \
        == {"stored": [m.hash]}
    assert await hashes(a, m.recipient) == set()


async def test_a_private_copy_needs_its_owners_proof_and_a_bad_one_costs_the_peer(trio_nodes):
    a, b, _ = await trio_nodes(k=3)
    owner = owner_where(lambda s: True)
    r = bytes(owner.verify_key)
    good = msg(r, b"signed", ns=7, owner=owner)
    unsigned = dict(message_wire(good), data=b"injected")
    del unsigned["proof"]
    stolen = dict(message_wire(good), data=b"other data, the proof of another message")
    from_b = ConnInfo("127.0.0.1", peer_id=b.node_id)
    for bad in (unsigned, stolen):
        with pytest.raises(BadSignature) as info:
            await a.op_replicate({"op": "replicate", "args": {"messages": [message_wire(good),
                                                                           bad]}}, from_b, NOW)
        assert info.value.field == "proof"
    assert await hashes(a, r) == set()  # the batch is refused whole
    assert a.counters["copies_refused"] == 2 and a.roster.scores[b.node_id] == -50
    res = await a.op_replicate({"op": "replicate", "args": {"messages": [message_wire(good)]}},
                               from_b, NOW)  # fmt: skip
    assert res == {"stored": [good.hash]}
    assert (await a.store.get_by_hash([good.hash]))[0].proof == good.proof
    # two more forgeries: b is below the ban score, and its copies are not even looked at
    for _ in range(2):
        with pytest.raises(BadSignature):
            await a.op_replicate({"op": "replicate", "args": {"messages": [unsigned]}}, from_b, NOW)
    from firmware.proto.errors import BadRequest

    with pytest.raises(BadRequest, match="takes no copies from yours"):
        await a.op_replicate({"op": "replicate", "args": {"messages": [message_wire(good)]}},
                             from_b, NOW)  # fmt: skip


async def test_anti_entropy_carries_owners_proofs(trio_nodes):
    a, b, c = await trio_nodes(k=3)
    owner = owner_where(lambda s: True)
    r = bytes(owner.verify_key)
    m = msg(r, b"private", ns=-3, owner=owner)
    await b.store.put(m)
    await a._sync_with(b.node_id)  # fetched from b
    await b._sync_with(c.node_id)  # sent to c
    for node in (a, c):
        assert (await node.store.get_by_hash([m.hash]))[0].proof == m.proof
    assert a.counters["repairs_in"] == 1 and b.counters["repairs_out"] == 1


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

    # a private store's copies carry the owner's signature over the hash: every member keeps it
    owner = nacl.signing.SigningKey.generate()
    ro = bytes(owner.verify_key)
    hp = message_hash(ro, 4, NOW - 1000, b"private")
    sig = sign_request(owner, "store", ro, 4, NOW, msg_hash=hp)
    preq = StoreRequest(id=8, recipient=ro, ns=4, ts=NOW - 1000, ttl=60_000, data=b"private",
                        sig_ts=NOW, sig=sig)  # fmt: skip
    copies = a.start_store(preq, client, NOW)
    await a.store.put(Message(hp, ro, 4, NOW - 1000, NOW + 59_000, b"private",
                              store_proof(NOW, sig)))  # fmt: skip
    assert await copies.finish({"hash": hp, "new": True, "expiry": NOW + 59_000}) == {"replicas": 3}
    for node in (b, c):
        assert (await node.store.get_by_hash([hp]))[0].proof == store_proof(NOW, sig)

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
