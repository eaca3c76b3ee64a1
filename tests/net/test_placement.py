"""Rendezvous placement (firmware/proto/placement.py)."""

import hashlib

import pytest

from firmware.proto.placement import Placement, rank, weight


def nid(i):
    return hashlib.blake2b(i.to_bytes(4, "big"), digest_size=32).digest()


NODES = [nid(i) for i in range(40)]
R = hashlib.sha256(b"recipient").digest()


def brute(nodes, recipient, k):
    ws = {n: int.from_bytes(hashlib.blake2b(n + recipient, digest_size=8).digest(), "big")
          for n in nodes}
    return tuple(sorted(nodes, key=lambda n: (ws[n], n), reverse=True)[:k])


def test_weight_is_documented_blake2b():
    n = NODES[0]
    assert weight(n, R) == int.from_bytes(hashlib.blake2b(n + R, digest_size=8).digest(), "big")
    assert weight(n, R) != weight(NODES[1], R)


def test_swarm_is_top_k_by_weight():
    p = Placement(NODES, k=5)
    assert p.swarm(R) == brute(NODES, R, 5)
    assert len(set(p.swarm(R))) == 5
    assert Placement(NODES, k=3).swarm(R) == brute(NODES, R, 3)


def test_independent_of_order_and_k_prefix():
    a = Placement(NODES, k=5).swarm(R)
    b = Placement(list(reversed(NODES)), k=7).swarm(R)
    assert b[:5] == a


def test_fewer_nodes_than_k():
    p = Placement(NODES[:3], k=5)
    assert set(p.swarm(R)) == set(NODES[:3]) and len(p.swarm(R)) == 3
    assert Placement([], k=5).swarm(R) == ()


def test_cache_hits_and_invalidation():
    p = Placement(NODES, k=5)
    first = p.swarm(R)
    assert (p.hits, p.misses) == (0, 1)
    assert p.swarm(R) is first
    assert (p.hits, p.misses) == (1, 1)
    assert p.update(list(NODES)) is False and p.epoch == 1  # same set: cache kept
    assert p.swarm(R) is first
    top = first[0]
    assert p.update([n for n in NODES if n != top]) is True and p.epoch == 2
    again = p.swarm(R)
    assert p.misses == 2
    assert again == brute([n for n in NODES if n != top], R, 5)
    assert again[:4] == first[1:]  # the leaver's slot goes to the next in line, nothing else moves


def test_join_displaces_at_most_one_member():
    recips = [hashlib.sha256(bytes([i])).digest() for i in range(200)]
    before = Placement(NODES, k=5)
    after = Placement(NODES + [nid(1000)], k=5)
    changed = 0
    for r in recips:
        old, new = set(before.swarm(r)), set(after.swarm(r))
        assert len(old - new) <= 1
        if old != new:
            assert new - old == {nid(1000)}
            changed += 1
    assert 0 < changed < 200 * 3 * 5 // 41  # expected 200 * 5/41 ~ 24, well under 3x


def test_cache_is_bounded():
    p = Placement(NODES, k=5, cache_size=3)
    recips = [hashlib.sha256(bytes([i])).digest() for i in range(5)]
    for r in recips:
        p.swarm(r)
    assert len(p._cache) == 3 and list(p._cache) == recips[2:]


def test_bad_input():
    with pytest.raises(ValueError):
        Placement(NODES, k=0)
    with pytest.raises(ValueError):
        Placement([b"short"])
    with pytest.raises(ValueError):
        Placement(NODES).swarm(b"short")


def test_rank_matches_placement():
    assert rank(NODES, R, 5) == Placement(NODES).swarm(R)
