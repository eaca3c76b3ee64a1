"""What one TCP connection costs on the wire, from the kernel's own per-socket figures.

Why: an ISP meters IP packets, not the bytes an application reads. A node that counts what it
reads misses the IP/TCP headers (a few % on bulk data, most of a pure ACK), the data the kernel
accepted into its receive buffer but the node has not read yet, and the segments the kernel
received and threw away (retransmitted duplicates, segments past a full buffer). Linux keeps
all of that per socket: TCP_INFO has the payload bytes sent (retransmits included) and received,
and the segments each way; SO_MEMINFO has the segments the socket dropped. Headers are then
exact per segment (IP + TCP + the timestamp option when negotiated); only the SYN/FIN packets
outside TCP_INFO's view are added as constants, measured on Linux 6.x and rounded up.

The receive window is the other half: it is how much a peer may still send without the node
reading anything, so it is what the cap must keep in reserve (see `window_reserve`).

Pure functions over bytes and integers (MicroPython subset); the getsockopt calls live in
hal/backends/netio.py.
"""

import struct

IPV4_HEADER = 20
IPV6_HEADER = 40
TCP_HEADER = 20
TIMESTAMP_OPTION = 12
OPT_TIMESTAMPS = 1  # tcpi_options bit: TCP timestamps negotiated (every segment carries 12 B)
SYN_OPTIONS_EXTRA = 8  # a SYN or SYN-ACK carries MSS, SACK-permitted, window scale too
DEFAULT_MSS = 1448  # Ethernet MTU 1500 - 20 - 20 - 12

# struct tcp_info offsets (include/uapi/linux/tcp.h; stable ABI, fields only ever appended)
_OFF_OPTIONS = 5
_OFF_SND_MSS = 16
_OFF_RCV_MSS = 20
_OFF_BYTES_ACKED = 120
_OFF_BYTES_RECEIVED = 128
_OFF_SEGS_OUT = 136
_OFF_SEGS_IN = 140
_OFF_DATA_SEGS_IN = 152  # Linux 4.6+: segments that carried payload (dropped ones too)
_OFF_BYTES_SENT = 200  # Linux 4.19+; retransmitted bytes included
_OFF_RCV_WND = 232  # Linux 6.2+: the receive window last advertised
MIN_TCP_INFO = 144  # up to segs_in (Linux 4.2+)
TCP_INFO_LEN = 240

_MEMINFO_DROPS = 8  # SK_MEMINFO_DROPS: index in the u32 array SO_MEMINFO returns
MEMINFO_LEN = 36


class TcpFigures:
    """The per-socket counters the wire count needs (cumulative since the connection began)."""

    def __init__(self, bytes_sent, bytes_received, segs_out, segs_in, snd_mss=DEFAULT_MSS,
                 rcv_mss=DEFAULT_MSS, timestamps=True, rcv_wnd=-1, data_segs_in=-1):
        self.bytes_sent = bytes_sent
        self.bytes_received = bytes_received
        self.segs_out = segs_out
        self.segs_in = segs_in
        self.snd_mss = snd_mss
        self.rcv_mss = rcv_mss
        self.timestamps = timestamps
        self.rcv_wnd = rcv_wnd  # -1: this kernel does not report it
        self.data_segs_in = data_segs_in  # -1: likewise


def parse_tcp_info(buf):
    """`getsockopt(IPPROTO_TCP, TCP_INFO)` bytes -> TcpFigures, or None when the kernel is too
    old to have the segment counters (then the caller estimates from payload)."""
    n = len(buf)
    if n < MIN_TCP_INFO:
        return None
    if n >= _OFF_BYTES_SENT + 8:
        sent = struct.unpack_from("<Q", buf, _OFF_BYTES_SENT)[0]
    else:  # before 4.19: acknowledged bytes, retransmits not visible
        sent = struct.unpack_from("<Q", buf, _OFF_BYTES_ACKED)[0]
    rcv_wnd = struct.unpack_from("<I", buf, _OFF_RCV_WND)[0] if n >= _OFF_RCV_WND + 4 else -1
    data_in = (struct.unpack_from("<I", buf, _OFF_DATA_SEGS_IN)[0]
               if n >= _OFF_DATA_SEGS_IN + 4 else -1)
    return TcpFigures(
        sent, struct.unpack_from("<Q", buf, _OFF_BYTES_RECEIVED)[0],
        struct.unpack_from("<I", buf, _OFF_SEGS_OUT)[0],
        struct.unpack_from("<I", buf, _OFF_SEGS_IN)[0],
        struct.unpack_from("<I", buf, _OFF_SND_MSS)[0] or DEFAULT_MSS,
        struct.unpack_from("<I", buf, _OFF_RCV_MSS)[0] or DEFAULT_MSS,
        bool(buf[_OFF_OPTIONS] & OPT_TIMESTAMPS), rcv_wnd, data_in)


def parse_meminfo_drops(buf):
    """`getsockopt(SOL_SOCKET, SO_MEMINFO)` bytes -> segments the socket dropped."""
    if len(buf) < MEMINFO_LEN:
        return 0
    return struct.unpack_from("<I", buf, _MEMINFO_DROPS * 4)[0]


def header_bytes(ipv6=False, timestamps=True):
    """IP + TCP header bytes of one segment."""
    return ((IPV6_HEADER if ipv6 else IPV4_HEADER) + TCP_HEADER
            + (TIMESTAMP_OPTION if timestamps else 0))


def _segments(payload, mss):
    if payload <= 0:
        return 0
    return (payload + mss - 1) // mss


def open_bytes(hdr):
    """(up, down) bytes of the handshake that TCP_INFO does not show: the SYN-ACK a server
    sends is not in segs_out, and both SYNs carry 8 option bytes more than a data segment.
    (A client's SYN is in segs_out: counting the SYN-ACK anyway over-counts it by one header.)"""
    return hdr + SYN_OPTIONS_EXTRA, SYN_OPTIONS_EXTRA


def close_bytes(hdr):
    """(up, down) bytes after the socket is closed, when TCP_INFO can no longer be read: our
    FIN and the ACK of the peer's FIN going out, the peer's FIN/ACK coming in."""
    return 2 * hdr, hdr


def dropped_data_segments(fig, drops):
    """How many of the segments the socket dropped carried payload (an upper bound).

    SO_MEMINFO's count includes segments with no payload (zero-window probes, which arrive
    while the node is not reading). Segments that brought new payload number at least
    payload / mss, so data segments beyond that were dropped copies; both counts bound the
    real number from above, and the smaller is used."""
    if fig.data_segs_in < 0 or drops == 0:
        return drops
    received = fig.bytes_received - 1 if fig.bytes_received > 0 else 0  # the FIN counts 1
    extra = fig.data_segs_in - _segments(received, fig.rcv_mss)
    if extra < 0:
        extra = 0
    return extra if extra < drops else drops


def wire_bytes(fig, drops, hdr):
    """Cumulative (up, down) IP bytes of one connection, handshake included, close excluded.

    Up: payload sent (retransmits included) plus a header per segment out (pure ACKs too).
    Down: payload received plus a header per segment in, plus the payload of the dropped data
    segments, each counted as a full one (dropped data segments are nearly always full: bulk
    data past a full buffer, or a retransmitted copy of one)."""
    up_open, down_open = open_bytes(hdr)
    up = fig.bytes_sent + fig.segs_out * hdr + up_open
    down = (fig.bytes_received + fig.segs_in * hdr
            + dropped_data_segments(fig, drops) * fig.rcv_mss + down_open)
    return up, down


def estimate_bytes(payload, mss, hdr):
    """IP bytes of `payload` sent in segments of at most `mss` (asking before sending, and
    counting where the kernel's figures are not available)."""
    return payload + _segments(payload, mss) * hdr


def payload_fitting(wire, mss, hdr):
    """The most payload whose `estimate_bytes` is at most `wire` (0 if not even one byte)."""
    full, rest = wire // (mss + hdr), wire % (mss + hdr)
    return full * mss + (rest - hdr if rest > hdr else 0)


def window_reserve(window, mss, hdr):
    """(up, down) IP bytes a peer can still make the node's line carry without the node reading
    a byte: the open receive window in segments with their headers, and an ACK for each (the
    worst case; Linux ACKs every second segment)."""
    if window <= 0:
        return 0, 0
    segs = _segments(window, mss)
    return segs * hdr, window + segs * hdr


MIN_WINDOW = 4096  # a few segments: below this TCP is mostly headers
MAX_WINDOW = 4 * 1024 * 1024


def receive_buffer(pace_burst, headroom, connections):
    """Receive buffer for each metered connection while a monthly cap is set.

    The window a connection advertises is bytes the node has promised to accept unread, so the
    cap must keep that much in reserve: one pace burst per connection keeps a paced link busy;
    near the cap each connection gets at most a quarter of its share of what is left, so the
    windows (and the reserve) shrink as the cap runs out instead of ending the cycle early."""
    b = int(pace_burst)
    if connections > 0:
        share = int(headroom) // (4 * connections)
        if share < b:
            b = share
    if b < MIN_WINDOW:
        return MIN_WINDOW
    if b > MAX_WINDOW:
        return MAX_WINDOW
    return b

