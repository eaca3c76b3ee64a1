"""The bandwidth shaper applied to the node's links, and its persistent monthly accounting.

Why below TLS: the wrapper sits between the TCP socket and `trio.SSLStream`, so it counts what
the line carries (TLS records included), which is what the ISP's cap counts too. Sending waits
for tokens before writing; receiving accounts what arrived and then waits off the debt before
the next read, so TCP backpressure slows the sender instead of the node dropping anything.

Accounting survives restarts and `kill -9`: the cycle's byte count is written to
`<data_dir>/bandwidth.json` every `persist_interval` seconds (atomic rename; fsync only every
few minutes to spare the SD card - page cache survives a killed process, not a power cut).
"""

import json
import os
import time
from collections import OrderedDict

import trio

from hal.backends.netio import CrossCheck
from hal.core.bandwidth import DOWN, UP, BandwidthShaper
from hal.core.bucket import TokenBucket
from hal.core.civil import parse_window

STATE_FILE = "bandwidth.json"
UNLIMITED = 10**12  # bytes/s: "no limit" without special cases in the shaper
FSYNC_EVERY_S = 300.0


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


class ShapedStream(trio.abc.Stream):
    """A trio Stream that asks the shaper (and its peer's buckets) before sending and pays for
    what it received."""

    def __init__(self, inner, shaper, clock_ms, peer=None):
        self.inner = inner
        self.shaper = shaper
        self.clock_ms = clock_ms
        self.peer = peer  # {UP: TokenBucket, DOWN: TokenBucket} or None

    async def send_all(self, data):
        view = memoryview(data)
        while view:
            n = min(len(view), self.shaper.max_chunk(UP))
            if self.peer is not None:
                n = min(n, int(self.peer[UP].burst))
            while True:
                now = self.clock_ms()
                wait = self.peer[UP].wait_ms(n, now) if self.peer is not None else 0
                if wait == 0:
                    wait = self.shaper.take(UP, n, now)
                if wait == 0:
                    break
                await trio.sleep(wait / 1000)
            if self.peer is not None:
                self.peer[UP].force(n, self.clock_ms())
            await self.inner.send_all(view[:n])
            view = view[n:]

    async def wait_send_all_might_not_block(self):
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes=None):
        while True:
            now = self.clock_ms()
            wait = self.shaper.debt_ms(DOWN, now)
            if self.peer is not None:
                wait = max(wait, self.peer[DOWN].wait_ms(0, now))
            if wait <= 0:
                break
            await trio.sleep(wait / 1000)
        data = await self.inner.receive_some(max_bytes)
        if data:
            now = self.clock_ms()
            self.shaper.account(DOWN, len(data), now)
            if self.peer is not None:
                self.peer[DOWN].force(len(data), now)
        return data

    async def aclose(self):
        await self.inner.aclose()


class BandwidthService:
    def __init__(self, cfg, data_dir, clock_ms, log, net_counters=None):
        self.cfg = cfg
        self.path = os.path.join(data_dir, STATE_FILE)
        self.clock_ms = clock_ms
        self.log = log
        self.net = net_counters
        self.enabled = bool(cfg.up_mbit or cfg.down_mbit or cfg.monthly_cap_gb
                            or cfg.per_peer_mbit)
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
            cycle_day=saved.get("cycle_day"))
        self.shaper.totals[UP] = saved.get("up_bytes", 0)
        self.shaper.totals[DOWN] = saved.get("down_bytes", 0)
        self._saved = self.shaper.snapshot()
        self._last_fsync = time.monotonic()

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
            for k in ("used_bytes", "up_bytes", "down_bytes"))
        if not ok or not isinstance(data.get("cycle_day"), int | None):
            self.log.warning("bandwidth_state_invalid", path=self.path,
                             action="counting this cycle from 0")
            return {}
        return data

    def wrap(self, stream):
        """For the listener's `wrap_stream` seam (only installed when shaping is enabled)."""
        peer = None
        if self.peers is not None:
            try:
                addr = stream.socket.getpeername()[0]
            except (OSError, AttributeError):
                addr = "?"
            peer = self.peers.pair(addr)
        return ShapedStream(stream, self.shaper, self.clock_ms, peer)

    def set_scale(self, scale):
        if scale != self.shaper.scale:
            self.shaper.set_scale(scale, self.clock_ms())

    def pacing(self):
        return self.enabled and self.shaper.pacing(self.clock_ms())

    def save(self, fsync=False):
        snap = self.shaper.snapshot()
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
                self._cross_check()
        finally:
            try:
                self.save(fsync=True)
            except OSError:
                pass

    def _cross_check(self):
        if self.net is None or not self.enabled:
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
                "up_bytes": self.shaper.totals[UP], "down_bytes": self.shaper.totals[DOWN],
                "interfaces_per_counted_byte": self.line_ratio}
