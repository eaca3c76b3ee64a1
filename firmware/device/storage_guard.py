"""Storage guard: quota and free-space floor by eviction, and the SD card's daily write budget.

Decisions come from `hal.core.storage` (pure); this service feeds it the store's totals, the
filesystem's free space and the card's sectors-written counter, and applies the result: it
evicts through the store (expired first, then soonest to expire) and refuses stores with
`full` or `write_budget` and a message saying why and until when.
"""

import time

import trio

from firmware.proto.errors import StorageFull, WriteBudgetSpent
from hal.core.storage import EVICT, REFUSE, StoragePolicy, WriteBudget

MB = 1_000_000


def local_offset_ms(now_ms):
    return int(time.localtime(now_ms / 1000).tm_gmtoff) * 1000


class StorageGuard:
    def __init__(self, store, cfg, disk_space, block_stats, clock_ms, log):
        self.store = store
        self.cfg = cfg
        self.disk_space = disk_space
        self.block_stats = block_stats
        self.clock_ms = clock_ms
        self.log = log
        now = clock_ms()
        self.budget = WriteBudget(cfg.daily_write_budget_mb * MB, now, local_offset_ms(now))
        self.policy = StoragePolicy(store.quota_bytes, cfg.free_floor_mb * MB, self.budget)
        self.source = "disk" if block_stats is not None else "node"
        self.problem = None  # reason shown as "storage trouble", or None
        self.free_bytes = None
        self.evicted = {"messages": 0, "bytes": 0}
        self._lock = trio.Lock()
        self._budget_refused_day = None  # a store was refused for the budget on this day

    def observe(self):
        """Feed the write budget from the card's counter (or the store's own byte count)."""
        now = self.clock_ms()
        total = self.block_stats.written_bytes() if self.block_stats is not None else None
        if total is None:
            total = self.store.stats()["bytes_written"]
            self.source = "node"
        else:
            self.source = "disk"
        self.budget.observe_total(total, now)
        self.free_bytes = self.disk_space.free_bytes()

    def _used(self):
        st = self.store.stats()
        return st["bytes"] + st["pending_bytes"]

    async def _evict(self, need, why):
        async with self._lock:
            n, freed = await self.store.evict(need)
        self.evicted["messages"] += n
        self.evicted["bytes"] += freed
        if n:
            self.log.info("storage_evicted", messages=n, bytes=freed, reason=why)
        return freed

    async def admit_store(self, size):
        """Raise StorageFull / WriteBudgetSpent, or return once `size` bytes may be stored."""
        now = self.clock_ms()
        a = self.policy.admit(size, self._used(), self.free_bytes, now)
        if a.verdict == REFUSE:
            if not self.budget.allows(size, now):
                self._budget_refused_day = self.budget.day
                raise WriteBudgetSpent(f"this node's SD card write budget for today is spent: "
                                       f"{a.reason}; store elsewhere")
            raise StorageFull(f"this node cannot take it: {a.reason}; store elsewhere")
        if a.verdict == EVICT:
            freed = await self._evict(a.need_bytes, a.reason)
            if freed < a.need_bytes:
                raise StorageFull(f"this node is full ({a.reason}; only {freed} bytes could be "
                                  "evicted); store elsewhere")

    async def check(self):
        """One periodic round: observe, evict back under the limits, update `problem`."""
        try:
            self.observe()
        except Exception as e:  # a sensor bug must not stop the guard
            self.log.warning("storage_observe_failed", error=f"{type(e).__name__}: {e}")
        need = self.policy.over_limits(self._used(), self.free_bytes)
        if need > 0:
            await self._evict(need, "over quota or below the free-space floor")
            self.free_bytes = self.disk_space.free_bytes()
        now = self.clock_ms()
        problem = None
        floor = self.cfg.free_floor_mb * MB
        if self.free_bytes is not None and floor and self.free_bytes < floor:
            problem = (f"data partition nearly full: {self.free_bytes // MB} MB free, floor "
                       f"{self.cfg.free_floor_mb} MB")
        elif self.budget.spent(now) or self._budget_refused_day == self.budget.day:
            problem = (f"daily SD write budget spent ({self.budget.written // MB} of "
                       f"{self.cfg.daily_write_budget_mb} MB); stores resume at local midnight")
        if problem != self.problem:
            if problem:
                self.log.warning("storage_trouble", reason=problem)
            else:
                self.log.info("storage_ok")
            self.problem = problem

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        await self.check()
        task_status.started()
        while True:
            await trio.sleep(self.cfg.check_interval)
            await self.check()

    def info(self):
        now = self.clock_ms()
        return {"free_bytes": self.free_bytes, "free_floor_bytes": self.cfg.free_floor_mb * MB,
                "written_today_bytes": self.budget.written_today(now),
                "write_budget_bytes": self.budget.budget_bytes, "write_source": self.source,
                "evicted_messages": self.evicted["messages"], "problem": self.problem}
