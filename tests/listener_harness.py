"""A listener in-process, fed real TLS over trio's memory streams, in virtual time.

`serve(harness, ...)` makes one connection: a TLS 1.3 handshake between the node's real server
context and a pinned client, then the server side is handed to `Listener.serve_stream` (what
`Listener` does after its own accept and handshake). Time is trio's MockClock (autojump), so
idle, stall and trickle deadlines of minutes take no real time.
"""

import pytest
import trio
import trio.testing

from firmware.identity import Identity
from firmware.link import client_ssl_context, server_ssl_context
from firmware.link.tls import check_pin
from firmware.logs import Log
from firmware.serve.conn_policy import ConnLimits
from firmware.serve.conn_table import TableLimits
from firmware.serve.listener import Listener
from firmware.serve.pipeline import ConnInfo, Pipeline, RateLimiter
from firmware.serve.storage_ops import StorageOps
from firmware.store import MessageStore

NODE = Identity(b"\x05" * 32)
T0 = 1_800_000_000_000


class Harness:
    """Node ops for tests: `block` holds until released, `nap` sleeps its `ms`, `big` answers
    half a megabyte; `served` lists request ids in the order they started."""

    def __init__(self, tmp_path, limits, table, reads_held=None):
        self.store = MessageStore.open(tmp_path / "m.sqlite3", quota_bytes=10**7,
                                       clock_ms=lambda: T0)
        self.active = 0
        self.max_active = 0
        self.release = trio.Event()
        self.order = []
        self.served = []
        self.log_lines = []
        self.pipeline = Pipeline(
            storage=StorageOps(self.store, NODE.node_id, info_cache_ms=0),
            limiter=RateLimiter(1e9, 10**9),
            node_ops={"block": self.block, "nap": self.nap, "big": self.big})
        self.listener = Listener(self.pipeline, server_ssl_context(NODE), clock_ms=lambda: T0,
                                 log=Log("debug", stream=self), limits=limits, table=table,
                                 reads_held=reads_held)

    def write(self, line):  # the listener's log stream
        self.log_lines.append(line)

    def flush(self):
        pass

    async def block(self, frame, conn, now):
        self.served.append(frame["id"])
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await self.release.wait()
        finally:
            self.active -= 1
        return {"n": frame["args"]["n"]}

    async def nap(self, frame, conn, now):
        await trio.sleep(frame["args"]["ms"] / 1000)
        self.order.append(frame["args"]["ms"])
        return {"ms": frame["args"]["ms"]}

    async def big(self, frame, conn, now):
        self.served.append(frame["id"])
        return {"n": frame["id"], "pad": b"x" * 100_000}


@pytest.fixture
def harness(tmp_path, request):
    limits = getattr(request, "param", {})
    h = Harness(tmp_path, ConnLimits(**limits), TableLimits(trusted=frozenset()))
    yield h
    h.store.close()


async def serve(harness, nursery, *, lockstep=False, client_ip="192.0.2.10",
                wrap_server=None):
    """A TLS client stream connected to `harness.listener` (served in `nursery`)."""
    c, s = (trio.testing.lockstep_stream_pair() if lockstep
            else trio.testing.memory_stream_pair())
    if wrap_server is not None:
        s = wrap_server(s)
    server = trio.SSLStream(s, server_ssl_context(NODE), server_side=True)
    client = trio.SSLStream(c, client_ssl_context())
    async with trio.open_nursery() as hs:
        hs.start_soon(server.do_handshake)
        hs.start_soon(client.do_handshake)
    check_pin(client, NODE.node_id, "memory")
    nursery.start_soon(harness.listener.serve_stream, server, ConnInfo(client_ip, 1))
    return client
