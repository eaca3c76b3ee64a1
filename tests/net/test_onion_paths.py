"""OnionClient path choice: distinct hops, final hop in the swarm, others outside it, relayed
nodes never first, failed hops avoided for a while (virtual time)."""

import random

import nacl.signing
import pytest
import trio

from firmware.client.onion_client import NoPath, OnionClient
from firmware.proto import onion
from firmware.proto.placement import rank


def _nodes(n, relayed=()):
    out = []
    for i in range(n):
        nid = bytes(nacl.signing.SigningKey(bytes([i + 1]) * 32).verify_key)
        out.append(onion.Hop(nid, "127.0.0.1", 7000 + i, relayed=i in relayed))
    return out


def _client(nodes, seed=1, **kw):
    return OnionClient(nodes, pool=None, rng=random.Random(seed), **kw)


async def test_paths_are_distinct_and_end_in_the_swarm():
    nodes = _nodes(12)
    oc = _client(nodes)
    for i in range(50):
        rcpt = bytes([i]) * 32
        swarm = set(rank([n.node_id for n in nodes], rcpt, 5))
        path = oc.choose_path(rcpt)
        ids = [h.node_id for h in path]
        assert len(set(ids)) == 3
        assert ids[-1] in swarm
        assert not set(ids[:-1]) & swarm  # 7 nodes outside the swarm: enough for two hops
        assert all(h.x25519_pub == onion.x25519_public_of(h.node_id) for h in path)


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


async def test_relayed_nodes_are_never_the_first_hop():
    nodes = _nodes(6, relayed={0, 1, 2, 3})
    oc = _client(nodes)
    for i in range(40):
        assert not oc.choose_path(bytes([i]) * 32 if i % 2 else None)[0].relayed
    with pytest.raises(NoPath, match="every known node is relayed"):
        _client(_nodes(4, relayed={0, 1, 2, 3})).choose_path(None)


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
