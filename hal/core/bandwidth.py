"""Bandwidth shaping: per-direction token buckets, a paced monthly cap, quiet hours.

Why pacing: a home uplink with a monthly cap must not be exhausted on day 20 and then cut off;
the node re-spreads whatever allowance is left over whatever time is left, so a quiet first
week leaves more for later and a busy week never borrows from the rest of the month.
"""

from hal.core import civil
from hal.core.bucket import TokenBucket

UP = "up"
DOWN = "down"
DIRECTIONS = (UP, DOWN)
RESERVE_RECHECK_MS = 250  # how often a reader held back by the window reserve looks again


class MonthlyBudget:
    """Bytes used in the current billing cycle against `cap_bytes` (0 = no cap).

    The cycle is the month from `billing_day` (local time), or with `cycle_ms` > 0 a fixed
    length aligned to the Unix epoch (tests; plans metered per fixed period). `cycle_day`
    names the current cycle: its first local day, or its start in ms for a fixed length."""

    def __init__(self, cap_bytes, billing_day, now_ms, offset_ms=0, used_bytes=0,
                 cycle_day=None, cycle_ms=0):
        if cap_bytes < 0:
            raise ValueError("monthly cap must be >= 0 bytes (0 = no cap)")
        if cycle_ms < 0:
            raise ValueError("cycle length must be >= 0 ms (0 = monthly)")
        civil.billing_cycle_days(0, billing_day)  # validates billing_day
        self.cap_bytes = cap_bytes
        self.billing_day = billing_day
        self.cycle_ms = cycle_ms
        self.used_bytes = used_bytes
        self.cycle_day = cycle_day
        self.roll(now_ms, offset_ms)

    def roll(self, now_ms, offset_ms=0):
        """Start a new cycle if `now_ms` is past this one; True when it did."""
        if self.cycle_ms:
            start = now_ms - now_ms % self.cycle_ms
            self.start_ms, self.end_ms = start, start + self.cycle_ms
        else:
            start, end = civil.billing_cycle_days(civil.local_day(now_ms, offset_ms),
                                                  self.billing_day)
            self.start_ms = civil.day_start_ms(start, offset_ms)
            self.end_ms = civil.day_start_ms(end, offset_ms)
        if start != self.cycle_day:
            self.cycle_day = start
            self.used_bytes = 0
            return True
        return False

    def remaining(self):
        if self.cap_bytes == 0:
            return -1
        r = self.cap_bytes - self.used_bytes
        return r if r > 0 else 0

    def paced_rate(self, now_ms, owed=0):
        """Bytes/s that would spend exactly the remaining allowance by the cycle's end, after
        repaying `owed` (a pacing bucket's debt: bytes already counted in `used_bytes`)."""
        if self.cap_bytes == 0:
            return -1
        left_ms = self.end_ms - now_ms
        if left_ms < 1000:
            left_ms = 1000
        return (self.remaining() + owed) * 1000.0 / left_ms


class BandwidthShaper:
    """Sans-IO shaper. A sender `claim`s its bytes and learns how long to wait before they go
    out; a reader `account`s what arrived and waits out `debt_ms` before reading again.

    Rates are bytes/s. `burst_s` sizes every bucket as that many seconds of its rate. The cap
    counts the directions in `cap_directions` ("both", "up" or "down"). The paced rate is
    recomputed every `refresh_ms`, and at once when quiet hours begin or end.

    `reserve` (set by the caller, see hal.core.wire.window_reserve) is what peers may still
    send without the node reading: receive windows already promised. The cap keeps that much
    back, so nothing is read or sent once used + reserve reaches it, and what the kernel then
    still accepts stays inside the cap.
    """

    def __init__(self, now_ms, up_rate=1250000, down_rate=1250000, burst_s=1.0,
                 monthly_cap_bytes=0, billing_day=1, quiet_windows=(), quiet_rate=125000,
                 cap_directions="both", offset_ms=0, used_bytes=0, cycle_day=None,
                 refresh_ms=60000, min_chunk=16384, cycle_ms=0):
        if up_rate <= 0 or down_rate <= 0 or burst_s <= 0:
            raise ValueError("bandwidth rates and burst must be > 0")
        if cap_directions not in ("both", UP, DOWN):
            raise ValueError("cap_directions must be 'both', 'up' or 'down', got %r"
                             % (cap_directions,))
        self.base_rates = {UP: up_rate, DOWN: down_rate}
        self.burst_s = burst_s
        self.quiet_windows = tuple(quiet_windows)
        self.quiet_rate = quiet_rate
        self.cap_directions = cap_directions
        self.offset_ms = offset_ms
        if cycle_ms and refresh_ms > cycle_ms // 20:  # a short cycle re-paces as often
            refresh_ms = cycle_ms // 20 if cycle_ms >= 2000 else 100
        self.refresh_ms = refresh_ms
        self.min_chunk = min_chunk
        self.scale = 1.0
        self.budget = MonthlyBudget(monthly_cap_bytes, billing_day, now_ms, offset_ms,
                                    used_bytes, cycle_day, cycle_ms)
        self.totals = {UP: 0, DOWN: 0}
        self.reserve = {UP: 0, DOWN: 0}
        self.links = {}
        for d in DIRECTIONS:
            self.links[d] = TokenBucket(self.base_rates[d], self._burst(self.base_rates[d]),
                                        now_ms)
        self.pace = None
        self.quiet = None
        self.paced_until_ms = None  # last time the cap (not the link) made someone wait
        self._next_refresh = None
        self.refresh(now_ms)

    def _burst(self, rate):
        b = rate * self.burst_s
        return b if b >= self.min_chunk else self.min_chunk

    def counted(self, direction):
        return self.cap_directions == "both" or self.cap_directions == direction

    def add_reserve(self, up, down):
        """Change the reserve by (up, down) bytes (a connection's window moved, or it closed)."""
        self.reserve[UP] += up
        self.reserve[DOWN] += down

    def reserved(self):
        """Reserve bytes in the directions the cap counts."""
        r = 0
        for d in DIRECTIONS:
            if self.counted(d) and self.reserve[d] > 0:
                r += self.reserve[d]
        return r

    def _cap_wait(self, n, now_ms):
        """ms before `n` more counted bytes fit the cap: 0 if they fit now; the cycle's end if
        the cap itself is spent; a short recheck if only the reserve is in the way (windows
        close and connections end, which frees it)."""
        b = self.budget
        if n == 0:  # reading: any byte read is one more counted
            spent = b.used_bytes >= b.cap_bytes
            held = b.used_bytes + self.reserved() >= b.cap_bytes
        else:
            spent = b.used_bytes + n > b.cap_bytes
            held = b.used_bytes + self.reserved() + n > b.cap_bytes
        if spent:
            return b.end_ms - now_ms
        if held:
            w = b.end_ms - now_ms
            return w if w < RESERVE_RECHECK_MS else RESERVE_RECHECK_MS
        return 0

    def is_quiet(self, now_ms):
        m = civil.minute_of_day(now_ms, self.offset_ms)
        for w in self.quiet_windows:
            if civil.in_window(m, w):
                return True
        return False

    def set_scale(self, scale, now_ms):
        """Multiply link rates by `scale` (thermal governor: hot -> e.g. 0.25)."""
        if scale <= 0:
            raise ValueError("bandwidth scale must be > 0")
        self.scale = scale
        self.refresh(now_ms)

    def set_offset(self, offset_ms, now_ms):
        """Local time offset changed (DST): cycle edges and quiet hours follow it."""
        self.offset_ms = offset_ms
        self.refresh(now_ms)

    def refresh(self, now_ms):
        """Recompute link rates and the paced rate (roll the cycle if it ended)."""
        self.budget.roll(now_ms, self.offset_ms)
        self.quiet = self.is_quiet(now_ms)
        for d in DIRECTIONS:
            rate = self.base_rates[d]
            if self.quiet and self.quiet_rate < rate:
                rate = self.quiet_rate
            rate = rate * self.scale
            self.links[d].set_rate(rate, self._burst(rate), now_ms)
        owed = 0  # bytes that arrived ahead of the pace: in used_bytes and owed to the bucket
        if self.pace is not None:
            level = self.pace.level(now_ms)
            if level < 0:
                owed = -level
        paced = self.budget.paced_rate(now_ms, owed)
        if paced < 0:
            self.pace = None
        else:
            burst = paced * self.burst_s
            if burst < self.min_chunk:
                burst = self.min_chunk
            if self.pace is None:
                self.pace = TokenBucket(paced, burst, now_ms)
            else:
                self.pace.set_rate(paced, burst, now_ms)
        self._next_refresh = now_ms + self.refresh_ms

    def _maybe_refresh(self, now_ms):
        if (now_ms >= self._next_refresh or now_ms >= self.budget.end_ms
                or self.is_quiet(now_ms) != self.quiet):
            self.refresh(now_ms)

    def claim(self, direction, n, now_ms):
        """Count `n` bytes to send, in turn: (True, ms) when they are counted now and go out
        after `ms` (0: at once); (False, ms) when the cap has no room for them (nothing
        counted; ask again after `ms`, until the next cycle when the cap is spent).

        Why in turn, not all-or-nothing: waiting until the buckets hold `n` lets a steady run
        of small sends and reads (reads pay afterwards) keep the level below a larger chunk for
        ever. Under a paced cap one busy client starved every new connection's TLS handshake
        that way. A claim leaves its debt in the buckets at once, so whoever comes later,
        sender or reader, waits behind it: first come, first served, at the same rate."""
        self._maybe_refresh(now_ms)
        capped = self.counted(direction) and self.budget.cap_bytes
        if capped:
            cw = self._cap_wait(n, now_ms)
            if cw > 0:
                self.paced_until_ms = now_ms + self.refresh_ms
                return False, cw
        self._spend(direction, n, now_ms)
        w = self.links[direction].wait_ms(0, now_ms)
        if capped:
            pw = self.pace.wait_ms(0, now_ms)
            if pw > 0:
                self.paced_until_ms = now_ms + self.refresh_ms
            if pw > w:
                w = pw
        return True, w

    def account(self, direction, n, now_ms):
        """Bytes that moved without asking (already received): counted, owed by the buckets."""
        self._maybe_refresh(now_ms)
        self._spend(direction, n, now_ms)

    def debt_ms(self, direction, now_ms):
        """ms until bytes `account`ed in `direction` are paid off (0 = nothing owed); until the
        next cycle when they took the cap, a short recheck while the window reserve fills what
        is left of it. Readers wait this long before reading more, which is how a receiver
        slows its sender (TCP backpressure)."""
        self._maybe_refresh(now_ms)
        w = self.links[direction].wait_ms(0, now_ms)
        if self.counted(direction) and self.budget.cap_bytes:
            cw = self._cap_wait(0, now_ms)
            if cw > 0:
                self.paced_until_ms = now_ms + self.refresh_ms
                return cw
            pw = self.pace.wait_ms(0, now_ms)
            if pw > 0:
                self.paced_until_ms = now_ms + self.refresh_ms
            if pw > w:
                w = pw
        return w

    def refund(self, direction, n):
        """Give back bytes counted in advance that never went out (an estimate above what the
        kernel reported). The buckets keep the debt: only the counts are corrected."""
        if n <= 0:
            return
        if n > self.totals[direction]:
            n = self.totals[direction]
        self.totals[direction] -= n
        if self.counted(direction):
            self.budget.used_bytes -= n if n < self.budget.used_bytes else self.budget.used_bytes

    def _spend(self, direction, n, now_ms):
        self.links[direction].force(n, now_ms)
        self.totals[direction] += n
        if self.counted(direction):
            self.budget.used_bytes += n
            if self.pace is not None:
                self.pace.force(n, now_ms)

    def max_chunk(self, direction):
        b = self.links[direction].burst
        if self.pace is not None and self.counted(direction) and self.pace.burst < b:
            b = self.pace.burst
        return int(b)

    def pacing(self, now_ms):
        """True while the monthly cap, not the link speed, is holding traffic back."""
        return self.paced_until_ms is not None and now_ms < self.paced_until_ms

    def status(self, now_ms):
        self._maybe_refresh(now_ms)
        b = self.budget
        return {
            "used_bytes": b.used_bytes,
            "cap_bytes": b.cap_bytes,
            "cycle_start_ms": b.start_ms,
            "cycle_end_ms": b.end_ms,
            "paced_rate": int(self.pace.rate) if self.pace is not None else -1,
            "reserve_bytes": self.reserved(),
            "up_rate": int(self.links[UP].rate),
            "down_rate": int(self.links[DOWN].rate),
            "quiet": self.quiet,
            "pacing": self.pacing(now_ms),
            "scale": self.scale,
        }

    def snapshot(self):
        """What must survive a restart (JSON-able); feed back as used_bytes/cycle_day."""
        return {"cycle_day": self.budget.cycle_day, "used_bytes": self.budget.used_bytes,
                "up_bytes": self.totals[UP], "down_bytes": self.totals[DOWN]}
