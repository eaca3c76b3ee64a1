"""The shaper on trio streams, in virtual time (memory streams + autojump clock), and the
service's wrapper on real loopback sockets (what is metered, and how)."""

import io
import socket

import pytest
import trio
import trio.testing

from firmware.device.shaping import (
    BandwidthService,
    LocalStream,
    PeerBuckets,
    ShapedStream,
    Unmetered,
)
from firmware.logs import Log
from firmware.settings import default_schema
from hal.backends.netio import PayloadMeter, SocketMeter
from hal.core import wire
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


async def test_a_busy_client_under_a_paced_cap_does_not_starve_a_newcomer(autojump_clock):
    # One client stores flat out (a 700-byte request, a 150-byte answer) through a node whose
    # cap is paced at ~1000 B/s. A new connection's first flight (~1100 bytes of TLS) must get
    # its turn: it used to wait for ever, which locked `homenode status` out of a busy box.
    shaper = BandwidthShaper(clock_ms(), burst_s=1, min_chunk=1000,
                             monthly_cap_bytes=10**6, cycle_ms=1000 * 1000)
    busy_client, busy_node = trio.testing.memory_stream_pair()
    busy = ShapedStream(busy_node, shaper, clock_ms)
    newcomer, newcomer_peer = trio.testing.memory_stream_pair()
    shaped_newcomer = ShapedStream(newcomer, shaper, clock_ms)
    answered = []

    async def client():
        while True:
            await busy_client.send_all(b"r" * 700)
            await drain(busy_client, 150)

    async def node():
        while True:
            await drain(busy, 700)
            await busy.send_all(b"a" * 150)
            answered.append(trio.current_time())

    async with trio.open_nursery() as n:
        n.start_soon(client)
        n.start_soon(node)
        await trio.sleep(5)
        t0 = trio.current_time()
        took = None
        with trio.move_on_after(60):
            async with trio.open_nursery() as nn:
                nn.start_soon(pump, shaped_newcomer, b"h" * 1100)
                await drain(newcomer_peer, 1100)
            took = trio.current_time() - t0
        n.cancel_scope.cancel()
    assert took is not None and took < 3.0, took
    assert len(answered) >= 3  # the busy client was served as well (it is not starved either)


# -- what is metered, and how: the service's wrapper on real loopback sockets ----------------



@pytest.mark.parametrize("peer, local, networks, operator", [
    ("127.0.0.1", "127.0.0.1", ["127.0.0.0/8", "::1/128"], True),  # status via node.json
    ("127.0.1.1", "127.0.0.1", ["127.0.0.0/8", "::1/128"], True),  # Debian's hostname entry
    ("::1", "::1", ["127.0.0.0/8", "::1/128"], True),
    ("::ffff:127.0.0.1", "::ffff:127.0.0.1", ["127.0.0.0/8"], True),  # dual-stack listener
    ("192.168.1.20", "192.168.1.20", [], True),  # the box by its own LAN address
    ("fe80::1%eth0", "fe80::1%eth0", [], True),
    ("127.0.0.1", "127.0.0.2", [], False),  # loopback taken out of the list: metered
    ("192.168.1.30", "192.168.1.20", ["127.0.0.0/8"], False),  # another box on the LAN
    ("192.168.1.30", "192.168.1.20", ["192.168.1.0/24"], True),  # ... unless the LAN is listed
    ("203.0.113.9", "192.168.1.20", ["127.0.0.0/8", "::1/128"], False),  # the internet
    ("::ffff:203.0.113.9", "::ffff:10.0.0.2", ["127.0.0.0/8"], False),
    ("garbage", None, ["127.0.0.0/8"], False),
])
def test_operator_traffic_rule(peer, local, networks, operator):
    assert Unmetered(networks)(peer, local) is operator


def test_a_bad_network_is_named():
    with pytest.raises(ValueError, match="'10.0.0.300/8'"):
        Unmetered(["10.0.0.300/8"])


def service(tmp_path, **bandwidth):
    cfg = default_schema().load(overrides={f"bandwidth.{k}": v for k, v in bandwidth.items()})
    return BandwidthService(cfg.bandwidth, str(tmp_path), lambda: int(trio.current_time() * 1000),
                            Log("warning", stream=io.StringIO()))


async def test_quiet_hours_alone_turn_shaping_on(tmp_path):
    # quiet hours with no other limit used to leave shaping off: the quiet rate never applied
    assert not service(tmp_path).enabled
    assert service(tmp_path, quiet_hours=["18:00-23:00"]).enabled
    assert service(tmp_path, monthly_cap_gb=1.0).enabled


async def tcp_pair(host):
    """(accepted server-side stream, client stream) over loopback, the server on `host`."""
    listener = (await trio.open_tcp_listeners(0, host=host))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream(host, port)
    server = await listener.accept()
    await listener.aclose()
    return server, client


async def test_loopback_clients_are_counted_apart_and_never_shaped(tmp_path):
    bw = service(tmp_path, monthly_cap_gb=0.001, cycle_s=60)
    bw.shaper.account("down", 10 ** 6, bw.clock_ms())  # the cap is spent ...
    server, client = await tcp_pair("127.0.0.1")
    wrapped = bw.wrap(server)
    assert isinstance(wrapped, LocalStream)
    with trio.fail_after(1):  # ... and the operator still gets through at once
        await client.send_all(b"status?")
        assert await wrapped.receive_some(100) == b"status?"
        await wrapped.send_all(b"x" * 5000)
    info = bw.info()
    assert (info["local_down_bytes"], info["local_up_bytes"]) == (7, 5000)
    assert info["used_bytes"] == 10 ** 6 and info["up_bytes"] == 0
    await wrapped.aclose()
    await client.aclose()


async def test_metered_links_count_wire_bytes_from_the_kernel_even_unshaped(tmp_path):
    bw = service(tmp_path, unmetered_networks=[])
    assert not bw.enabled  # no limit configured: count, never wait
    server, client = await tcp_pair("127.0.0.2")  # peer 127.0.0.1 is not the local address
    wrapped = bw.wrap(server)
    assert isinstance(wrapped, ShapedStream) and isinstance(wrapped.meter, SocketMeter)
    assert wrapped in bw._live
    payload = b"p" * 300_000

    async def read_all():
        got = 0
        while got < len(payload):
            got += len(await client.receive_some(65536))

    async with trio.open_nursery() as n:
        n.start_soon(read_all)
        await wrapped.send_all(payload)
    await client.send_all(b"q" * 1000)
    assert await wrapped.receive_some(65536)
    await wrapped.aclose()
    await client.aclose()
    assert wrapped not in bw._live
    up, down = bw.shaper.totals["up"], bw.shaper.totals["down"]
    hdr = wire.header_bytes()
    # payload plus a header for every segment (loopback segments are up to 64 KB), the
    # handshake and the close; ACKs the client sent come in
    assert 300_000 + 5 * hdr <= up <= 300_000 * 1.01 + 1000, up
    assert 1000 + 5 * hdr <= down <= 1000 + 200 * hdr, down
    assert bw.info()["local_up_bytes"] == 0


async def test_with_a_cap_the_windows_are_bounded_and_held_in_reserve(tmp_path):
    bw = service(tmp_path, monthly_cap_gb=0.004, cycle_s=60, unmetered_networks=[])
    server, client = await tcp_pair("127.0.0.2")
    wrapped = bw.wrap(server)
    sock = server.socket
    target = wrapped.meter.receive_buffer
    assert wire.MIN_WINDOW <= target <= bw.shaper.pace.burst
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * target  # Linux doubles
    assert bw.shaper.reserved() >= wrapped.meter.window > 0
    # near the cap the sweep shrinks every window to a share of what is left
    bw.shaper.account("down", 4_000_000 - 40_000, bw.clock_ms())
    bw.sweep()
    assert wrapped.meter.receive_buffer == wire.MIN_WINDOW
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * wire.MIN_WINDOW
    await client.aclose()
    await wrapped.aclose()
    assert bw.shaper.reserved() == 0


class WindowMeter(PayloadMeter):
    """PayloadMeter with a receive window, as SocketMeter reports one (test double)."""

    def __init__(self, window):
        super().__init__()
        self.window_size = window

    def read(self):
        super().read()
        self.window = self.window_size
        return True


async def test_reading_stops_while_the_open_windows_would_overrun_the_cap(autojump_clock):
    cap = 1_000_000
    shaper = BandwidthShaper(clock_ms(), up_rate=10**12, down_rate=10**12, burst_s=1000.0,
                             monthly_cap_bytes=cap, cycle_ms=3_600_000, min_chunk=16384)
    a, b = trio.testing.memory_stream_pair()
    shaped = ShapedStream(b, shaper, clock_ms, meter=WindowMeter(60_000))
    shaped.sync()
    reserve = wire.window_reserve(60_000, wire.DEFAULT_MSS, 0)[1]
    assert shaper.reserved() == reserve
    shaper.account("down", cap - reserve - 10_000, clock_ms())
    await a.send_all(b"z" * 10_000)
    assert len(await shaped.receive_some(65536)) == 10_000  # fits: read
    await a.send_all(b"z" * 10)
    with trio.move_on_after(30) as held:
        await shaped.receive_some(65536)  # used + open window = cap: not another byte
    assert held.cancelled_caught
    assert shaper.budget.used_bytes == cap - reserve
    shaped.finish()  # the link closed: its window no longer counts
    assert shaper.reserved() == 0


async def test_the_time_the_node_held_reads_is_told_apart(autojump_clock):
    # a listener's slow-frame deadline must not blame the peer for the node's own pacing
    shaper = BandwidthShaper(clock_ms(), up_rate=10**12, down_rate=50_000, burst_s=0.1,
                             min_chunk=16384)
    a, b = trio.testing.memory_stream_pair()
    shaped = ShapedStream(b, shaper, clock_ms)
    await a.send_all(b"w" * 40_000)
    assert len(await shaped.receive_some(65536)) == 40_000
    assert shaped.held_s == 0 and shaped.held_since is None
    seen = {}

    async def look():
        await trio.sleep(0.1)
        seen["since"] = shaped.held_since

    async with trio.open_nursery() as n:
        n.start_soon(look)
        await a.send_all(b"w")
        await shaped.receive_some(65536)
    assert seen["since"] is not None  # held while the debt was paid off
    assert 0.4 < shaped.held_s < 0.6, shaped.held_s  # (40000 - 16384) / 50000 B/s = 0.47 s
