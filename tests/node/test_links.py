"""The TLS listener in-process: real TLS on loopback, the real RpcHandler and store."""

import time

import pytest
import trio

from firmware.client import NodeClient, connect
from firmware.identity import Identity
from firmware.links import ClientListener, PinMismatch, open_pinned_stream, server_ssl_context
from firmware.logs import Log
from firmware.proto.frames import encode_frame
from firmware.rpc import RpcHandler
from firmware.store import MessageStore

NODE = Identity(b"\x05" * 32)


class Harness:
    def __init__(self, handler, listener, addr):
        self.handler, self.listener = handler, listener
        self.host, self.port = addr
        self.active = 0
        self.max_active = 0
        self.release = trio.Event()
        self.order = []

    def link(self):
        return connect(self.host, self.port, NODE.node_id)


@pytest.fixture
async def harness(tmp_path, request):
    limits = getattr(request, "param", {})
    store = MessageStore.open(tmp_path / "m.sqlite3", quota_bytes=10**7,
                              clock_ms=lambda: int(time.time() * 1000))
    log = Log("debug", stream=open(tmp_path / "log", "w"))
    handler = RpcHandler(store, NODE.node_id, log=log)
    listener = ClientListener(handler, server_ssl_context(NODE), log=log,
                              clock_ms=lambda: int(time.time() * 1000), **limits)
    async with trio.open_nursery() as n:
        await n.start(store.run)
        addr = await n.start(listener.run, "127.0.0.1", 0)
        h = Harness(handler, listener, addr)
        handler.add_info(listener.info)

        async def block(frame, conn, now):  # an op that holds until the test releases it
            h.active += 1
            h.max_active = max(h.max_active, h.active)
            try:
                await h.release.wait()
            finally:
                h.active -= 1
            return {"n": frame["args"]["n"]}

        async def nap(frame, conn, now):
            await trio.sleep(frame["args"]["ms"] / 1000)
            h.order.append(frame["args"]["ms"])
            return {"ms": frame["args"]["ms"]}

        handler.add_op("block", block)
        handler.add_op("nap", nap)
        yield h
        n.cancel_scope.cancel()
    store.close()


async def test_pinning_refuses_a_node_with_another_key(harness):
    wrong = Identity.generate().node_id
    with pytest.raises(PinMismatch, match="refusing to talk"):
        await open_pinned_stream(harness.host, harness.port, wrong)
    with pytest.raises(PinMismatch):
        async with connect(harness.host, harness.port, wrong) as c:
            await c.info()
    assert harness.handler.counters["requests"] == 0  # nothing was sent to the wrong node
    async with harness.link() as c:
        assert (await c.info())["node_id"] == NODE.node_id


async def test_many_in_flight_answers_out_of_order(harness):
    async with harness.link() as c:
        results = {}

        async def one(ms):
            results[ms] = await c.request("nap", {"ms": ms})

        async with trio.open_nursery() as n:
            for ms in (400, 200, 10, 100):
                n.start_soon(one, ms)
                await trio.sleep(0.01)
    assert harness.order == [10, 100, 200, 400]  # finished by duration, not by sending order
    assert all(results[ms] == {"ms": ms} for ms in results)


@pytest.mark.parametrize("harness", [{"max_inflight_per_conn": 4}], indirect=True)
async def test_in_flight_limit_stops_reading(harness):
    stream = await open_pinned_stream(harness.host, harness.port, NODE.node_id)
    client = NodeClient(stream)
    answers = []

    async def one(i):
        answers.append(await client.request("block", {"n": i}))

    async with trio.open_nursery() as n:
        await n.start(client._reader)
        for i in range(10):
            n.start_soon(one, i)
        await trio.sleep(0.5)
        assert harness.active == 4  # the other 6 are unread in the socket buffers
        harness.release.set()
        while len(answers) < 10:
            await trio.sleep(0.01)
        n.cancel_scope.cancel()
    await stream.aclose()
    assert harness.max_active == 4 and sorted(a["n"] for a in answers) == list(range(10))


@pytest.mark.parametrize("harness", [{"max_connections": 2}], indirect=True)
async def test_connections_over_the_limit_are_closed(harness):
    async with harness.link() as a, harness.link() as b:
        with pytest.raises((trio.BrokenResourceError, ConnectionError)):
            async with harness.link() as c:
                await c.info()
        assert (await a.info())["refused_over_limit"] == 1
        await b.info()
    await trio.sleep(0.1)
    async with harness.link() as c:  # slots freed
        assert (await c.info())["connections"] == 1


@pytest.mark.parametrize("harness", [{"idle_timeout": 1.0, "handshake_timeout": 0.5}],
                         indirect=True)
async def test_idle_and_handshake_timeouts(harness):
    stream = await open_pinned_stream(harness.host, harness.port, NODE.node_id)
    t0 = trio.current_time()
    assert await stream.receive_some(100) == b""  # the node hung up on an idle link
    assert 0.9 < trio.current_time() - t0 < 3
    tcp = await trio.open_tcp_stream(harness.host, harness.port)
    t0 = trio.current_time()
    assert await tcp.receive_some(100) == b""  # no handshake at all
    assert 0.4 < trio.current_time() - t0 < 3
    await tcp.aclose()
    assert harness.listener.counters["handshake_failed"] == 1


@pytest.mark.parametrize("harness", [{"idle_timeout": 1.0}], indirect=True)
async def test_a_slow_request_is_not_idle(harness):
    async with harness.link() as c:
        assert await c.request("nap", {"ms": 1800}) == {"ms": 1800}


async def test_drain_finishes_in_flight_and_refuses_new(harness):
    stream = await open_pinned_stream(harness.host, harness.port, NODE.node_id)
    client = NodeClient(stream)
    got = []
    async with trio.open_nursery() as n:
        await n.start(client._reader)

        async def blocked():
            got.append(await client.request("block", {"n": 1}))

        n.start_soon(blocked)
        while harness.active == 0:
            await trio.sleep(0.01)
        harness.listener.drain()
        with pytest.raises((OSError, trio.BrokenResourceError)):
            await open_pinned_stream(harness.host, harness.port, NODE.node_id)
        assert not harness.listener.drained.is_set()
        harness.release.set()
        with trio.fail_after(5):
            await harness.listener.drained.wait()
        n.cancel_scope.cancel()
    assert got == [{"n": 1}]


async def test_malformed_frame_answer_then_close(harness):
    stream = await open_pinned_stream(harness.host, harness.port, NODE.node_id)
    await stream.send_all(encode_frame({"v": 1, "id": 1, "op": "info", "args": {}})
                          + b"\x00\x00\x00\x02\xff\xff")
    data = b""
    with trio.fail_after(5):
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    assert b"bad_frame" in data and b"node_id" in data  # the good request was answered too
    assert harness.listener.counters["bad_frames"] == 1


@pytest.mark.parametrize("harness", [{"idle_timeout": 1.0}], indirect=True)
async def test_a_peer_that_stops_reading_is_dropped(harness):
    """Pipelining requests without ever reading the answers fills the socket buffers; the node
    must not keep that link (and its in-flight slots) forever."""
    harness.handler.limiter.set_rate(1e9, 10**9, 0)
    stream = await open_pinned_stream(harness.host, harness.port, NODE.node_id)
    frames = b"".join(encode_frame({"v": 1, "id": i, "op": "info", "args": {}})
                      for i in range(1, 2001))
    with trio.move_on_after(6):
        try:
            while True:
                await stream.send_all(frames)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    with trio.fail_after(5):
        while harness.listener.active:
            await trio.sleep(0.05)
    assert harness.listener.counters["stalled_peers"] == 1
    await trio.aclose_forcefully(stream)
