"""`homenode status` shows the bytes a node really moved, with no limit configured (counting
always runs; shaping only when configured), and keeps operator traffic apart. Real daemons."""

import json
import os

import trio

from firmware.client import connect
from tests.conftest import NodeProcess

RECIPIENT = bytes(range(32))


async def store_some(node, n=5, size=20_000):
    async with connect(node.host, node.port, node.node_id) as c:
        for _ in range(n):
            await c.store(RECIPIENT, os.urandom(size))


async def status_until(node, pred, what, timeout=10.0):
    """`homenode status --json` (the CLI, as an operator runs it) until `pred(bandwidth)`."""
    bw = None
    with trio.move_on_after(timeout):
        while True:
            r = await trio.to_thread.run_sync(lambda: node.cli("status", "--json"))
            assert r.returncode == 0, r.stderr
            bw = json.loads(r.stdout)["device"]["bandwidth"]
            if pred(bw):
                return bw
            await trio.sleep(0.1)
    raise AssertionError(f"status never showed {what}; last: {bw}")


async def test_status_shows_real_byte_counts_without_any_limit(tmp_path):
    # 127.0.0.2 with loopback metered: the client (127.0.0.1) stands in for a remote peer
    node = NodeProcess(tmp_path, {"node": {"listen_host": "127.0.0.2"},
                                  "network": {"enabled": False}, "hal": {"backend": "sim"},
                                  "bandwidth": {"unmetered_networks": []}}).start()
    try:
        await store_some(node)
        bw = await status_until(node, lambda b: b["down_bytes"] >= 100_000, "the stores")
        assert not bw["enabled"]  # nothing shaped ...
        assert bw["up_bytes"] > 1000  # ... but everything counted: TLS, answers, ACKs
        assert bw["down_bytes"] < 100_000 * 1.05 + 20_000  # payload + TLS + headers
    finally:
        node.stop()


async def test_operator_traffic_is_counted_apart_from_the_metered_line(tmp_path):
    node = NodeProcess(tmp_path, {"network": {"enabled": False}, "hal": {"backend": "sim"},
                                  "bandwidth": {"monthly_cap_gb": 1.0}}).start()
    try:
        await store_some(node)  # over loopback, from the box itself
        bw = await status_until(node, lambda b: b["local_down_bytes"] >= 100_000,
                                "the local stores")
        assert bw["up_bytes"] == bw["down_bytes"] == bw["used_bytes"] == 0
    finally:
        node.stop()


async def test_status_answers_while_a_busy_client_is_paced_by_the_cap(tmp_path):
    """One client storing flat out through a paced cap used to take every turn of the pacing
    bucket: every new connection's TLS handshake then timed out, `homenode status` included
    (found by the power-cut test of a QEMU box, whose host polls status while writing)."""
    node = NodeProcess(tmp_path, {"node": {"listen_host": "127.0.0.2"},
                                  "network": {"enabled": False}, "hal": {"backend": "sim"},
                                  "bandwidth": {"unmetered_networks": [],
                                                "monthly_cap_gb": 30.0}}).start()
    stored = []
    try:
        async with trio.open_nursery() as n:
            async def busy():
                async with connect(node.host, node.port, node.node_id) as c:
                    while True:
                        await c.store(RECIPIENT, os.urandom(700))
                        stored.append(1)

            n.start_soon(busy)
            # the pace (~11.5 kB/s) is taken: the busy client is held back by it ...
            bw = await status_until(node, lambda b: b["pacing"], "the cap pacing", timeout=30)
            assert bw["paced_rate"] < 20_000
            # ... and the operator's status still gets its turns, several times over
            for _ in range(3):
                r = await trio.to_thread.run_sync(lambda: node.cli("status", "--json"))
                assert r.returncode == 0, r.stderr
            n.cancel_scope.cancel()
        assert len(stored) > 10
    finally:
        node.stop()
