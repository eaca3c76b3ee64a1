"""The TLS listener in-process: real TLS on loopback, the real RpcHandler and store."""

import time

import pytest
import trio
import trio.testing

from firmware.client import NodeClient, connect
from firmware.identity import Identity
from firmware.links import (
    ClientListener,
    Outbox,
    PinMismatch,
    open_pinned_stream,
    server_ssl_context,
)
from firmware.logs import Log
from firmware.proto.frames import NEED_DATA, FrameDecoder, encode_frame
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
    assert harness.listener.counters["stalled_peers"] == 1, harness.listener.counters
    await trio.aclose_forcefully(stream)


# -- write coalescing (Outbox) ------------------------------------------------------------------


def _slow_stream(write_s=0.001, fail_on_write=None):
    """trio's in-memory stream; every write takes `write_s` (a slow peer/socket), and write
    number `fail_on_write` (1-based) breaks the link."""
    stream = trio.testing.MemorySendStream()
    stream.writes = 0

    async def hook():
        stream.writes += 1
        if stream.writes == fail_on_write:
            raise trio.BrokenResourceError("peer reset")
        await trio.sleep(write_s)

    stream.send_all_hook = hook
    return stream


async def test_outbox_coalesces_in_call_order(autojump_clock):
    stream = _slow_stream()
    box = Outbox(stream)
    called, done = [], []

    async def one(i):
        await trio.sleep(i % 7 / 1000)  # senders arrive while writes are in progress
        frame = b"%05d;" % i
        called.append(frame)  # no checkpoint between this and the send: wire order = this
        await box.send(frame)
        done.append(i)

    async with trio.open_nursery() as n:
        for i in range(300):
            n.start_soon(one, i)
    assert stream.get_data_nowait() == b"".join(called)
    assert sorted(done) == list(range(300))
    assert stream.writes <= 20  # about one write per millisecond, not one per frame
    assert box.write_started is None


@pytest.mark.parametrize("linger, writes", [(False, 2), (True, 1)])
async def test_outbox_linger_lets_frames_of_the_same_tick_share_the_first_write(
        autojump_clock, linger, writes):
    stream = _slow_stream()
    box = Outbox(stream)
    sent = []

    async def one(i):
        sent.append(b"%d;" % i)
        await box.send(sent[-1], linger=linger)

    async with trio.open_nursery() as n:
        for i in range(10):
            n.start_soon(one, i)
    assert stream.get_data_nowait() == b"".join(sent)
    assert stream.writes == writes


async def test_outbox_a_broken_write_fails_every_queued_sender(autojump_clock):
    stream = _slow_stream(fail_on_write=2)
    box = Outbox(stream)
    results = {}

    async def one(i):
        try:
            await box.send(b"f%d" % i)
            results[i] = "sent"
        except trio.BrokenResourceError:
            results[i] = "broken"

    async with trio.open_nursery() as n:
        n.start_soon(one, 0)
        await trio.sleep(0.0001)  # 0 is writing; 1..9 queue behind it
        for i in range(1, 10):
            n.start_soon(one, i)
    assert results == {0: "sent", **{i: "broken" for i in range(1, 10)}}
    with pytest.raises(trio.BrokenResourceError, match="broke earlier"):
        await box.send(b"late")
    assert stream.get_data_nowait().startswith(b"f0")


async def test_outbox_a_cancelled_writer_releases_the_queue(autojump_clock):
    """A write cut by cancellation leaves the TLS stream unusable: the frames queued behind it
    must fail at once instead of waiting for a write that will never come."""
    box = Outbox(_slow_stream(write_s=10))
    results = {}

    async def writer(task_status=trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await box.send(b"first")
        results["writer"] = "cancelled" if scope.cancelled_caught else "sent"

    async def queued(i):
        try:
            await box.send(b"f%d" % i)
            results[i] = "sent"
        except trio.BrokenResourceError:
            results[i] = "broken"

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            scope = await n.start(writer)
            await trio.sleep(1)
            for i in range(3):
                n.start_soon(queued, i)
            await trio.sleep(1)
            scope.cancel()
    assert results == {"writer": "cancelled", 0: "broken", 1: "broken", 2: "broken"}
    assert box.write_started is None


class CountingStream(trio.abc.Stream):
    """The listener's TCP stream (below TLS, via its wrap_stream seam), counting writes."""

    writes: list = []

    def __init__(self, tcp):
        self.tcp = tcp

    async def send_all(self, data):
        CountingStream.writes.append(len(data))
        await self.tcp.send_all(data)

    async def wait_send_all_might_not_block(self):
        await self.tcp.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        return await self.tcp.receive_some(max_bytes)

    async def aclose(self):
        await self.tcp.aclose()


async def _read_frames(stream, n):
    decoder, got = FrameDecoder(), []
    with trio.fail_after(20):
        while len(got) < n:
            event = decoder.next_event()
            if event is NEED_DATA:
                decoder.receive_data(await stream.receive_some(1 << 20))
                continue
            got.append(event)
    return got


async def test_a_burst_of_inline_requests_is_answered_in_few_writes(harness):
    """`info` is answered in the read loop: a pipelined burst gets its answers in order, in
    one write per batch of requests read, not one write each."""
    harness.handler.limiter.set_rate(1e9, 10**9, 0)
    CountingStream.writes = []
    harness.listener.wrap_stream = CountingStream
    stream = await open_pinned_stream(harness.host, harness.port, NODE.node_id)
    handshake_writes = len(CountingStream.writes)
    n_req = 500
    await stream.send_all(b"".join(encode_frame({"v": 1, "id": i, "op": "info", "args": {}})
                                   for i in range(1, n_req + 1)))
    got = await _read_frames(stream, n_req)
    await trio.aclose_forcefully(stream)
    assert [f["id"] for f in got] == list(range(1, n_req + 1))
    assert all(f["ok"]["node_id"] == NODE.node_id for f in got)
    assert len(CountingStream.writes) - handshake_writes <= 20


@pytest.mark.parametrize("harness", [{"max_inflight_per_conn": 8}], indirect=True)
async def test_coalesced_answers_keep_completion_order(harness):
    """Many answers finishing together go out in the order they finished, ids intact."""
    harness.handler.limiter.set_rate(1e9, 10**9, 0)
    stream = await open_pinned_stream(harness.host, harness.port, NODE.node_id)
    n_req = 300
    await stream.send_all(b"".join(
        encode_frame({"v": 1, "id": i, "op": "nap", "args": {"ms": 20 + i % 3}})
        for i in range(1, n_req + 1)))
    got = [f["ok"]["ms"] for f in await _read_frames(stream, n_req)]
    await trio.aclose_forcefully(stream)
    assert got == harness.order  # wire order = completion order
    assert sorted(got) == sorted(20 + i % 3 for i in range(1, n_req + 1))


async def test_answers_finishing_together_share_writes(harness):
    """32 requests released at once: the first answer is written alone, the other 31 queue
    behind that write and go out together (one TLS record) instead of one write each."""
    CountingStream.writes = []
    harness.listener.wrap_stream = CountingStream
    stream = await open_pinned_stream(harness.host, harness.port, NODE.node_id)
    await stream.send_all(b"".join(encode_frame({"v": 1, "id": i, "op": "block",
                                                 "args": {"n": i}}) for i in range(1, 33)))
    with trio.fail_after(10):
        while harness.active < 32:
            await trio.sleep(0.01)
    before = len(CountingStream.writes)
    harness.release.set()
    got = await _read_frames(stream, 32)
    await trio.aclose_forcefully(stream)
    assert sorted(f["ok"]["n"] for f in got) == list(range(1, 33))
    assert all(f["ok"]["n"] == f["id"] for f in got)
    assert len(CountingStream.writes) - before <= 4


@pytest.mark.parametrize("harness", [{"max_inflight_per_conn": 4}], indirect=True)
async def test_a_slow_reader_stops_the_node_reading(harness):
    """Backpressure survives coalescing: while the peer does not read, answers back up into
    the socket buffers, senders wait with their in-flight slots held, and the node stops
    reading requests; once the peer reads, every answer arrives."""
    harness.handler.limiter.set_rate(1e9, 10**9, 0)
    served = []

    async def big(frame, conn, now):
        served.append(frame["id"])
        return {"n": frame["id"], "pad": b"x" * 500_000}

    harness.handler.add_op("big", big)
    stream = await open_pinned_stream(harness.host, harness.port, NODE.node_id)
    n_req = 200
    await stream.send_all(b"".join(encode_frame({"v": 1, "id": i, "op": "big", "args": {}})
                                   for i in range(1, n_req + 1)))
    seen = -1
    while seen != len(served):  # until the node stopped (no new request for 0.5 s)
        seen = len(served)
        await trio.sleep(0.5)
    assert 4 <= len(served) < n_req // 2  # socket buffers hold a few MB of answers, not 100 MB
    decoder, got = FrameDecoder(), []
    with trio.fail_after(30):
        while len(got) < n_req:
            event = decoder.next_event()
            if event is NEED_DATA:
                decoder.receive_data(await stream.receive_some(1 << 20))
                continue
            assert event["ok"]["n"] == event["id"]
            got.append(event["id"])
    await trio.aclose_forcefully(stream)
    assert sorted(got) == list(range(1, n_req + 1)) and got == served
