"""Gossip admission of ids (firmware/proto/gossip.py with pow_bits): records of ids below the
network's difficulty are refused like forged ones and cost the peer that pushed them. The
difficulty here is 10 bits (the network default, 24, would take seconds per key in a test)."""

import random

from nacl.signing import SigningKey

from firmware.proto import pow
from firmware.proto.gossip import PENALTIES, GossipState
from firmware.proto.records import FLAG_REACHABLE, make_record

T0 = 1_800_000_000_000
BITS = 10
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
PEER = bytes(KEYS[3].verify_key)


def rec(i, proof):
    return make_record(KEYS[i], seq=1, addrs=["127.0.0.1"], port=7000 + i, version="t",
                       flags=FLAG_REACHABLE, issued=T0, expires=T0 + 3_600_000, pow=proof)


def weak_proof(node_id):
    """A nonce with some work but less than BITS bits."""
    n = 0
    while True:
        nonce = n.to_bytes(8, "big")
        if 1 << (64 - BITS) <= pow.work(node_id, nonce) < 1 << (64 - BITS + 4):
            return nonce
        n += 1


def test_only_ids_with_enough_work_are_admitted():
    own = rec(0, pow.solve(bytes(KEYS[0].verify_key), BITS))
    g = GossipState(own, rng=random.Random(1), pow_bits=BITS)
    good = rec(1, pow.solve(bytes(KEYS[1].verify_key), BITS))
    weak = rec(2, weak_proof(bytes(KEYS[2].verify_key)))
    none = rec(2, b"")
    r = g.merge(PEER, [good.wire, weak.wire, none.wire], T0)
    assert r.accepted == [good.id]
    assert r.rejected == [(1, "pow"), (2, "pow")]
    assert g.score(PEER) == -2 * PENALTIES["pow"]
    assert g.get(weak.id) is None  # never tested, never live, never placed
    # the same records on a test network with difficulty 0 are fine
    g0 = GossipState(own, rng=random.Random(1))
    assert g0.merge(PEER, [weak.wire], T0).accepted == [weak.id]
