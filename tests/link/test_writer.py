"""The one frame writer (Outbox): coalescing, order, breakage, cancellation; virtual time."""

import pytest
import trio
import trio.testing

from firmware.link import Outbox

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
