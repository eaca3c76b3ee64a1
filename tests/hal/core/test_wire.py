"""Wire bytes from the kernel's per-socket figures (runs under CPython and MicroPython)."""

import struct

from hal.core import wire


def tcp_info(length=280, options=7, snd_mss=1448, rcv_mss=1448, acked=0, received=0,
             segs_out=0, segs_in=0, sent=0, rcv_wnd=65160, data_segs_in=0):
    """A struct tcp_info as Linux 6.x lays it out, with the fields the meter reads."""
    b = bytearray(length)
    b[5] = options
    struct.pack_into("<I", b, 16, snd_mss)
    struct.pack_into("<I", b, 20, rcv_mss)
    struct.pack_into("<Q", b, 120, acked)
    struct.pack_into("<Q", b, 128, received)
    struct.pack_into("<I", b, 136, segs_out)
    struct.pack_into("<I", b, 140, segs_in)
    if length >= 156:
        struct.pack_into("<I", b, 152, data_segs_in)
    if length >= 208:
        struct.pack_into("<Q", b, 200, sent)
    if length >= 236:
        struct.pack_into("<I", b, 232, rcv_wnd)
    return bytes(b)


def test_parses_the_fields_of_a_current_kernel():
    f = wire.parse_tcp_info(tcp_info(acked=300000, received=2000001, segs_out=1400,
                                     segs_in=1393, sent=300000, rcv_wnd=19456))
    assert (f.bytes_sent, f.bytes_received, f.segs_out, f.segs_in) == (300000, 2000001, 1400,
                                                                        1393)
    assert f.timestamps and f.rcv_wnd == 19456 and f.snd_mss == 1448


def test_older_kernels_fall_back_field_by_field():
    # 4.2 .. 4.18: no bytes_sent (acknowledged bytes instead), no rcv_wnd
    f = wire.parse_tcp_info(tcp_info(length=192, acked=5000, sent=9999, segs_out=4))
    assert f.bytes_sent == 5000 and f.rcv_wnd == -1
    # before 4.2 there are no segment counters at all: the caller estimates
    assert wire.parse_tcp_info(tcp_info()[:104]) is None
    assert wire.parse_tcp_info(tcp_info(options=0)).timestamps is False


def test_meminfo_drops():
    assert wire.parse_meminfo_drops(struct.pack("<9I", 0, 0, 0, 0, 0, 0, 0, 0, 209)) == 209
    assert wire.parse_meminfo_drops(b"\0" * 8) == 0


def test_header_sizes():
    assert wire.header_bytes() == 52  # IPv4 20 + TCP 20 + timestamps 12
    assert wire.header_bytes(ipv6=True) == 72
    assert wire.header_bytes(timestamps=False) == 40


def test_wire_bytes_match_measured_connections():
    # Figures read on Linux 6.18 across a veth pair with GSO off (one packet per segment), next
    # to what nftables counted on the same interface.
    hdr = wire.header_bytes()
    # a served connection: 5000 B in, 3000 B out, then the node closes
    f = wire.parse_tcp_info(tcp_info(sent=3000, segs_out=7, received=5000, segs_in=9))
    assert wire.wire_bytes(f, 0, hdr) == (3424, 5476)  # nft before the close
    up, down = wire.wire_bytes(f, 0, hdr)
    up_close, down_close = wire.close_bytes(hdr)
    assert (up + up_close, down + down_close) == (3528, 5528)  # nft after it
    # 2 MB in bulk through a reader that paused: one segment dropped at the full buffer and
    # sent again; nft counted 2074828 B in (bytes_received holds the FIN's 1 on top)
    f = wire.parse_tcp_info(tcp_info(received=2000001, segs_in=1411, sent=300000,
                                     segs_out=346, data_segs_in=1383))
    assert wire.wire_bytes(f, 1, hdr)[1] == 2074829
    assert wire.wire_bytes(f, 0, hdr)[1] == 2074829 - 1448  # what the drop count adds
    # a reader that never paused for long: 209 segments dropped, all of them data
    # (nft: 2387840 B in; the peer's retransmits of them were 302632 B)
    f = wire.parse_tcp_info(tcp_info(received=2000001, segs_in=1627, data_segs_in=1591))
    assert abs(wire.wire_bytes(f, 209, hdr)[1] - 2387840) < 1500


def test_dropped_probes_without_payload_are_not_counted_as_data():
    # A stalled reader drops the peer's zero-window probes (no payload) too: SO_MEMINFO counts
    # them, but data_segs_in does not grow beyond what the payload needed.
    f = wire.parse_tcp_info(tcp_info(received=2000001, segs_in=1500, data_segs_in=1382))
    assert wire.dropped_data_segments(f, 40) == 0
    f = wire.parse_tcp_info(tcp_info(received=2000001, segs_in=1500, data_segs_in=1385))
    assert wire.dropped_data_segments(f, 40) == 3
    # small segments: the payload bound is loose, the kernel's drop count is the limit
    f = wire.parse_tcp_info(tcp_info(received=30000, segs_in=300, data_segs_in=200))
    assert wire.dropped_data_segments(f, 2) == 2
    # a kernel without data_segs_in: every drop counts
    assert wire.dropped_data_segments(wire.parse_tcp_info(tcp_info()[:150]), 5) == 5


def test_close_and_open_costs_are_whole_packets():
    assert wire.close_bytes(52) == (104, 52)
    assert wire.open_bytes(52) == (60, 8)


def test_estimate_and_its_inverse():
    assert wire.estimate_bytes(0, 1448, 52) == 0
    assert wire.estimate_bytes(1, 1448, 52) == 53
    assert wire.estimate_bytes(1448, 1448, 52) == 1500
    assert wire.estimate_bytes(1449, 1448, 52) == 1449 + 104
    for budget in (53, 1500, 1552, 16384, 100000):
        n = wire.payload_fitting(budget, 1448, 52)
        assert wire.estimate_bytes(n, 1448, 52) <= budget
        assert wire.estimate_bytes(n + 1, 1448, 52) > budget
    assert wire.payload_fitting(52, 1448, 52) == 0


def test_window_reserve_counts_headers_and_acks():
    assert wire.window_reserve(0, 1448, 52) == (0, 0)
    up, down = wire.window_reserve(14480, 1448, 52)  # 10 full segments
    assert down == 14480 + 10 * 52 and up == 10 * 52


def test_receive_buffer_shrinks_with_what_is_left():
    assert wire.receive_buffer(250000, 10 ** 9, 3) == 250000  # far from the cap: a pace burst
    assert wire.receive_buffer(250000, 120000, 3) == 10000  # near: a quarter of each share
    assert wire.receive_buffer(250000, 0, 3) == wire.MIN_WINDOW
    assert wire.receive_buffer(10 ** 9, 10 ** 12, 1) == wire.MAX_WINDOW
