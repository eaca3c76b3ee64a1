"""The bridge's network parts in process: the extension layer a relay peels, the pool that sends
every onion through a relay, the dialer that reaches relays only, and the settings rule."""

import os

import pytest

from firmware.bridge.node_side import (
    BridgeMode,
    ExtendingPool,
    RelaysOnlyDialer,
    extension_layer,
)
from firmware.bridge.settings import node_listen_host
from firmware.identity import Identity
from firmware.link import LinkDown
from firmware.proto import onion
from firmware.proto.codec import encode_map
from firmware.proto.errors import ProtocolError

NOW = 1_767_268_800_000


def test_extension_layer_is_a_middle_layer_the_relay_peels():
    relay, target = Identity.generate(), Identity.generate()
    inner = os.urandom(300)
    blob, key = extension_layer(relay.node_id, onion.NextHop(target.node_id, "198.51.100.7", 7070),
                                inner, NOW)
    peeled = onion.peel(blob, relay.x25519_private, relay.x25519_public, now_ms=NOW, position=1,
                        replay=onion.ReplayCache())
    assert peeled.next_hop == onion.NextHop(target.node_id, "198.51.100.7", 7070)
    assert peeled.inner == inner and peeled.key == key


class FakeRelayPool:
    """Plays the relays: peels the extension layer like OnionRelay and answers as it would."""

    def __init__(self, relays, fail_next=None, down=()):
        self.relays = {r.node_id: r for r in relays}
        self.fail_next, self.down = fail_next, set(down)
        self.sent = []

    def open_count(self):
        return 1

    async def request(self, node_id, address, op, args, *, timeout=None):
        self.sent.append((node_id, address, op, args))
        if node_id in self.down:
            raise LinkDown("relay down")
        relay = self.relays[node_id]
        peeled = onion.peel(args["blob"], relay.x25519_private, relay.x25519_public, now_ms=NOW,
                            position=args["pos"], replay=onion.ReplayCache())
        nonce = os.urandom(onion.NONCE_SIZE)
        if self.fail_next:
            body = encode_map({"code": self.fail_next, "msg": "next hop gone"})
            return {"blob": onion.seal_response(peeled.key, nonce, onion.TAG_HOP_FAILED, body)}
        carried = b"next-hop-answer:" + peeled.inner[:8]
        return {"blob": onion.seal_response(peeled.key, nonce, onion.TAG_CARRIED, carried)}


def _relays(n=2):
    ids = [Identity.generate() for _ in range(n)]
    return ids, [("198.51.100.1", 7070 + i, r.node_id) for i, r in enumerate(ids)]


async def test_onion_to_another_node_goes_through_a_relay():
    ids, relays = _relays()
    fake = FakeRelayPool(ids)
    pool = ExtendingPool(fake, relays, clock_ms=lambda: NOW)
    target = Identity.generate().node_id
    ok = await pool.request(target, ("198.51.100.9", 7070), "onion",
                            {"blob": b"L" * 64, "pos": 1})
    assert ok == {"blob": b"next-hop-answer:" + b"L" * 8}
    (sent_to, address, op, args), = fake.sent
    assert sent_to in {r[2] for r in relays} and op == "onion" and args["pos"] == 1
    assert target not in {s[0] for s in fake.sent}  # never contacted directly


async def test_a_relay_down_means_the_next_relay_and_failures_keep_their_code():
    ids, relays = _relays()
    fake = FakeRelayPool(ids, down=[relays[0][2]])
    pool = ExtendingPool(fake, relays, clock_ms=lambda: NOW)
    for _ in range(4):
        await pool.request(os.urandom(32), ("198.51.100.9", 1), "onion", {"blob": b"x", "pos": 1})
    fake.fail_next = "timeout"
    with pytest.raises(ProtocolError) as e:
        await pool.request(os.urandom(32), ("198.51.100.9", 1), "onion", {"blob": b"x", "pos": 1})
    assert e.value.code == "timeout"
    fake.down = {r[2] for r in relays}
    with pytest.raises(LinkDown, match="no relay of this bridge"):
        await pool.request(os.urandom(32), ("198.51.100.9", 1), "onion", {"blob": b"x", "pos": 1})


async def test_nothing_but_onions_leaves_for_other_nodes_and_relays_are_direct():
    ids, relays = _relays()
    fake = FakeRelayPool(ids)
    pool = ExtendingPool(fake, relays, clock_ms=lambda: NOW)
    with pytest.raises(LinkDown, match="onions only"):
        await pool.request(os.urandom(32), ("198.51.100.9", 1), "retrieve", {})
    relay = relays[1]
    fake.request = _record_direct(fake)
    assert await pool.request(relay[2], relay[:2], "retrieve", {"x": 1}) == {"direct": True}


def _record_direct(fake):
    async def request(node_id, address, op, args, *, timeout=None):
        return {"direct": True}
    return request


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


