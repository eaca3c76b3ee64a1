"""The listener serving frames over real TLS on memory streams, in virtual time."""

import pytest
import trio
import trio.testing

from firmware.link import open_link
from firmware.proto.frames import NEED_DATA, FrameDecoder, encode_frame
from tests.listener_harness import NODE, serve


def frame(i, op, **args):
    return encode_frame({"v": 2, "id": i, "op": op, "args": args})


async def read_frames(stream, n):
    decoder, got = FrameDecoder(), []
    while len(got) < n:
        event = decoder.next_event()
        if event is NEED_DATA:
            data = await stream.receive_some(1 << 20)
            if not data:
                break
            decoder.receive_data(data)
            continue
        got.append(event)
    return got


async def read_until_closed(stream):
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def test_many_in_flight_answers_out_of_order(harness, autojump_clock):
    async with trio.open_nursery() as n:
        async with open_link(await serve(harness, n)) as link:
            results = {}

            async def one(ms):
                results[ms] = await link.request("nap", {"ms": ms})

            async with trio.open_nursery() as reqs:
                for ms in (400, 200, 10, 100):
                    reqs.start_soon(one, ms)
        n.cancel_scope.cancel()
    assert harness.order == [10, 100, 200, 400]  # finished by duration, not sending order
    assert results == {ms: {"ms": ms} for ms in results}


@pytest.mark.parametrize("harness", [{"max_inflight": 4}], indirect=True)
async def test_in_flight_limit_stops_reading(harness, autojump_clock):
    async with trio.open_nursery() as n:
        client = await serve(harness, n)
        await client.send_all(b"".join(frame(i, "block", n=i) for i in range(1, 11)))
        await trio.testing.wait_all_tasks_blocked()
        assert harness.active == 4 and sorted(harness.served) == [1, 2, 3, 4]  # 6 unread
        harness.release.set()
        got = await read_frames(client, 10)
        n.cancel_scope.cancel()
    assert harness.max_active == 4 and sorted(f["ok"]["n"] for f in got) == list(range(1, 11))


@pytest.mark.parametrize("harness", [{"idle_timeout": 30.0}], indirect=True)
async def test_an_idle_link_is_closed_and_a_slow_request_is_not_idle(harness, autojump_clock):
    async with trio.open_nursery() as n:
        async with open_link(await serve(harness, n)) as link:
            t0 = trio.current_time()
            assert await link.request("nap", {"ms": 50_000}) == {"ms": 50_000}  # 50 s: busy
            assert trio.current_time() - t0 == pytest.approx(50, abs=0.1)
        client = await serve(harness, n)
        t0 = trio.current_time()
        assert await read_until_closed(client) == b""
        assert trio.current_time() - t0 == pytest.approx(30, abs=0.1)
    assert harness.listener.counters["closed_idle"] == 1


@pytest.mark.parametrize("harness", [{"idle_timeout": 300.0, "frame_timeout": 10.0,
                                      "min_rate": 4096.0}], indirect=True)
async def test_a_trickled_frame_is_closed_at_its_deadline(harness, autojump_clock):
    """A header announcing 60,000 bytes, then one byte every 3 s: closed 10 s + 60,000/4096 s
    after the header, although the link is never silent for its idle timeout."""
    async with trio.open_nursery() as n:
        client = await serve(harness, n)
        await client.send_all((60_000).to_bytes(4, "big"))
        t0 = trio.current_time()

        async def trickle():
            try:
                while True:
                    await trio.sleep(3)
                    await client.send_all(b"\xa1")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        n.start_soon(trickle)
        assert await read_until_closed(client) == b""
        waited = trio.current_time() - t0
        n.cancel_scope.cancel()
    assert 10 + 60_000 / 4096 <= waited < 10 + 60_000 / 4096 + 3.1
    assert harness.listener.counters["closed_slow_frame"] == 1
    assert any("arrived too slowly" in line for line in harness.log_lines)


@pytest.mark.parametrize("harness", [{"stall_timeout": 20.0, "max_inflight": 4}],
                         indirect=True)
async def test_a_peer_that_stops_reading_is_dropped(harness, autojump_clock):
    """Pipelining requests without ever reading the answers: once an answer has waited for the
    peer `stall_timeout`, the link goes (with its in-flight slots)."""
    async with trio.open_nursery() as n:
        client = await serve(harness, n, lockstep=True)  # no buffers: a write waits for a read
        sent = 0

        async def pipeline_forever():
            nonlocal sent
            try:
                while True:
                    await client.send_all(frame(sent + 1, "big"))
                    sent += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        n.start_soon(pipeline_forever)
        with trio.fail_after(60):
            while harness.listener.active or not harness.served:
                await trio.sleep(1)
        n.cancel_scope.cancel()
    assert harness.listener.counters["closed_stalled"] == 1
    assert len(harness.served) <= 4 + 1  # the node stopped reading at its in-flight limit


async def test_drain_finishes_in_flight_then_closes(harness, autojump_clock):
    got = []
    async with trio.open_nursery() as n:
        async with open_link(await serve(harness, n)) as link:

            async def blocked():
                got.append(await link.request("block", {"n": 1}))

            n.start_soon(blocked)
            await trio.testing.wait_all_tasks_blocked()
            assert harness.active == 1
            harness.listener.drain()
            await trio.testing.wait_all_tasks_blocked()
            assert not harness.listener.drained.is_set()
            harness.release.set()
            with trio.fail_after(5):
                await harness.listener.drained.wait()
    assert got == [{"n": 1}]


async def test_malformed_frame_answer_then_close(harness, autojump_clock):
    async with trio.open_nursery() as n:
        client = await serve(harness, n)
        await client.send_all(frame(1, "info") + b"\x00\x00\x00\x02\xff\xff")
        data = await read_until_closed(client)
    assert b"bad_frame" in data and b"node_id" in data  # the good request was answered too
    assert harness.listener.counters["bad_frames"] == 1


class CountingStream(trio.abc.Stream):
    """The server's stream below TLS, counting writes (how many TLS records go out)."""

    def __init__(self, inner, writes):
        self.inner, self.writes = inner, writes

    async def send_all(self, data):
        self.writes.append(len(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self):
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        return await self.inner.receive_some(max_bytes)

    async def aclose(self):
        await self.inner.aclose()


async def test_a_burst_of_inline_requests_is_answered_in_few_writes(harness, autojump_clock):
    """`info` is answered in the read loop: a pipelined burst gets its answers in order, in one
    write per batch of requests read, not one write each."""
    writes = []
    async with trio.open_nursery() as n:
        client = await serve(harness, n, wrap_server=lambda s: CountingStream(s, writes))
        handshake_writes = len(writes)
        await client.send_all(b"".join(frame(i, "info") for i in range(1, 501)))
        got = await read_frames(client, 500)
        n.cancel_scope.cancel()
    assert [f["id"] for f in got] == list(range(1, 501))
    assert all(f["ok"]["node_id"] == NODE.node_id for f in got)
    assert len(writes) - handshake_writes <= 20


@pytest.mark.parametrize("harness", [{"max_inflight": 8}], indirect=True)
async def test_coalesced_answers_keep_completion_order(harness, autojump_clock):
    async with trio.open_nursery() as n:
        client = await serve(harness, n)
        await client.send_all(b"".join(frame(i, "nap", ms=20 + i % 3) for i in range(1, 301)))
        got = [f["ok"]["ms"] for f in await read_frames(client, 300)]
        n.cancel_scope.cancel()
    assert got == harness.order  # wire order = completion order
    assert sorted(got) == sorted(20 + i % 3 for i in range(1, 301))


async def test_answers_finishing_together_share_writes(harness, autojump_clock):
    """32 requests released at once: the first answer is written alone, the other 31 queue
    behind that write and go out together instead of one write each."""
    writes = []
    async with trio.open_nursery() as n:
        client = await serve(harness, n, wrap_server=lambda s: CountingStream(s, writes))
        await client.send_all(b"".join(frame(i, "block", n=i) for i in range(1, 33)))
        await trio.testing.wait_all_tasks_blocked()
        assert harness.active == 32
        before = len(writes)
        harness.release.set()
        got = await read_frames(client, 32)
        n.cancel_scope.cancel()
    assert sorted(f["ok"]["n"] for f in got) == list(range(1, 33))
    assert all(f["ok"]["n"] == f["id"] for f in got)
    assert len(writes) - before <= 4


@pytest.mark.parametrize("harness", [{"max_inflight": 4, "stall_timeout": 600.0}],
                         indirect=True)
async def test_a_slow_reader_stops_the_node_reading_and_then_gets_everything(
        harness, autojump_clock):
    """Backpressure survives coalescing: while the peer does not read, senders wait with their
    in-flight slots held and the node stops reading; once the peer reads, every answer comes."""
    async with trio.open_nursery() as n:
        client = await serve(harness, n, lockstep=True)

        async def send_all():
            await client.send_all(b"".join(frame(i, "big") for i in range(1, 51)))

        n.start_soon(send_all)
        await trio.sleep(5)
        assert 4 <= len(harness.served) <= 5  # in-flight slots full: no more reading
        got = await read_frames(client, 50)
        n.cancel_scope.cancel()
    assert sorted(f["id"] for f in got) == list(range(1, 51))
    assert [f["id"] for f in got] == harness.served


async def test_the_handshake_deadline_moves_by_the_time_the_node_held_its_reads(autojump_clock):
    from firmware.serve.conn_policy import ConnLimits, ConnPolicy
    from firmware.serve.listener import Listener, _Conn
    from firmware.serve.pipeline import ConnInfo

    held = [0.0]
    conn = _Conn(object(), ConnInfo("192.0.2.1", 1), raw=object(),
                 reads_held=lambda raw: held[0])
    t0 = trio.current_time()
    conn.policy = ConnPolicy(ConnLimits(handshake_timeout=10), t0)
    with trio.CancelScope() as handshake:
        async with trio.open_nursery() as n:
            n.start_soon(Listener._handshake_clock, conn, handshake)
            await trio.sleep(6)
            held[0] = 7.0  # pacing the cap held its reads 7 s meanwhile
            await trio.sleep_forever()
    assert handshake.cancelled_caught
    assert trio.current_time() - t0 == pytest.approx(17.0)
