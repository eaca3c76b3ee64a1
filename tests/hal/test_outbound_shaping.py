"""Connections the node opens itself (onion forwards, replication, gossip) go through the
bandwidth shaper like inbound ones, so the monthly cap and link limits cover all its traffic;
connections to the box itself (loopback) are operator traffic, counted apart and never paced."""

import io

import trio

from firmware.client import connect
from firmware.logs import Log
from firmware.node import Node
from firmware.settings import default_schema
from tests.conftest import write_toml


def make_node(tmp_path, name, bandwidth, host="127.0.0.1"):
    cfg = write_toml(tmp_path / f"{name}.toml", {
        "node": {"data_dir": str(tmp_path / name), "listen_port": 0, "listen_host": host},
        "network": {"enabled": False},
        "hal": {"backend": "sim"},
        "bandwidth": bandwidth,
    })
    return Node(default_schema().load(cfg), log=Log("warning", stream=io.StringIO()),
                out=io.StringIO())


def counted(node):
    totals = node.device.bandwidth.shaper.totals
    return totals["up"] + totals["down"]


def local(node):
    info = node.device.bandwidth.info()
    return info["local_up_bytes"] + info["local_down_bytes"]


async def test_connections_the_node_opens_are_shaped_and_counted(tmp_path):
    # 127.0.0.2 is another address than the nodes' own 127.0.0.1: with loopback taken out of
    # unmetered_networks it stands in for a remote peer
    target = make_node(tmp_path, "target", {}, host="127.0.0.2")
    shaped = make_node(tmp_path, "shaped", {"up_mbit": 1000.0, "monthly_cap_gb": 100.0,
                                            "unmetered_networks": []})
    operator = make_node(tmp_path, "operator", {"up_mbit": 1000.0, "monthly_cap_gb": 100.0})
    async with trio.open_nursery() as n:
        await n.start(target.run)
        await n.start(shaped.run)
        await n.start(operator.run)
        before = counted(shaped)
        host, port = target.address
        # the dialer every outbound link of the shaped node goes through
        async with connect(host, port, target.identity.node_id, dialer=shaped.dialer) as c:
            info = await c.info()
        after_own = counted(shaped)
        # the same link with loopback unmetered (the default): counted apart, not in the cap
        async with connect(host, port, target.identity.node_id, dialer=operator.dialer) as c:
            await c.info()

        # a client that is not the node's own traffic
        async with connect(host, port, target.identity.node_id) as c:
            await c.info()
        n.cancel_scope.cancel()

    assert shaped.dialer.wrap == shaped.device.bandwidth.wrap
    assert info["node_id"] == target.identity.node_id
    # TLS 1.3 handshake + one info request and answer: well over a kilobyte both ways
    assert after_own - before > 1000
    assert counted(shaped) == after_own
    assert shaped.device.bandwidth.shaper.budget.used_bytes == after_own
    assert local(shaped) == 0
    assert local(operator) > 1000
    assert counted(operator) == 0 and operator.device.bandwidth.shaper.budget.used_bytes == 0
    # no limits configured: the links are wrapped all the same, so traffic is counted
    assert target.dialer.wrap == target.device.bandwidth.wrap
