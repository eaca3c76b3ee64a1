"""Onion path rules (firmware/proto/paths.py): no two hops in one /16, none in the client's
/16, final hop from the swarm, first hop direct, fixed relaxation order in small networks."""

import random

import pytest

from firmware.proto.onion import Hop
from firmware.proto.paths import NoPath, PathPicker, nets_of, pick_path
from firmware.proto.placement import address_nets


def hop(i, host, relayed=False, relay_hosts=()):
    return Hop(bytes([i]) * 32, host, 7000 + i, relayed=relayed, relay_hosts=tuple(relay_hosts))


def net16(h):
    return address_nets(h.host)[0]


def test_hops_never_share_a_16_nor_the_clients():
    nodes = [hop(i, f"10.{i % 12}.{i}.1") for i in range(1, 60)]
    finals = nodes[:5]
    rng = random.Random(1)
    picker = PathPicker(nodes)
    for _ in range(200):
        path, level = picker.pick(finals=finals, client_host="10.3.200.9", rng=rng)
        assert level == 0 and len(path) == 3 and path[-1] in finals
        nets = [net16(h) for h in path]
        assert len(set(nets)) == 3 and address_nets("10.3.0.0")[0] not in nets
        assert not set(path[:-1]) & set(finals)  # other hops outside the swarm


def test_networks_are_drawn_uniformly_not_nodes():
    """500 ids in one /16 and 10 lonely boxes: the crowded network is one draw among 11."""
    crowd = [hop(i % 250 + 1, f"198.51.{i // 250}.{i % 250 + 1}") for i in range(500)]
    crowd = [Hop(i.to_bytes(32, "big"), h.host, 1) for i, h in enumerate(crowd, 1000)]
    lonely = [hop(i, f"10.{i}.0.1") for i in range(1, 11)]
    rng = random.Random(2)
    picker = PathPicker(crowd + lonely)
    firsts = [picker.pick(hops=1, rng=rng)[0][0] for _ in range(2200)]
    share = sum(h in crowd for h in firsts) / len(firsts)
    assert 0.06 < share < 0.13  # 1/11 = 9.1 %, not 500/510 = 98 %


def test_relayed_hops_count_in_their_relays_networks_and_never_go_first():
    relay = hop(1, "10.1.0.1")
    behind = hop(2, "192.0.2.5", relayed=True, relay_hosts=["10.1.0.1"])
    assert nets_of(behind)[0] == {address_nets("192.0.2.5")[0], address_nets("10.1.0.1")[0]}
    others = [hop(i, f"10.{i}.0.1") for i in range(3, 8)]
    rng = random.Random(3)
    for _ in range(300):
        path, level = pick_path([relay, behind] + others, rng=rng)
        assert level == 0 and not path[0].relayed
        assert not {relay, behind} <= set(path)


@pytest.mark.parametrize("hosts, client, level", [
    (["10.1.0.1", "10.2.0.1", "10.3.0.1", "10.4.0.1"], None, 1),  # 1 node outside the swarm
    (["10.1.0.1", "10.2.0.1", "10.3.0.1"], "10.1.9.9", 2),  # only 3 networks, one the client's
    (["10.1.0.1", "10.1.1.1", "10.2.0.1"], None, 3),  # two /16s: two hops share one
    (["127.0.0.1"] * 3, None, 4),  # a loopback cluster: any distinct nodes
])  # fmt: skip
def test_small_networks_relax_in_a_fixed_order(hosts, client, level):
    nodes = [hop(i, h) for i, h in enumerate(hosts, 1)]
    finals = nodes[:3] if len(nodes) > 3 else nodes[:1]
    path, got = pick_path(nodes, finals=finals, client_host=client, rng=random.Random(4))
    assert got == level and len({h.node_id for h in path}) == 3 and path[-1] in finals


def test_no_path_errors_name_the_cause():
    with pytest.raises(NoPath, match="needs 3 distinct nodes, only 2"):
        pick_path([hop(1, "10.1.0.1"), hop(2, "10.2.0.1")], rng=random.Random())
    relayed = [hop(i, f"10.{i}.0.1", relayed=True, relay_hosts=["10.99.0.1"]) for i in range(4)]
    with pytest.raises(NoPath, match="none can be a first hop"):
        pick_path(relayed, rng=random.Random())
