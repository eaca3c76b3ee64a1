"""Connections the node opens itself (onion forwards, replication, gossip) go through the
bandwidth shaper like inbound ones, so the monthly cap and link limits cover all its traffic."""

import io

import trio

from firmware.client import connect
from firmware.logs import Log
from firmware.node import Node
from firmware.settings import default_schema
from tests.conftest import write_toml


def make_node(tmp_path, name, bandwidth):
    cfg = write_toml(tmp_path / f"{name}.toml", {
        "node": {"data_dir": str(tmp_path / name), "listen_port": 0},
        "network": {"enabled": False},
        "hal": {"backend": "sim"},
        "bandwidth": bandwidth,
    })
    return Node(default_schema().load(cfg), log=Log("warning", stream=io.StringIO()),
                out=io.StringIO())


def counted(node):
    totals = node.device.bandwidth.shaper.totals
    return totals["up"] + totals["down"]


async def test_connections_the_node_opens_are_shaped_and_counted(tmp_path):
    target = make_node(tmp_path, "target", {})
    shaped = make_node(tmp_path, "shaped", {"up_mbit": 1000.0, "monthly_cap_gb": 100.0})
    async with trio.open_nursery() as n:
        await n.start(target.run)
        await n.start(shaped.run)
        before = counted(shaped)
        host, port = target.address
        # the dialer every outbound link of the shaped node goes through
        async with connect(host, port, target.identity.node_id, dialer=shaped.dialer) as c:
            info = await c.info()
        after_own = counted(shaped)

        # a client that is not the node's own traffic
        async with connect(host, port, target.identity.node_id) as c:
            await c.info()
        n.cancel_scope.cancel()

    assert shaped.dialer.wrap == shaped.device.bandwidth.wrap
    assert info["node_id"] == target.identity.node_id
    # TLS 1.3 handshake + one info request and answer: well over a kilobyte both ways
    assert after_own - before > 1000
    assert counted(shaped) == after_own
    assert target.dialer.wrap is None  # no limits configured: nothing wraps its links
