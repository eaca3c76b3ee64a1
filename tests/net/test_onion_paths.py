"""OnionClient path choice (v2 rules, firmware/proto/paths.py): distinct hops, final hop in the
swarm the nodes compute (network-ranked placement over addresses), others outside it, no two
hops in one /16 and none in the client's, relayed nodes never first, failed hops avoided for a
while (virtual time); and the sizes and times an onion client asks for."""

import random

import nacl.signing
import pytest
import trio

from firmware.client.onion_client import (
    PAGES,
    NoPath,
    OnionClient,
    hops_from_records,
    member_of_hop,
)
from firmware.proto import onion
from firmware.proto.codec import encode_map
from firmware.proto.placement import Placement, address_nets, members_from_records, rank, weight
from firmware.proto.records import FLAG_REACHABLE, FLAG_RELAYED, make_record

NOW = 1_800_000_000_000


def _key(i):
    return nacl.signing.SigningKey(i.to_bytes(2, "big") * 16)


def _nodes(n, relayed=(), host=lambda i: "127.0.0.1"):
    out = []
    for i in range(n):
        nid = bytes(_key(i + 1).verify_key)
        out.append(onion.Hop(nid, host(i), 7000 + i, relayed=i in relayed))
    return out


def _client(nodes, seed=1, **kw):
    return OnionClient(nodes, pool=None, rng=random.Random(seed), **kw)


def _spread(i):
    return f"10.{i}.0.1"  # one node per /16


async def test_one_network_paths_are_distinct_end_in_the_swarm_and_avoid_it():
    """A loopback cluster (one /24): placement is plain id ranking, as on the nodes; the rules
    relax all the way, yet the other hops stay outside the swarm while 7 nodes are."""
    nodes = _nodes(12)
    oc = _client(nodes)
    for i in range(50):
        rcpt = bytes([i]) * 32
        swarm = set(rank([n.node_id for n in nodes], rcpt, 5))
        path = oc.choose_path(rcpt)
        ids = [h.node_id for h in path]
        assert len(set(ids)) == 3
        assert ids[-1] in swarm
        assert not set(ids[:-1]) & swarm
        assert all(h.x25519_pub == onion.x25519_public_of(h.node_id) for h in path)
    assert oc.last_level == 4  # one /24: only "any distinct nodes" is possible


async def test_spread_networks_give_one_hop_per_slash16_and_none_in_the_clients():
    nodes = _nodes(12, host=_spread)
    oc = _client(nodes, client_host="10.3.77.9")
    for i in range(60):
        rcpt = bytes([i]) * 32
        path = oc.choose_path(rcpt)
        nets = [address_nets(h.host)[0] for h in path]
        assert len(set(nets)) == 3 and address_nets("10.3.0.1")[0] not in nets
        assert path[-1].node_id in oc.placement.swarm(rcpt)
        assert oc.last_level == 0


async def test_finals_follow_network_ranked_placement_not_id_ranking():
    """Ids ground (300 keys made, the best kept) to the top of the id ranking, all in one /24:
    the id ranking would give them the whole swarm; the nodes' placement - and so the client's
    - takes one of them (here the one its network earned: a mailbox whose ranking puts that
    network first). The client computes exactly what the nodes compute from records."""
    honest = _nodes(8, host=_spread)
    crowd16 = address_nets("203.0.113.7")[0]
    rcpt = next(r for r in (bytes([i]) * 32 for i in range(256))  # its network ranks first
                if weight(crowd16, r) > max(weight(address_nets(h.host)[0], r) for h in honest))
    keys = {bytes(k.verify_key): k for k in (_key(100 + i) for i in range(300))}
    ground = rank(list(keys), rcpt, 5)  # the attacker's best five for this mailbox
    assert set(rank(list(keys) + [h.node_id for h in honest], rcpt, 5)) == set(ground)
    crowd = [onion.Hop(i, "203.0.113.7", 9000) for i in ground]
    oc = _client(honest + crowd)
    swarm = oc.swarm_of(rcpt)
    assert len(swarm) == 5 and len(set(swarm) & set(ground)) == 1
    signer = {**keys, **{h.node_id: _key(i + 1) for i, h in enumerate(honest)}}
    records = [make_record(signer[h.node_id], seq=1, addrs=[h.host], port=h.port, version="t",
                           flags=FLAG_REACHABLE, issued=NOW, expires=NOW + 60_000)
               for h in honest + crowd]  # fmt: skip
    assert Placement(members_from_records(records)).swarm(rcpt) == tuple(swarm)


async def test_a_relayed_node_counts_in_its_relays_network():
    relay = _key(1)
    relayed = _key(2)
    recs = [make_record(relay, seq=1, addrs=["10.1.0.1"], port=1, version="t",
                        flags=FLAG_REACHABLE, issued=NOW, expires=NOW + 60_000),
            make_record(relayed, seq=1, addrs=["10.2.0.1"], port=1, version="t",
                        flags=FLAG_RELAYED, relays=[bytes(relay.verify_key)], issued=NOW,
                        expires=NOW + 60_000)]  # fmt: skip
    hops = hops_from_records(recs)
    assert hops[1].relay_hosts == ("10.1.0.1",) and hops[1].relayed
    assert member_of_hop(hops[1]) == members_from_records(recs)[1]


async def test_relayed_nodes_are_never_the_first_hop():
    nodes = _nodes(6, relayed={0, 1, 2, 3})
    oc = _client(nodes)
    for i in range(40):
        assert not oc.choose_path(bytes([i]) * 32 if i % 2 else None)[0].relayed
    with pytest.raises(NoPath, match="every usable node is relayed"):
        _client(_nodes(4, relayed={0, 1, 2, 3})).choose_path(None)


async def test_final_choices_one_means_the_top_member():
    nodes = _nodes(12)
    oc = _client(nodes, final_choices=1)
    rcpt = b"\x07" * 32
    top = rank([n.node_id for n in nodes], rcpt, 5)[0]
    assert {oc.choose_path(rcpt)[-1].node_id for _ in range(20)} == {top}


async def test_small_networks_fall_back_to_any_distinct_nodes():
    nodes = _nodes(4)  # swarm of 4 covers everyone
    oc = _client(nodes)
    path = oc.choose_path(b"\x01" * 32)
    assert len({h.node_id for h in path}) == 3


async def test_a_failed_hop_is_avoided_until_its_penalty_ends(autojump_clock):
    nodes = _nodes(5)
    oc = _client(nodes, penalty_s=60.0)
    bad = nodes[2].node_id
    oc.penalise(bad)
    for _ in range(30):
        assert bad not in {h.node_id for h in oc.choose_path(None)}
    await trio.sleep(61)
    assert any(bad in {h.node_id for h in oc.choose_path(None)} for _ in range(30))


async def test_too_few_nodes_is_a_clear_error():
    with pytest.raises(NoPath, match="needs 3 distinct nodes, only 2 known"):
        _client(_nodes(2)).choose_path(None)


def test_the_client_waits_longer_than_every_hop_together():
    """A dead last hop is reported by its neighbour after HOP_TIMEOUT_S; the first hop's answer
    comes back only after its own wait for the second, and so on."""
    for hops in (1, 3, 5):
        oc = _client(_nodes(6), hops=hops)
        assert oc.timeout > hops * onion.HOP_TIMEOUT_S
    assert _client(_nodes(6), timeout=2.0).timeout == 2.0  # the caller's choice stands


def test_retrieve_pages_fit_their_size_classes():
    """A fetch's first page (most fetches: an empty or small mailbox) travels in the 4 KiB
    class like a store, a big mailbox's later pages in the 80 KiB and then 1020 KiB ones; no
    page's answer can outgrow its class except by a single message too big for it, which the
    final hop answers with too_large (the client then asks the next class)."""

    def frame(max_bytes, max_count):
        return {"v": 2, "id": 0, "op": "retrieve", "args": {
            "recipient": b"\x01" * 32, "ns": 0, "after": None, "max_count": max_count,
            "max_bytes": max_bytes, "sig_ts": NOW, "sig": b"\x00" * 64}}

    classes = [onion.response_class_for(encode_map(frame(*p))) for p in PAGES]
    assert classes == [4_096, 81_920, 1_044_480]
    for (max_bytes, max_count), size in zip(PAGES, classes, strict=True):
        # the fullest answer a page can have: max_count messages sharing max_bytes of data
        each = max_bytes // max_count
        fullest = encode_map({"v": 2, "id": 0, "ok": {"more": True, "messages": [
            {"hash": b"\x01" * 32, "ts": NOW, "expiry": NOW + 10**9, "data": b"x" * each}
            for _ in range(max_count)]}})
        assert len(fullest) <= onion.response_capacity(size)
    one_big = encode_map({"v": 2, "id": 0, "ok": {"more": True, "messages": [
        {"hash": b"\x01" * 32, "ts": NOW, "expiry": NOW, "data": b"x" * 76_800}]}})
    assert len(one_big) <= onion.response_capacity(classes[1])  # any one message fits 80 KiB
