"""The bridge's network parts in process: the pool that passes onions to relays only, the paths
its clients build (a relay second), the dialer that reaches relays only, the settings rule."""

import os

import pytest
import trio

from firmware.bridge.node_side import BridgeMode, RelaysOnlyDialer, RelaysOnlyPool
from firmware.bridge.settings import node_listen_host
from firmware.link import LinkDown
from firmware.proto import onion


class RecordingPool:
    def __init__(self):
        self.sent = []

    def open_count(self):
        return 1

    async def request(self, node_id, address, op, args, *, timeout=None):
        self.sent.append((node_id, address, op))
        return {"blob": b"answer"}


async def test_onions_go_on_to_relays_only():
    relays = [("198.51.100.1", 7070, os.urandom(32)), ("198.51.100.2", 7070, os.urandom(32))]
    inner = RecordingPool()
    pool = RelaysOnlyPool(inner, relays)
    relay = relays[1]
    assert await pool.request(relay[2], relay[:2], "onion", {"blob": b"x"}) == {"blob": b"answer"}
    with pytest.raises(LinkDown, match="to its relays only"):
        await pool.request(os.urandom(32), ("198.51.100.9", 1), "onion", {"blob": b"x"})
    with pytest.raises(LinkDown, match="to its relays only"):  # nothing but onions, even there
        await pool.request(relay[2], relay[:2], "retrieve", {})
    assert inner.sent == [(relay[2], relay[:2], "onion")]
    assert pool.counters == {"to_relays": 1, "refused_next_hops": 2}


def test_bridge_client_paths_put_a_relay_second():
    from firmware.bridge.entry import BridgedOnionClient
    from firmware.identity import Identity

    nodes = [onion.Hop(Identity.generate().node_id, f"198.51.100.{i}", 7070) for i in range(1, 8)]
    relays = [nodes[0].node_id, nodes[1].node_id]
    bridge = onion.Hop(Identity.generate().node_id, "203.0.113.5", 443)
    oc = BridgedOnionClient(bridge, relays, nodes, pool=None, hops=3)
    seen_second = set()
    for _ in range(200):
        path = trio.run(_path, oc)
        ids = [h.node_id for h in path]
        assert ids[0] == bridge.node_id and ids[1] in relays
        assert len(ids) == len(set(ids)) and len(ids) in (3, 4)
        seen_second.add(ids[1])
    assert seen_second == set(relays)


async def _path(oc):
    return oc.choose_path(os.urandom(32))


async def test_dialer_reaches_relays_only():
    class Inner:
        async def open(self, host, port, node_id, *, timeout=None):
            return ("stream", host, port)

    relay = os.urandom(32)
    d = RelaysOnlyDialer(Inner(), frozenset([relay]))
    assert await d.open("198.51.100.1", 1, relay) == ("stream", "198.51.100.1", 1)
    with pytest.raises(ConnectionError, match="no node but its relays"):
        await d.open("198.51.100.2", 1, os.urandom(32))
    assert d.refused == 1


def test_a_bridge_needs_relays_and_keeps_its_node_port_local():
    with pytest.raises(ValueError, match=r"needs \[network\] bootstrap"):
        BridgeMode([])
    assert len(BridgeMode([("h", 1, bytes([i]) * 32) for i in range(6)]).relay_ids) == 4
    assert node_listen_host("0.0.0.0", True) == "127.0.0.1"
    assert node_listen_host("198.51.100.4", True) == "127.0.0.1"
    assert node_listen_host("::1", True) == "::1"
    assert node_listen_host("0.0.0.0", False) == "0.0.0.0"


