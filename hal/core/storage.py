"""Storage policy: message quota, free-space floor, a hard minimum of free space, and the daily
SD write budget. It decides *how much* to evict; which messages go is the store's eviction order
(expired first, then soonest to expire), kept in SQL next to the index it walks.

Why a write budget: SD cards wear out by bytes written, and a relay under load can write far
more than a home needs. A daily budget (counted from the card's own sector counter when the
backend can read it) turns "card dies in a year" into "stores are refused until midnight".

Free space is counted two ways. `free_bytes` is what the file system has left (the caller
subtracts what the store's space reserve would take back). `reusable_bytes` is free pages inside
the database file: deleting messages does not shrink the file, it frees pages that new messages
reuse, so the floor is met by `free + reusable`. Counting only the file system's figure would
evict again every round (the free space never grows) until the store is empty. Below
`min_free_bytes` on the file system itself the disk counts as full: every store is refused,
whatever could be evicted, because SQLite then cannot even grow its WAL.
"""

from hal.core import civil

OK = "ok"
MIN_FREE_BYTES = 1 << 20
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

    def __init__(self, quota_bytes, free_floor_bytes, write_budget, min_free_bytes=MIN_FREE_BYTES):
        if quota_bytes < 0 or free_floor_bytes < 0 or min_free_bytes < 0:
            raise ValueError("storage quota, free floor and minimum free space must be >= 0 bytes")
        self.quota_bytes = quota_bytes
        self.free_floor_bytes = free_floor_bytes
        self.min_free_bytes = min_free_bytes
        self.write_budget = write_budget

    def disk_full(self, free_bytes):
        return free_bytes is not None and free_bytes < self.min_free_bytes

    def admit(self, size, used_bytes, free_bytes, now_ms, reusable_bytes=0):
        """May a message of `size` bytes be stored, given messages use `used_bytes`, the
        filesystem has `free_bytes` free (None when unknown) and the database file has
        `reusable_bytes` of free pages?"""
        if not self.write_budget.allows(size, now_ms):
            return Admission(REFUSE, 0, "daily SD write budget spent (%d of %d bytes); stores "
                             "resume at local midnight" % (self.write_budget.written,
                                                           self.write_budget.budget_bytes))
        if self.disk_full(free_bytes):
            return Admission(REFUSE, 0, "data partition full (%d bytes free, at least %d "
                             "needed)" % (free_bytes, self.min_free_bytes))
        need = 0
        if self.quota_bytes and used_bytes + size > self.quota_bytes:
            need = used_bytes + size - self.quota_bytes
        if self.free_floor_bytes and free_bytes is not None:
            short = self.free_floor_bytes - (free_bytes + reusable_bytes - size)
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

    def over_limits(self, used_bytes, free_bytes, reusable_bytes=0):
        """Bytes to evict now to get back under quota and above the floor (0 if none)."""
        need = 0
        if self.quota_bytes and used_bytes > self.quota_bytes:
            need = used_bytes - self.quota_bytes
        if self.free_floor_bytes and free_bytes is not None:
            short = self.free_floor_bytes - (free_bytes + reusable_bytes)
            if short > need:
                need = short
        return need

    def space_problem(self, free_bytes, reusable_bytes=0):
        """The "storage trouble" reason for the free space alone, or None."""
        if free_bytes is None:
            return None
        if self.disk_full(free_bytes):
            return ("data partition full: %d bytes free; stores are refused until space is "
                    "freed on it" % free_bytes)
        if self.free_floor_bytes and free_bytes + reusable_bytes < self.free_floor_bytes:
            return ("data partition nearly full: %d MB free, floor %d MB"
                    % ((free_bytes + reusable_bytes) // 1000000, self.free_floor_bytes // 1000000))
        return None
