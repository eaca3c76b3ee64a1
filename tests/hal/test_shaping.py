"""The shaper on trio streams, in virtual time (memory streams + autojump clock)."""

import trio
import trio.testing

from firmware.device.shaping import PeerBuckets, ShapedStream
from hal.core.bandwidth import BandwidthShaper


def clock_ms():
    return int(trio.current_time() * 1000)


async def pump(send_stream, data):
    await send_stream.send_all(data)


async def drain(receive_stream, n):
    got = 0
    while got < n:
        chunk = await receive_stream.receive_some(65536)
        assert chunk
        got += len(chunk)
    return got


async def test_sending_waits_for_the_link_rate(autojump_clock):
    shaper = BandwidthShaper(clock_ms(), up_rate=100_000, down_rate=10**12, burst_s=0.1,
                             min_chunk=16384)
    a, b = trio.testing.memory_stream_pair()
    shaped = ShapedStream(a, shaper, clock_ms)
    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        n.start_soon(pump, shaped, b"x" * 200_000)
        assert await drain(b, 200_000) == 200_000
    took = trio.current_time() - t0
    assert 1.75 < took < 1.95, took  # (200000 - 16384 burst) / 100000 B/s = 1.84 s
    assert shaper.totals["up"] == 200_000


async def test_receiving_pays_off_what_arrived_before_reading_more(autojump_clock):
    shaper = BandwidthShaper(clock_ms(), up_rate=10**12, down_rate=50_000, burst_s=0.1,
                             min_chunk=16384)
    a, b = trio.testing.memory_stream_pair()
    shaped = ShapedStream(b, shaper, clock_ms)
    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        n.start_soon(pump, a, b"y" * 100_000)
        await drain(shaped, 100_000)
    took = trio.current_time() - t0
    # the last read is not paid for before returning: ~(100000 - 16384 - last chunk) / 50000
    assert 0.3 < took < 1.8, took
    assert shaper.totals["down"] == 100_000
    assert shaper.debt_ms("down", clock_ms()) > 0  # and the next read would wait


async def test_one_peer_cannot_take_the_whole_link(autojump_clock):
    shaper = BandwidthShaper(clock_ms(), up_rate=10**12, down_rate=10**12)
    peers = PeerBuckets(50_000, 0.1, clock_ms)
    greedy = peers.pair("192.0.2.7")
    other = peers.pair("198.51.100.1")
    assert peers.pair("192.0.2.7") is greedy
    t0 = trio.current_time()
    times = {}

    async def send(name, pair, n):
        a, b = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nn:
            nn.start_soon(pump, ShapedStream(a, shaper, clock_ms, pair), b"z" * n)
            await drain(b, n)
        times[name] = trio.current_time() - t0

    async with trio.open_nursery() as n:
        n.start_soon(send, "greedy-1", greedy, 100_000)
        n.start_soon(send, "greedy-2", greedy, 100_000)  # same address: shares the bucket
        n.start_soon(send, "other", other, 20_000)
    assert times["other"] < 0.2, times
    # both greedy links together: (200000 - 16384 burst) / 50000 B/s = 3.67 s
    assert 3.5 < max(times["greedy-1"], times["greedy-2"]) < 3.9, times
