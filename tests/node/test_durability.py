"""kill -9 in the middle of a burst of stores: every acknowledged message survives, intact."""

import os
import random
import time

import pytest
import trio

from firmware.client import connect
from firmware.identity import Identity
from firmware.proto.hashing import message_hash

ROUNDS = 12
CONNECTIONS = 4
WORKERS_PER_CONNECTION = 16


@pytest.mark.slow
def test_kill_9_mid_burst_loses_no_acknowledged_message(node_factory):
    node = node_factory(limits={"rate_per_sec": 1e6, "rate_burst": 1_000_000}).start()
    owner = Identity.generate()
    rng = random.Random(20261130)
    acked: dict[bytes, tuple[int, bytes]] = {}  # hash -> (ts, data)
    unacked_at_kill = []

    for rnd in range(ROUNDS):
        sent = 0
        round_acked = 0

        async def burst(rnd):
            nonlocal sent, round_acked

            async def worker(client, w):
                nonlocal sent, round_acked
                i = 0
                while True:
                    data = os.urandom(rng.randrange(1, 4096)) + b"r%dw%di%d" % (rnd, w, i)
                    ts = int(time.time() * 1000)
                    sent += 1
                    try:
                        r = await client.store(owner.node_id, data, ts=ts, ttl_ms=86_400_000)
                    except ConnectionError:
                        return
                    acked[r.hash] = (ts, data)
                    round_acked += 1
                    i += 1

            async def one_connection(c):
                try:
                    async with connect(node.host, node.port, node.node_id) as client:
                        async with trio.open_nursery() as n:
                            for w in range(WORKERS_PER_CONNECTION):
                                n.start_soon(worker, client, c * 100 + w)
                except* ConnectionError:
                    pass

            async with trio.open_nursery() as n:
                for c in range(CONNECTIONS):
                    n.start_soon(one_connection, c)
                await trio.sleep(rng.uniform(0.3, 0.9))
                node.proc.kill()  # SIGKILL: no flush, no goodbye
                await trio.to_thread.run_sync(node.proc.wait)

        trio.run(burst, rnd)
        node.kill()
        assert round_acked > 0, f"round {rnd}: nothing acknowledged before the kill"
        unacked_at_kill.append(sent - round_acked)
        node.start()

    # Every kill happened while stores were in flight (else the test proves nothing).
    assert all(n > 0 for n in unacked_at_kill), unacked_at_kill

    async def verify():
        async with connect(node.host, node.port, node.node_id) as client:
            return await client.retrieve_all(owner.signing_key)

    stored = {m.hash: m for m in trio.run(verify)}
    missing = [h.hex() for h in acked if h not in stored]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
    for h, (ts, data) in acked.items():
        m = stored[h]
        assert m.data == data and m.ts == ts
        assert message_hash(owner.node_id, 0, m.ts, m.data) == h
    assert node.stop() == 0
    print(f"{ROUNDS} kills, {len(acked)} acknowledged messages all intact, "
          f"{sum(unacked_at_kill)} requests in flight at the kills")
