"""What the node's connections and interfaces carried: per-socket wire meters for the shaper,
and the interfaces' byte counters (psutil) to cross-check them.

Why per socket: the monthly cap is enforced per connection (pacing, windows, operator traffic
exempt), so it needs each connection's own figures; the kernel keeps them (TCP_INFO,
SO_MEMINFO; the arithmetic is hal.core.wire). The interface counters cover everything the box
sends, so status shows how they compare (`interfaces_per_counted_byte`): the margin left for
traffic that is not the node's.
"""

import socket

from hal.core import wire

SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55)  # Linux; Python does not export it
TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux only


class PayloadMeter:
    """Wire bytes estimated from the payload passed through (`sent`/`received`): a header per
    `mss` of payload and an ACK every second segment the other way. With `hdr` 0 it counts
    payload exactly (in-memory streams in tests). Same interface as SocketMeter."""

    syscalls = False  # reading it costs nothing: sync after every operation

    def __init__(self, hdr=0, mss=wire.DEFAULT_MSS):
        self.hdr = hdr
        self.mss = self.rcv_mss = mss
        self.up = self.down = 0
        self.window = 0
        self._sent = self._received = 0

    def sent(self, n):
        self._sent += n

    def received(self, n):
        self._received += n

    def read(self):
        """Refresh `up`, `down`, `window`; False once the connection is gone (figures kept)."""
        s, r, h, m = self._sent, self._received, self.hdr, self.mss
        self.up = wire.estimate_bytes(s, m, h) + (r + 2 * m - 1) // (2 * m) * h
        self.down = wire.estimate_bytes(r, m, h) + (s + 2 * m - 1) // (2 * m) * h
        return True

    def closed(self):
        return False

    def set_receive_buffer(self, n):
        pass


class SocketMeter(PayloadMeter):
    """The kernel's own wire figures for one TCP socket (a trio or stdlib socket): exact
    per-segment counts on Linux 4.2+, the payload estimate elsewhere."""

    syscalls = True

    def __init__(self, sock, ipv6=False):
        super().__init__(wire.header_bytes(ipv6))
        self.sock = sock
        self.ipv6 = ipv6
        self.exact = TCP_INFO is not None
        self.receive_buffer = None  # last SO_RCVBUF we set

    def read(self):
        if not self.exact:
            return super().read() and not self.closed()
        try:
            fig = wire.parse_tcp_info(self.sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO,
                                                           wire.TCP_INFO_LEN))
            if fig is None:
                self.exact = False
                return self.read()
            drops = wire.parse_meminfo_drops(self.sock.getsockopt(
                socket.SOL_SOCKET, SO_MEMINFO, wire.MEMINFO_LEN))
            if fig.rcv_wnd >= 0:
                window = fig.rcv_wnd
            else:  # before Linux 6.2: the buffer bounds the window
                window = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        except (OSError, ValueError):  # closed (EBADF), or not a TCP socket
            return False
        self.hdr = wire.header_bytes(self.ipv6, fig.timestamps)
        self.mss, self.rcv_mss = fig.snd_mss, fig.rcv_mss
        up, down = wire.wire_bytes(fig, drops, self.hdr)
        if up > self.up:
            self.up = up
        if down > self.down:
            self.down = down
        self.window = window
        return True

    def closed(self):
        try:
            return self.sock.fileno() == -1
        except (OSError, ValueError):
            return True

    def set_receive_buffer(self, n):
        """Bound the kernel's receive buffer (and so the window it advertises) to about `n`."""
        if n == self.receive_buffer:
            return
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, n)
            self.receive_buffer = n
        except (OSError, ValueError):
            pass


class NetCounters:
    def __init__(self, psutil_module, complaints, exclude=("lo",)):
        self.psutil = psutil_module
        self.complaints = complaints
        self.exclude = exclude

    def totals(self):
        """(bytes sent, bytes received) over all non-excluded interfaces, or None."""
        try:
            per = self.psutil.net_io_counters(pernic=True)
        except Exception as e:  # psutil: OSError, RuntimeError on odd /proc
            self.complaints.problem("net", f"cannot read interface counters: {e}")
            return None
        sent = recv = 0
        for name, c in per.items():
            if name in self.exclude:
                continue
            sent += c.bytes_sent
            recv += c.bytes_recv
        return sent, recv


class CrossCheck:
    """Ratio of interface bytes to node-counted bytes over the same interval."""

    def __init__(self):
        self._last = None

    def update(self, node_bytes, iface_bytes):
        """Feed cumulative counters; returns iface/node for the interval, or None."""
        last = self._last
        self._last = (node_bytes, iface_bytes)
        if last is None:
            return None
        dn = node_bytes - last[0]
        di = iface_bytes - last[1]
        if dn <= 0 or di < 0:
            return None
        return di / dn


def has_usable_network(psutil_module, exclude=("lo",)):
    """True if some interface other than loopback is up with an IPv4 or a global IPv6 address
    (no address at all is what an unconfigured Wi-Fi looks like: the LED says needs_setup)."""
    try:
        stats = psutil_module.net_if_stats()
        addrs = psutil_module.net_if_addrs()
    except Exception:  # unknown: do not claim the operator has work to do
        return True
    for name, st in stats.items():
        if name in exclude or not st.isup:
            continue
        for a in addrs.get(name, ()):
            fam = getattr(a.family, "name", str(a.family))
            if fam == "AF_INET" or (fam == "AF_INET6" and not a.address.lower().startswith("fe80")):
                return True
    return False
