"""Storage policy: message quota, free-space floor, eviction order, daily SD write budget.

Why a write budget: SD cards wear out by bytes written, and a relay under load can write far
more than a home needs. A daily budget (counted from the card's own sector counter when the
backend can read it) turns "card dies in a year" into "stores are refused until midnight".
"""

from hal.core import civil

OK = "ok"
EVICT = "evict"
REFUSE = "refuse"


class Admission:
    """Decision for one store: `verdict` OK / EVICT (free `need_bytes` first) / REFUSE."""

    def __init__(self, verdict, need_bytes=0, reason=""):
        self.verdict = verdict
        self.need_bytes = need_bytes
        self.reason = reason

    def __repr__(self):
        return "Admission(%r, %r, %r)" % (self.verdict, self.need_bytes, self.reason)


class WriteBudget:
    """Bytes written per local day against `budget_bytes` (0 = unlimited).

    Feed it either increments (`add`) or a monotonically growing device counter
    (`observe_total`, e.g. sectors written x 512); a counter going backwards (reboot, wrap) is
    taken as a new baseline, never as negative writes.
    """

    def __init__(self, budget_bytes, now_ms, offset_ms=0, written=0, day=None):
        if budget_bytes < 0:
            raise ValueError("daily write budget must be >= 0 bytes (0 = unlimited)")
        self.budget_bytes = budget_bytes
        self.offset_ms = offset_ms
        self.written = written
        self.day = day
        self._last_total = None
        self._roll(now_ms)

    def _roll(self, now_ms):
        d = civil.local_day(now_ms, self.offset_ms)
        if d != self.day:
            self.day = d
            self.written = 0

    def add(self, n, now_ms):
        self._roll(now_ms)
        if n > 0:
            self.written += n

    def observe_total(self, total_bytes, now_ms):
        if self._last_total is not None and total_bytes >= self._last_total:
            self.add(total_bytes - self._last_total, now_ms)
        else:
            self._roll(now_ms)
        self._last_total = total_bytes

    def written_today(self, now_ms):
        self._roll(now_ms)
        return self.written

    def allows(self, n, now_ms):
        self._roll(now_ms)
        return self.budget_bytes == 0 or self.written + n <= self.budget_bytes

    def spent(self, now_ms):
        self._roll(now_ms)
        return self.budget_bytes != 0 and self.written >= self.budget_bytes

    def resets_at_ms(self, now_ms):
        self._roll(now_ms)
        return civil.day_start_ms(self.day + 1, self.offset_ms)


class StoragePolicy:
    """Quota and free-space floor (bytes; 0 disables either) plus the write budget."""

    def __init__(self, quota_bytes, free_floor_bytes, write_budget):
        if quota_bytes < 0 or free_floor_bytes < 0:
            raise ValueError("storage quota and free floor must be >= 0 bytes")
        self.quota_bytes = quota_bytes
        self.free_floor_bytes = free_floor_bytes
        self.write_budget = write_budget

    def admit(self, size, used_bytes, free_bytes, now_ms):
        """May a message of `size` bytes be stored, given messages use `used_bytes` and the
        filesystem has `free_bytes` free (None when unknown)?"""
        if not self.write_budget.allows(size, now_ms):
            return Admission(REFUSE, 0, "daily SD write budget spent (%d of %d bytes); stores "
                             "resume at local midnight" % (self.write_budget.written,
                                                           self.write_budget.budget_bytes))
        need = 0
        if self.quota_bytes and used_bytes + size > self.quota_bytes:
            need = used_bytes + size - self.quota_bytes
        if self.free_floor_bytes and free_bytes is not None:
            short = self.free_floor_bytes - (free_bytes - size)
            if short > need:
                need = short
        if need <= 0:
            return Admission(OK)
        if self.quota_bytes and size > self.quota_bytes:
            return Admission(REFUSE, need, "message of %d bytes is larger than the whole "
                             "storage quota (%d bytes)" % (size, self.quota_bytes))
        if need > used_bytes:
            return Admission(REFUSE, need, "disk nearly full: %d bytes free, floor is %d; "
                             "evicting every message would not make room"
                             % (free_bytes, self.free_floor_bytes))
        return Admission(EVICT, need, "over quota or free-space floor by %d bytes" % need)

    def over_limits(self, used_bytes, free_bytes):
        """Bytes to evict now to get back under quota and above the floor (0 if none)."""
        need = 0
        if self.quota_bytes and used_bytes > self.quota_bytes:
            need = used_bytes - self.quota_bytes
        if self.free_floor_bytes and free_bytes is not None:
            short = self.free_floor_bytes - free_bytes
            if short > need:
                need = short
        return need


def eviction_plan(messages, need_bytes, now_ms):
    """Which messages to delete: every expired one, then soonest-to-expire until `need_bytes`.

    `messages` is an iterable of (key, size, expiry_ms). Returns (keys in deletion order,
    bytes freed). Ties break on key so the order never depends on sort stability (MicroPython's
    sort is not stable) or on dict order.
    """
    ordered = sorted(messages, key=lambda m: (m[2], m[0]))
    keys = []
    freed = 0
    for key, size, expiry in ordered:
        if expiry <= now_ms or freed < need_bytes:
            keys.append(key)
            freed += size
        else:
            break
    return keys, freed
