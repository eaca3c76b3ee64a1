"""Traffic for the cap tests: `--links` pinned links to one node, each with `--inflight` stores of
`--size` random bytes in flight, as fast as the node takes them, until SIGTERM or SIGINT.

    python -m tests.hal.cap_generator HOST PORT NODE_ID_HEX [--links 3] [--inflight 4]

A refused store (rate limit, full) is counted and retried; a lost link is re-opened after a
second, as a real peer would. On exit it prints one JSON line: stores, refusals, reconnects.
"""

import argparse
import json
import os
import signal
import sys

import trio

from firmware.client import connect
from firmware.proto.errors import ProtocolError

RECIPIENT = bytes(range(32))


async def one_link(host, port, node_id, inflight, size, stats):
    while True:
        try:
            async with connect(host, port, node_id, timeout=60.0) as c:
                async def storer():
                    while True:
                        try:
                            await c.store(RECIPIENT, os.urandom(size))
                            stats["stores"] += 1
                        except ProtocolError:
                            stats["refused"] += 1
                            await trio.sleep(0.1)

                async with trio.open_nursery() as n:
                    for _ in range(inflight):
                        n.start_soon(storer)
        except (ConnectionError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            stats["reconnects"] += 1
            await trio.sleep(1.0)


async def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("node_id")
    p.add_argument("--links", type=int, default=3)
    p.add_argument("--inflight", type=int, default=4)
    p.add_argument("--size", type=int, default=30_000)
    a = p.parse_args(argv)
    stats = {"stores": 0, "refused": 0, "reconnects": 0}
    node_id = bytes.fromhex(a.node_id)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as n:
            for _ in range(a.links):
                n.start_soon(one_link, a.host, a.port, node_id, a.inflight, a.size, stats)
            async for _ in signals:
                n.cancel_scope.cancel()
                break
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
