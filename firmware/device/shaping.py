"""The bandwidth shaper applied to the node's links, and its persistent monthly accounting.

Why below TLS: the wrapper sits between the TCP socket and `trio.SSLStream`, under every
connection the node accepts or opens. Sending waits for tokens before writing; receiving waits
off the debt before the next read, so TCP backpressure slows the sender instead of the node
dropping anything.

What is counted is what an ISP meters: IP bytes on the wire, read from the kernel per socket
(hal.core.wire: payload both ways with retransmits, dropped segments, a header per segment,
handshake and close) - including what the kernel accepted but the node has not read yet.
Counting always runs; shaping only when a limit or a cap is configured.

Operator traffic is never metered: a connection whose peer is in `unmetered_networks`
(loopback by default) or is the box's own address (peer address = local address) is neither
shaped nor counted against the cap. It never crosses the metered line, and `homenode status` on
the box must answer while the node paces the cap. It is counted apart (`local_*_bytes`).

Near the cap the node stops reading before the kernel can accept more than the cap allows: every
metered connection's receive buffer is bounded (hal.core.wire.receive_buffer) and the windows
the kernel has advertised are held in reserve by the shaper.

Accounting survives restarts and `kill -9`: the cycle's byte count is written to
`<data_dir>/bandwidth.json` every `persist_interval` seconds (atomic rename; fsync only every
few minutes to spare the SD card - page cache survives a killed process, not a power cut).
"""

import ipaddress
import json
import os
import socket
import time
from collections import OrderedDict

import trio

from hal.backends.netio import CrossCheck, PayloadMeter, SocketMeter
from hal.core import wire
from hal.core.bandwidth import DOWN, UP, BandwidthShaper
from hal.core.bucket import TokenBucket
from hal.core.civil import parse_window

STATE_FILE = "bandwidth.json"
UNLIMITED = 10**12  # bytes/s: "no limit" without special cases in the shaper
FSYNC_EVERY_S = 300.0
SWEEP_S = 0.5  # with a cap: idle connections' counts, closed ones, window sizes
SWEEP_UNCAPPED_S = 2.0  # without: only the counts
CROSS_CHECK_S = 30.0  # interfaces vs count over this long at least (shorter is noise: counts lag)


def mbit(rate):
    return int(rate * 125_000) if rate > 0 else UNLIMITED


def local_offset_ms(now_ms):
    return int(time.localtime(now_ms / 1000).tm_gmtoff) * 1000


class PeerBuckets:
    """One (up, down) bucket pair per remote address, so one greedy peer cannot take the whole
    link; least recently seen dropped beyond `max_peers`."""

    def __init__(self, rate, burst_s, clock_ms, max_peers=4096):
        self.rate = rate
        self.burst = max(rate * burst_s, 16384)
        self.clock_ms = clock_ms
        self.max_peers = max_peers
        self._pairs = OrderedDict()

    def pair(self, addr):
        p = self._pairs.get(addr)
        if p is None:
            now = self.clock_ms()
            p = {UP: TokenBucket(self.rate, self.burst, now),
                 DOWN: TokenBucket(self.rate, self.burst, now)}
            self._pairs[addr] = p
            if len(self._pairs) > self.max_peers:
                self._pairs.popitem(last=False)
        else:
            self._pairs.move_to_end(addr)
        return p


def reads_held(stream) -> float:
    """Seconds the shaper has held `stream`'s reads so far (0 for a stream it does not shape):
    what the listener leaves out of a frame's deadline."""
    if not isinstance(stream, ShapedStream):
        return 0.0
    since = stream.held_since
    return stream.held_s + (trio.current_time() - since if since is not None else 0.0)


class ShapedStream(trio.abc.Stream):
    """A trio Stream that asks the shaper (and its peer's buckets) before sending, waits off
    what it received before reading more, and counts the connection's wire bytes as the kernel
    reports them (`meter`: hal.backends.netio.SocketMeter, or PayloadMeter for non-sockets).

    With `shaping` false it only counts. `live`, when given, holds the streams whose figures
    the service sweeps (a socket's counts move without the node reading: ACKs, closes)."""

    def __init__(self, inner, shaper, clock_ms, peer=None, meter=None, shaping=True,
                 live=None):
        self.inner = inner
        self.shaper = shaper
        self.clock_ms = clock_ms
        self.peer = peer  # {UP: TokenBucket, DOWN: TokenBucket} or None
        self.meter = meter if meter is not None else PayloadMeter()
        self.shaping = shaping
        self.live = live
        self.charged = {UP: 0, DOWN: 0}  # wire bytes of this connection counted so far
        self.reserved = (0, 0)  # (up, down) of its open window held back in the cap
        self.finished = False
        # Time the node itself did not read (trio clock), for a listener's slow-peer deadlines:
        # a frame that arrives slowly because the cap is paced is not the peer's fault.
        self.held_s = 0.0
        self.held_since = None  # when the hold in progress began, or None
        self._sync_each_op = shaping or not self.meter.syscalls
        if live is not None:
            live.add(self)

    async def send_all(self, data):
        view = memoryview(data)
        while view:
            n = await self._wait_to_send(len(view)) if self.shaping else len(view)
            await self.inner.send_all(view[:n])
            self.meter.sent(n)
            view = view[n:]
        if self._sync_each_op:
            self.sync()

    async def _wait_to_send(self, want):
        """Wait for the turn of the next chunk's wire bytes (its address's share, then the
        link and the cap, each first come first served); returns its payload size."""
        m = self.meter
        most = self.shaper.max_chunk(UP)
        if self.peer is not None and self.peer[UP].burst < most:
            most = int(self.peer[UP].burst)
        n = min(want, max(1, wire.payload_fitting(most, m.mss, m.hdr)))
        cost = min(most, wire.estimate_bytes(n, m.mss, m.hdr))
        if self.peer is not None:  # this address's turn first, then the link's and the cap's
            now = self.clock_ms()
            self.peer[UP].force(cost, now)
            await self._sleep_ms(self.peer[UP].wait_ms(0, now))
        while True:
            claimed, wait = self.shaper.claim(UP, cost, self.clock_ms())
            if claimed:
                break
            await self._sleep_ms(wait)
        self.charged[UP] += cost  # (counted now: `finish` refunds it if it never goes out)
        await self._sleep_ms(wait)
        return n

    @staticmethod
    async def _sleep_ms(ms):
        if ms > 0:
            await trio.sleep(ms / 1000)

    async def wait_send_all_might_not_block(self):
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        while self.shaping:
            now = self.clock_ms()
            wait = self.shaper.debt_ms(DOWN, now)
            if self.peer is not None:
                wait = max(wait, self.peer[DOWN].wait_ms(0, now))
            if wait <= 0:
                break
            self.held_since = trio.current_time()
            try:
                await trio.sleep(wait / 1000)
            finally:
                self.held_s += trio.current_time() - self.held_since
                self.held_since = None
        data = await self.inner.receive_some(max_bytes)
        self.meter.received(len(data))
        if self._sync_each_op:
            self.sync()
        return data

    def sync(self):
        """Count what the kernel says this connection carried since the last sync (bytes sent
        were counted in advance by estimate: only what exceeds it is added) and refresh its
        window reserve."""
        if self.finished or not self.meter.read():
            return  # closed: `finish` counts the rest
        self._count(self.meter.up, self.meter.down)
        if self.shaper.budget.cap_bytes:
            m = self.meter
            r = wire.window_reserve(m.window, m.rcv_mss, m.hdr)
            self.shaper.add_reserve(r[0] - self.reserved[0], r[1] - self.reserved[1])
            self.reserved = r

    def _count(self, up, down):
        now = self.clock_ms()
        for d, real in ((UP, up), (DOWN, down)):
            extra = real - self.charged[d]
            if extra > 0:
                self.shaper.account(d, extra, now)
                if self.peer is not None:
                    self.peer[d].force(extra, now)
                self.charged[d] = real

    def finish(self):
        """The socket is closed: add the close's packets, give back estimates the kernel never
        sent, release the window reserve."""
        if self.finished:
            return
        self.finished = True
        m = self.meter
        up_close, down_close = wire.close_bytes(m.hdr) if m.hdr else (0, 0)
        up, down = m.up + up_close, m.down + down_close
        self._count(up, down)
        self.shaper.refund(UP, self.charged[UP] - up)
        self.charged[UP] = up
        self.shaper.add_reserve(-self.reserved[0], -self.reserved[1])
        self.reserved = (0, 0)
        if self.live is not None:
            self.live.discard(self)

    async def aclose(self):
        self.sync()  # the last figures, while the socket can still be read
        try:
            await self.inner.aclose()
        finally:
            self.finish()


class LocalStream(trio.abc.Stream):
    """Operator traffic (the box talking to itself, or an unmetered network): passed through
    untouched, its payload counted in `totals` apart from the metered line."""

    def __init__(self, inner, totals):
        self.inner = inner
        self.totals = totals

    async def send_all(self, data):
        await self.inner.send_all(data)
        self.totals[UP] += len(data)

    async def wait_send_all_might_not_block(self):
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        data = await self.inner.receive_some(max_bytes)
        self.totals[DOWN] += len(data)
        return data

    async def aclose(self):
        await self.inner.aclose()


def _ip(text):
    """An address as getpeername gives it -> ip_address (IPv4-mapped as IPv4), or None."""
    try:
        a = ipaddress.ip_address(text.split("%", 1)[0])
    except (ValueError, AttributeError):
        return None
    mapped = getattr(a, "ipv4_mapped", None)
    return mapped if mapped is not None else a


def parse_networks(texts):
    """Config strings -> networks (ValueError names the bad one)."""
    nets = []
    for t in texts:
        try:
            nets.append(ipaddress.ip_network(t, strict=False))
        except (ValueError, TypeError):
            raise ValueError(f"{t!r} is not a network like \"192.168.1.0/24\"") from None
    return nets


class Unmetered:
    """Which connections are operator traffic: peer in one of `networks`, or the peer is the
    box itself (its address is the connection's own local address, as when the box connects
    to one of its own addresses: the kernel routes that over loopback)."""

    def __init__(self, networks):
        self.networks = parse_networks(networks)

    def __call__(self, peer, local=None):
        p = _ip(peer)
        if p is None:
            return False
        if local is not None and _ip(local) == p:
            return True
        return any(p.version == n.version and p in n for n in self.networks)


class BandwidthService:
    """Counts every connection's wire bytes and, when a limit or cap is configured, shapes them.

    Surface for the node: `wrap(stream)` (for every TCP stream accepted or opened, below TLS;
    it decides itself from the stream's addresses whether the connection is metered), `run`
    (service), `pacing()`, `info()`, `set_scale()`, `save()`, `stopped`."""

    def __init__(self, cfg, data_dir, clock_ms, log, net_counters=None):
        self.cfg = cfg
        self.path = os.path.join(data_dir, STATE_FILE)
        self.clock_ms = clock_ms
        self.log = log
        self.net = net_counters
        self.enabled = bool(cfg.up_mbit or cfg.down_mbit or cfg.monthly_cap_gb
                            or cfg.per_peer_mbit or cfg.quiet_hours)  # counting always runs
        self.unmetered = Unmetered(cfg.unmetered_networks)
        self._live = set()  # metered socket streams not yet closed
        self.peers = (PeerBuckets(mbit(cfg.per_peer_mbit), cfg.burst_s, clock_ms)
                      if cfg.per_peer_mbit else None)
        self.stopped = False  # set by a factory reset: never write into a wiped data dir
        self.line_ratio = None
        self._cross = CrossCheck()
        now = clock_ms()
        saved = self._load()
        self.shaper = BandwidthShaper(
            now, up_rate=mbit(cfg.up_mbit), down_rate=mbit(cfg.down_mbit), burst_s=cfg.burst_s,
            monthly_cap_bytes=int(cfg.monthly_cap_gb * 10**9), billing_day=cfg.billing_day,
            quiet_windows=[parse_window(w) for w in cfg.quiet_hours],
            quiet_rate=mbit(cfg.quiet_mbit), cap_directions=cfg.cap_counts,
            offset_ms=local_offset_ms(now), used_bytes=saved.get("used_bytes", 0),
            cycle_day=saved.get("cycle_day"), cycle_ms=int(cfg.cycle_s * 1000))
        self.shaper.totals[UP] = saved.get("up_bytes", 0)
        self.shaper.totals[DOWN] = saved.get("down_bytes", 0)
        self.local = {UP: saved.get("local_up_bytes", 0), DOWN: saved.get("local_down_bytes", 0)}
        self._saved = self._snapshot()
        self._last_fsync = self._last_cross = time.monotonic()

    def _load(self):
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self.log.warning("bandwidth_state_unreadable", path=self.path, error=str(e)[:200],
                             action="counting this cycle from 0")
            return {}
        ok = isinstance(data, dict) and all(
            type(data.get(k, 0)) is int and data.get(k, 0) >= 0
            for k in ("used_bytes", "up_bytes", "down_bytes", "local_up_bytes",
                      "local_down_bytes"))
        if not ok or not isinstance(data.get("cycle_day"), int | None):
            self.log.warning("bandwidth_state_invalid", path=self.path,
                             action="counting this cycle from 0")
            return {}
        return data

    def wrap(self, stream):
        """TCP stream -> the stream to put TLS on, for every connection the node accepts or
        opens. Operator traffic gets a LocalStream (never shaped, never counted against the
        cap); every other connection a ShapedStream that counts its wire bytes and shapes it
        when limits are configured."""
        sock = getattr(stream, "socket", None)
        peer = local = None
        try:
            peer = sock.getpeername()[0]
            local = sock.getsockname()[0]
        except (OSError, AttributeError, TypeError, IndexError):
            pass
        if peer is not None and self.unmetered(peer, local):
            return LocalStream(stream, self.local)
        pair = self.peers.pair(peer or "?") if self.peers is not None else None
        if sock is not None and getattr(sock, "type", None) == socket.SOCK_STREAM:
            ip = _ip(peer) if peer is not None else None
            meter = SocketMeter(sock, ipv6=ip is not None and ip.version == 6)
            if self.shaper.budget.cap_bytes:
                meter.set_receive_buffer(self._window_target(len(self._live) + 1))
            live = self._live
        else:
            meter, live = PayloadMeter(), None
        shaped = ShapedStream(stream, self.shaper, self.clock_ms, pair, meter,
                              shaping=self.enabled, live=live)
        shaped.sync()  # the handshake, and the window the kernel has already promised
        return shaped

    def _window_target(self, connections):
        sh = self.shaper
        headroom = sh.budget.remaining() - sh.reserved()
        return wire.receive_buffer(sh.pace.burst, headroom if headroom > 0 else 0, connections)

    def sweep(self):
        """Count idle and closed connections (the kernel's figures move without the node
        reading) and resize the receive windows to what is left of the cap."""
        for s in list(self._live):
            if s.meter.closed():
                s.finish()
            else:
                s.sync()
        if self.shaper.budget.cap_bytes and self._live:
            target = self._window_target(len(self._live))
            for s in self._live:
                s.meter.set_receive_buffer(target)

    def set_scale(self, scale):
        if scale != self.shaper.scale:
            self.shaper.set_scale(scale, self.clock_ms())

    def pacing(self):
        return self.enabled and self.shaper.pacing(self.clock_ms())

    def _snapshot(self):
        snap = self.shaper.snapshot()
        snap["local_up_bytes"] = self.local[UP]
        snap["local_down_bytes"] = self.local[DOWN]
        return snap

    def save(self, fsync=False):
        snap = self._snapshot()
        if self.stopped or (snap == self._saved and not fsync):
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(snap, f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._saved = snap

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            async with trio.open_nursery() as n:
                n.start_soon(self._sweep_loop)
                await self._persist_loop()
        finally:
            try:
                self.save(fsync=True)
            except OSError:
                pass

    async def _sweep_loop(self):
        interval = SWEEP_S if self.shaper.budget.cap_bytes else SWEEP_UNCAPPED_S
        while True:
            await trio.sleep(interval)
            self.sweep()

    async def _persist_loop(self):
        self._cross_check()  # the interfaces' starting point
        while True:
            await trio.sleep(self.cfg.persist_interval)
            now = self.clock_ms()
            self.shaper.set_offset(local_offset_ms(now), now)
            due = time.monotonic() - self._last_fsync >= FSYNC_EVERY_S
            try:
                self.save(fsync=due)
                if due:
                    self._last_fsync = time.monotonic()
            except OSError as e:
                self.log.warning("bandwidth_state_not_saved", path=self.path,
                                 error=e.strerror or str(e))
            if time.monotonic() - self._last_cross >= CROSS_CHECK_S:
                self._last_cross = time.monotonic()
                self._cross_check()

    def _cross_check(self):
        if self.net is None:
            return
        totals = self.net.totals()
        if totals is None:
            return
        counted = self.shaper.totals[UP] + self.shaper.totals[DOWN]
        ratio = self._cross.update(counted, totals[0] + totals[1])
        if ratio is not None:
            self.line_ratio = round(ratio, 3)

    def info(self):
        st = self.shaper.status(self.clock_ms())
        return {"enabled": self.enabled, "used_bytes": st["used_bytes"],
                "cap_bytes": st["cap_bytes"], "cycle_end_ms": st["cycle_end_ms"],
                "paced_rate": st["paced_rate"], "pacing": st["pacing"] and self.enabled,
                "quiet": st["quiet"], "scale": st["scale"],
                "reserve_bytes": st["reserve_bytes"],
                "up_bytes": self.shaper.totals[UP], "down_bytes": self.shaper.totals[DOWN],
                "local_up_bytes": self.local[UP], "local_down_bytes": self.local[DOWN],
                "interfaces_per_counted_byte": self.line_ratio}
