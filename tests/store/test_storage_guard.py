"""The storage guard with a real store: it reads the store's running totals, never evicts the
store away because deleting rows does not shrink the file, and no disk failure escapes it."""

from types import SimpleNamespace

import pytest
import trio

from firmware.device.storage_guard import StorageGuard
from firmware.proto.errors import StorageFull
from firmware.store import RESERVE_BYTES
from hal.core.storage import MIN_FREE_BYTES

from .conftest import make_msg

MB = 1_000_000


class Log:
    def __init__(self):
        self.events = []

    def _add(self, level, event, **kw):
        self.events.append((level, event, kw))

    def info(self, event, **kw):
        self._add("info", event, **kw)

    def warning(self, event, **kw):
        self._add("warning", event, **kw)

    def error(self, event, **kw):
        self._add("error", event, **kw)


class Disk:
    """The file system's free space as the guard's hal backend reports it."""

    def __init__(self, free):
        self.free = free

    def free_bytes(self):
        return self.free


def guard_for(store, disk, *, floor_mb=0, interval=1.0, now_ms=lambda: 1_700_000_000_000):
    cfg = SimpleNamespace(free_floor_mb=floor_mb, daily_write_budget_mb=0,
                          check_interval=interval)
    return StorageGuard(store, cfg, disk, None, now_ms, Log())


async def test_used_bytes_come_from_the_running_totals_not_stat_calls(running, monkeypatch):
    store = await running()
    await store.put(make_msg(1, size=500))

    def no_stats():
        raise AssertionError("the guard must not call stats() (three stat calls per store)")

    monkeypatch.setattr(store, "stats", no_stats)
    guard = guard_for(store, Disk(10**12))
    await guard.check()
    for _ in range(3):
        await guard.admit_store(1000)
    assert guard._used() == 500


async def test_eviction_below_the_floor_happens_once_not_every_round(running):
    """Deleting rows frees pages inside the file, not disk space: with the disk figure alone the
    guard evicted the same shortfall again every round until the store was empty."""
    store = await running(reserve_bytes=0)
    for i in range(10):
        await store.put(make_msg(i, size=100_000))
    disk = Disk(2 * MB - 250_000)  # 250 kB short of a 2 MB floor; deletes do not change it
    guard = guard_for(store, disk, floor_mb=2)
    await guard.check()
    after_first = store.stats()["count"]
    assert after_first in (7, 6)  # ~250 kB evicted: 3 messages (or 4 by page rounding)
    assert guard.evicted["messages"] == 10 - after_first
    for _ in range(5):
        await guard.check()
    assert store.stats()["count"] == after_first
    assert guard.problem is None  # the store has room again: reusable pages cover the floor
    await guard.admit_store(50_000)  # and new messages fit into them without more eviction
    assert store.stats()["count"] == after_first


async def test_a_full_disk_is_a_state_not_an_exception(running):
    store = await running()
    disk = Disk(0)
    guard = guard_for(store, disk, floor_mb=1)
    await guard.check()
    assert "data partition full: 0 bytes free" in guard.problem
    with pytest.raises(StorageFull, match="data partition full"):
        await guard.admit_store(100)
    disk.free = 500 * MB
    await guard.check()
    assert guard.problem is None
    await guard.admit_store(100)


async def test_a_released_reserve_counts_as_used_space(running):
    store = await running()
    assert store.reserve.held
    store.reserve.release()
    guard = guard_for(store, Disk(RESERVE_BYTES + MIN_FREE_BYTES // 2))
    await guard.check()  # free for the policy: what is left once the reserve is made again
    assert guard.free_bytes == MIN_FREE_BYTES // 2
    assert "data partition full" in guard.problem
    assert guard.info()["reserve_held"] is False


async def test_failed_eviction_never_escapes_check_or_run(open_store, mock_clock):
    store = open_store()  # never started: every write fails with StoreClosed
    disk = Disk(2 * MB)
    guard = guard_for(store, disk, floor_mb=5, interval=1.0)
    store._bytes = 10 * MB  # the totals say there is plenty to evict
    await guard.check()
    assert guard.problem and "cannot evict" not in guard.problem  # below the floor says so
    assert guard.evict_error and "not running" in guard.evict_error
    async with trio.open_nursery() as n:
        await n.start(guard.run)
        for _ in range(5):
            mock_clock.jump(1.0)
            await trio.testing.wait_all_tasks_blocked()
        n.cancel_scope.cancel()
    assert any(e[1] == "storage_evict_failed" for e in guard.log.events)


async def test_a_store_that_cannot_write_shows_why(running):
    store = await running()
    guard = guard_for(store, Disk(10**12))
    store._committer.write_problem = "cannot use /data/messages.sqlite3: /data is on a read-only file system"
    await guard.check()
    assert guard.problem.startswith("the message store cannot write: ")
    assert "read-only file system" in guard.problem
