"""Storage guard: quota and free-space floor by eviction, and the SD card's daily write budget.

Decisions come from `hal.core.storage` (pure); this service feeds it the store's running totals
(no I/O per store), the filesystem's free space and the card's sectors-written counter, and
applies the result: it evicts through the store (expired first, then soonest to expire) and
refuses stores with `full` or `write_budget` and a message saying why and until when.

Nothing here may stop the node: a full, read-only or failing disk is a *state* the guard
reports (`problem`, shown as `storage_trouble`), never an exception out of `run`. A node that
cannot store can still serve what it holds, and it must come back by itself once space is
freed -- on the appliance a crash loop means a box nobody can reach.
"""

import time

import trio

from firmware.proto.errors import StorageFull, WriteBudgetSpent
from firmware.store import StoreError, StoreFull
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
        self.free_bytes = None  # file system free space minus what the space reserve lacks
        self.evicted = {"messages": 0, "bytes": 0}
        self.evict_error = None  # why the last eviction failed, until one succeeds
        self._lock = trio.Lock()
        self._budget_refused_day = None  # a store was refused for the budget on this day

    def observe(self):
        """Feed the write budget from the card's counter (or the store's own byte count), and
        read the free space (a released space reserve counts as used: it will be taken back)."""
        now = self.clock_ms()
        total = self.block_stats.written_bytes() if self.block_stats is not None else None
        if total is None:
            total = self.store.bytes_written
            self.source = "node"
        else:
            self.source = "disk"
        self.budget.observe_total(total, now)
        free = self.disk_space.free_bytes()
        if free is not None:
            free = max(0, free - self.store.reserve.missing_bytes())
        self.free_bytes = free

    def _used(self):
        return self.store.used_bytes

    async def _evict(self, need, why):
        try:
            async with self._lock:
                n, freed = await self.store.evict(need)
        except StoreError as e:
            self.evict_error = str(e)
            self.log.warning("storage_evict_failed", need_bytes=need, error=str(e)[:300])
            raise
        self.evict_error = None
        self.evicted["messages"] += n
        self.evicted["bytes"] += freed
        if n:
            self.log.info("storage_evicted", messages=n, bytes=freed, reason=why)
        return freed

    async def admit_store(self, size):
        """Raise StorageFull / WriteBudgetSpent, or return once `size` bytes may be stored."""
        now = self.clock_ms()
        a = self.policy.admit(size, self._used(), self.free_bytes, now, self.store.reusable_bytes)
        if a.verdict == REFUSE:
            if not self.budget.allows(size, now):
                self._budget_refused_day = self.budget.day
                raise WriteBudgetSpent(f"this node's SD card write budget for today is spent: "
                                       f"{a.reason}; store elsewhere")
            raise StorageFull(f"this node cannot take it: {a.reason}; store elsewhere")
        if a.verdict == EVICT:
            try:
                freed = await self._evict(a.need_bytes, a.reason)
            except StoreFull as e:
                raise StorageFull(f"this node is full ({e}); store elsewhere") from None
            if freed < a.need_bytes:
                raise StorageFull(f"this node is full ({a.reason}; only {freed} bytes could be "
                                  "evicted); store elsewhere")

    async def check(self):
        """One periodic round: observe, evict back under the limits, update `problem`."""
        try:
            self.observe()
        except Exception as e:  # a sensor bug must not stop the guard
            self.log.warning("storage_observe_failed", error=f"{type(e).__name__}: {e}")
        if self.policy.disk_full(self.free_bytes):
            # Evicting frees pages inside the file, not disk space: the WAL's space is what can
            # be given back (best effort: copying it into the file may need room itself).
            await self.store.release_wal_space()
        else:
            need = self.policy.over_limits(self._used(), self.free_bytes,
                                           self.store.reusable_bytes)
            if need > 0:
                try:
                    await self._evict(need, "over quota or below the free-space floor")
                except StoreError:
                    pass  # evict_error holds the reason; retried next round
        self._update_problem()

    def _update_problem(self):
        now = self.clock_ms()
        write_problem = getattr(self.store, "write_problem", None)
        problem = self.policy.space_problem(self.free_bytes, self.store.reusable_bytes)
        if problem is None and write_problem:
            problem = f"the message store cannot write: {write_problem}"
        if problem is None and self.evict_error:
            problem = f"cannot evict to make room: {self.evict_error}"
        if problem is None and (self.budget.spent(now)
                                or self._budget_refused_day == self.budget.day):
            problem = (f"daily SD write budget spent ({self.budget.written // MB} of "
                       f"{self.cfg.daily_write_budget_mb} MB); stores resume at local midnight")
        if problem != self.problem:
            if problem:
                self.log.warning("storage_trouble", reason=problem)
            else:
                self.log.info("storage_ok")
            self.problem = problem

    async def _round(self):
        try:
            await self.check()
        except Exception as e:  # a bug here must cost one round, never the node
            self.problem = f"storage check failed: {type(e).__name__}: {e}"[:300]
            self.log.error("storage_check_bug", error=self.problem)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        await self._round()
        task_status.started()
        while True:
            await trio.sleep(self.cfg.check_interval)
            await self._round()

    def info(self):
        now = self.clock_ms()
        return {"free_bytes": self.free_bytes, "free_floor_bytes": self.cfg.free_floor_mb * MB,
                "reusable_bytes": self.store.reusable_bytes,
                "reserve_held": self.store.reserve.held,
                "written_today_bytes": self.budget.written_today(now),
                "write_budget_bytes": self.budget.budget_bytes, "write_source": self.source,
                "evicted_messages": self.evicted["messages"], "problem": self.problem}
