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


# -- v2: networks rank first, diversity rules, relays, fallback levels ----------------------------

from types import SimpleNamespace  # noqa: E402

import nacl.signing  # noqa: E402

from firmware.proto.placement import (  # noqa: E402
    Member,
    address_nets,
    member_of,
    members_from_records,
    place,
)
from firmware.proto.records import FLAG_REACHABLE, FLAG_RELAYED, make_record  # noqa: E402


def w(key, r=R):
    return hashlib.blake2b(key + r, digest_size=8).digest()


def reference(members, recipient, k=5):
    """docs/protocol.md "Placement" spelled out the slow way, as an independent check."""
    order = sorted(members, reverse=True, key=lambda m: (
        w(m.net16, recipient), m.net16, w(m.net24, recipient), w(m.node_id, recipient),
        m.node_id))  # fmt: skip
    chosen, used24, per16 = [], set(), {}
    for cap, strict in ((1, True), (2, True), (None, True), (None, False)):
        for m in order:
            if m.node_id in chosen or len(chosen) == k:
                continue
            if strict and used24 & m.nets24:
                continue
            if cap is not None and any(per16.get(n, 0) >= cap for n in m.nets16):
                continue
            chosen.append(m.node_id)
            used24 |= m.nets24
            for n in m.nets16:
                per16[n] = per16.get(n, 0) + 1
    return tuple(chosen)


def node(i, host, relays=()):
    """A Member at ``host``; ``relays``: [(relay id, relay host or None)]."""
    rec = SimpleNamespace(id=nid(i), addrs=(host,), relays=tuple(r for r, _ in relays))
    return member_of(rec, [h for _, h in relays])


def ground(n_keys, host, recipient, keep, start=10_000):
    """An attacker's ground ids: of ``n_keys`` made, the ``keep`` that rank highest by id."""
    best = sorted(range(start, start + n_keys), key=lambda i: w(nid(i), recipient))[-keep:]
    return [node(i, host) for i in best]


@pytest.mark.parametrize("host, nets", [
    ("203.0.113.7", (b"4\xcb\x00", b"4\xcb\x00\x71")),
    ("::ffff:203.0.113.7", (b"4\xcb\x00", b"4\xcb\x00\x71")),  # IPv4-mapped counts as IPv4
    ("2001:db8:1:2::5", (b"6\x20\x01\x0d\xb8", b"6\x20\x01\x0d\xb8\x00\x01")),  # /32, /48
    ("[2001:db8::1]", (b"6\x20\x01\x0d\xb8", b"6\x20\x01\x0d\xb8\x00\x00")),
    ("fe80::1%eth0", (b"6\xfe\x80\x00\x00", b"6\xfe\x80\x00\x00\x00\x00")),
    ("Node.Example.org.", (b"n", b"nnode.example.org")),  # names: one shared /16
])  # fmt: skip
def test_address_networks(host, nets):
    assert address_nets(host) == nets


def test_a_ground_id_from_a_crowded_24_is_not_placed():
    honest = [node(i, f"10.{i}.0.1") for i in range(20)]
    attacker = ground(3000, "198.51.100.9", R, keep=40)  # 40 best of 3,000 keys, one /24
    everyone = honest + attacker
    attacker_ids = {m.node_id for m in attacker}
    # plain id ranking (v1): the ground ids take every place
    assert set(rank([m.node_id for m in everyone], R, 5)) <= attacker_ids
    swarm = Placement(everyone).swarm(R)
    assert swarm == reference(everyone, R)
    assert len(set(swarm) & attacker_ids) <= 1  # one /24: one place at most
    # and which networks hold the places does not depend on the ids at all: grind other keys
    again = Placement(honest + ground(3000, "198.51.100.9", R, keep=40, start=50_000)).swarm(R)
    assert [i for i in swarm if i not in attacker_ids] == [
        i for i in again if i not in {m.node_id for m in attacker}
        and i in {h.node_id for h in honest}]


def test_one_place_per_16_while_there_are_enough_networks():
    members = [node(i, f"10.{i % 7}.{i}.1") for i in range(40)]  # 7 /16s, distinct /24s
    net_of = {m.node_id: m.net16 for m in members}
    for j in range(50):
        r = hashlib.sha256(bytes([j])).digest()
        swarm, level = Placement(members).swarm_level(r)
        assert swarm == reference(members, r) and level == 0
        assert len({net_of[i] for i in swarm}) == 5


def test_relayed_nodes_count_by_their_relays_networks():
    relay = node(1, "10.1.0.1")
    others = [node(i, f"10.{i}.0.1") for i in range(2, 30)]
    # find a recipient for which the relay is in the swarm and the relayed node, placed
    # alone in its own network, would be too
    behind = node(99, "192.0.2.50", relays=[(nid(1), "10.1.0.1")])
    alone = node(99, "192.0.2.50")
    for j in range(2000):
        r = hashlib.sha256(b"r" + j.to_bytes(2, "big")).digest()
        if {nid(1), nid(99)} <= set(place([relay, alone] + others, r)):
            break
    else:
        pytest.fail("no recipient with both in the swarm")
    swarm = place([relay, behind] + others, r)
    assert nid(1) in swarm and nid(99) not in swarm  # relay and relayed node: one place
    assert swarm == reference([relay, behind] + others, r)
    # a relay not in the live set is a network of its own: two nodes behind it exclude each other
    twin_a = node(98, "192.0.2.60", relays=[(nid(1), None)])
    twin_b = node(97, "203.0.113.60", relays=[(nid(1), None)])
    for j in range(300):
        r = hashlib.sha256(b"t" + j.to_bytes(2, "big")).digest()
        s = place([twin_a, twin_b] + others, r)
        assert not {nid(98), nid(97)} <= set(s)
        assert s == reference([twin_a, twin_b] + others, r)


def test_two_boxes_of_one_household_take_one_place():
    home = [node(200, "198.51.100.20"), node(201, "198.51.100.20")]
    others = [node(i, f"10.{i}.0.1") for i in range(30)]
    both = 0
    for j in range(300):
        r = hashlib.sha256(b"h" + j.to_bytes(2, "big")).digest()
        s = place(home + others, r)
        both += {nid(200), nid(201)} <= set(s)
        assert s == reference(home + others, r)
    assert both == 0
    # in a network of the household and three others, both boxes hold copies (level 3)
    small = home + others[:3]
    s, level = Placement(small).swarm_level(R)
    assert len(s) == 5 and level == 3 and s == reference(small, R)


@pytest.mark.parametrize("hosts, level", [
    (["127.0.0.1"] * 8, 3),  # a loopback test cluster: one /24, plain ranking fills it
    (["10.0.0.1", "10.1.0.1", "10.2.0.1", "10.3.0.1", "10.4.0.1"], 0),
    (["10.0.0.1", "10.0.1.1", "10.1.0.1", "10.1.1.1", "10.2.0.1", "10.2.1.1"], 1),  # 3 /16s
    (["10.0.0.1", "10.0.1.1", "10.0.2.1", "10.1.0.1", "10.1.1.1", "10.1.2.1"], 2),  # 2 /16s
    (["10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.2.1", "10.0.3.1"], 3),  # 4 /24s for 5 places
])  # fmt: skip
def test_small_and_young_networks_relax_in_a_fixed_order(hosts, level):
    members = [node(i, h) for i, h in enumerate(hosts)]
    p = Placement(members)
    got = set()
    for j in range(20):
        r = hashlib.sha256(b"y" + bytes([j])).digest()
        swarm, lvl = p.swarm_level(r)
        assert len(swarm) == min(5, len(members)) and swarm == reference(members, r)
        assert Placement(list(reversed(members))).swarm(r) == swarm  # every node agrees
        got.add(lvl)
    assert max(got) == level


def test_loopback_cluster_places_like_v1():
    members = [node(i, "127.0.0.1") for i in range(12)]
    for j in range(30):
        r = hashlib.sha256(b"l" + bytes([j])).digest()
        assert set(place(members, r)) == set(rank([m.node_id for m in members], r, 5))


def test_members_from_signed_records():
    keys = [nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(3)]
    t0 = 1_800_000_000_000
    relay = make_record(keys[0], seq=1, addrs=["203.0.113.5"], port=1, version="t",
                        flags=FLAG_REACHABLE, issued=t0, expires=t0 + 60_000)
    relayed = make_record(keys[1], seq=1, addrs=["198.51.100.7", "10.0.0.2"], port=1,
                          version="t", flags=FLAG_RELAYED, issued=t0, expires=t0 + 60_000,
                          relays=[relay.id, bytes(keys[2].verify_key)])  # 2nd relay not live
    a, b = members_from_records([relay, relayed])
    assert a == Member(relay.id, b"4\xcb\x00", b"4\xcb\x00\x71", frozenset({b"4\xcb\x00"}),
                       frozenset({b"4\xcb\x00\x71"}))  # fmt: skip
    assert b.net16 == b"4\xc6\x33" and b.net24 == b"4\xc6\x33\x64"  # addrs[0] only
    ghost = b"r" + bytes(keys[2].verify_key)
    assert b.nets16 == {b"4\xc6\x33", b"4\xcb\x00", ghost}
    assert b.nets24 == {b"4\xc6\x33\x64", b"4\xcb\x00\x71", ghost}


def test_update_with_members_keeps_cache_until_something_changes():
    members = [node(i, f"10.{i}.0.1") for i in range(10)]
    p = Placement(members)
    first = p.swarm(R)
    assert p.update(list(reversed(members))) is False and p.swarm(R) is first
    moved = [node(0, "10.99.0.1")] + members[1:]  # same id, new address: a change
    assert p.update(moved) is True and p.epoch == 2
    assert p.swarm(R) == reference(moved, R)
    with pytest.raises(ValueError):
        Placement([object()])
