"""Grouped commits: when a batch closes, and that put() acknowledges only committed rows."""

import sqlite3

import pytest
import trio
import trio.testing

from firmware.store import Message, StoreClosed, StoreError

from .conftest import make_msg


class Putter:
    """Runs puts in background tasks and records when each one returned."""

    def __init__(self, store, nursery):
        self.store, self.nursery = store, nursery
        self.done: dict[bytes, float] = {}
        self.errors: dict[bytes, BaseException] = {}

    def start(self, msgs):
        for m in msgs:
            self.nursery.start_soon(self._put, m)

    async def _put(self, m):
        try:
            await self.store.put(m)
        except Exception as e:
            self.errors[m.hash] = e
        self.done[m.hash] = trio.current_time()


def visible(db_path, h) -> bool:
    """Seen by an independent connection, i.e. committed."""
    with sqlite3.connect(db_path) as c:
        return c.execute("SELECT 1 FROM messages WHERE hash=?", (h,)).fetchone() is not None


async def test_batch_closes_at_batch_rows_without_waiting(running, mock_clock, nursery):
    store = await running(batch_rows=64, batch_ms=50)
    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        Putter(store, n).start([make_msg(i) for i in range(64)])
    assert trio.current_time() == t0  # no timer fired: the 64th row closed the batch
    assert store.stats()["commits"] == 1
    assert store.stats()["count"] == 64


async def test_batch_closes_after_batch_ms(running, mock_clock, db_path):
    store = await running(batch_rows=64, batch_ms=50)
    msgs = [make_msg(i) for i in range(65)]
    t0 = trio.current_time()
    async with trio.open_nursery() as n:
        p = Putter(store, n)
        p.start(msgs)
        while len(p.done) < 64:  # the first 64 commit at once...
            await trio.sleep(0.0)
            await trio.to_thread.run_sync(lambda: None)  # let worker threads finish
        assert store.stats()["commits"] == 1
        assert trio.current_time() == t0
        last = next(m for m in msgs if m.hash not in p.done)
        # ...the 65th waits for its batch's 50 ms timer
        mock_clock.jump(0.049)
        await trio.testing.wait_all_tasks_blocked()
        assert store.stats()["batches"] == 1
        assert not visible(db_path, last.hash)
        mock_clock.jump(0.001)
    assert p.done[last.hash] == pytest.approx(t0 + 0.050)
    assert store.stats()["commits"] == 2
    assert visible(db_path, last.hash)


async def test_put_returns_only_after_commit(running, mock_clock, db_path, nursery):
    store = await running(batch_rows=64, batch_ms=50)
    m = make_msg(1)
    p = Putter(store, nursery)
    p.start([m])
    await trio.testing.wait_all_tasks_blocked()
    assert m.hash not in p.done
    assert not visible(db_path, m.hash)
    assert store.stats()["commits"] == 0
    mock_clock.jump(0.05)
    while m.hash not in p.done:
        await trio.sleep(0)
    assert visible(db_path, m.hash)  # committed before put() returned
    assert store.stats()["commits"] == 1


async def test_every_commit_is_synchronous_full(open_store):
    store = open_store()
    # FULL: the WAL is fsync'd at each commit, so a commit is durable against power loss
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert store._writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_flush_commits_queued_writes_now(running, autojump_clock, db_path, nursery):
    store = await running(batch_rows=1000, batch_ms=10_000)
    m = make_msg(1)
    Putter(store, nursery).start([m])
    await trio.testing.wait_all_tasks_blocked()
    await store.flush()
    assert visible(db_path, m.hash)


async def test_shutdown_fails_uncommitted_puts_with_store_closed(open_store, mock_clock, db_path):
    store = open_store(batch_ms=50)
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as svc:
            await svc.start(store.run)
            p = Putter(store, outer)
            p.start([make_msg(1), make_msg(2)])
            await trio.testing.wait_all_tasks_blocked()
            svc.cancel_scope.cancel()
    assert len(p.errors) == 2
    assert all(isinstance(e, StoreClosed) for e in p.errors.values())
    assert not visible(db_path, make_msg(1).hash)


async def test_a_bad_row_fails_alone_not_its_batch(running, autojump_clock):
    store = await running(batch_rows=3, batch_ms=50)
    good = [make_msg(1), make_msg(2)]
    bad = Message(b"\x09" * 32, b"R" * 32, 0, 2**64, 2, b"x")  # ts does not fit SQLite
    async with trio.open_nursery() as n:
        p = Putter(store, n)
        p.start([good[0], bad, good[1]])
    assert set(p.errors) == {bad.hash}
    assert isinstance(p.errors[bad.hash], StoreError)
    assert "too large" in str(p.errors[bad.hash])
    assert store.stats()["count"] == 2
    assert store.stats()["commits"] == 2  # the batch failed, then the good rows one by one
    got, _ = await store.retrieve(b"R" * 32, 0, None, 10, 10**6)
    assert {m.hash for m in got} == {m.hash for m in good}


async def test_put_rejects_wrong_types_clearly(running):
    store = await running()
    with pytest.raises(ValueError, match="hash must be 32 bytes"):
        await store.put(Message(b"short", b"R" * 32, 0, 1, 2, b"x"))
    with pytest.raises(ValueError, match="data must be bytes"):
        await store.put(Message(b"h" * 32, b"R" * 32, 0, 1, 2, "text"))


# -- adaptive group commit (batch_ms=0, the default) ----------------------------------------


async def test_a_lone_put_commits_at_once(running, mock_clock, db_path):
    store = await running()  # batch_ms=0
    t0 = trio.current_time()
    m = make_msg(1)
    assert (await store.put(m)).is_new
    assert trio.current_time() == t0  # no timer was waited for (the clock never moved)
    assert visible(db_path, m.hash)
    assert (store.stats()["batches"], store.stats()["commits"]) == (1, 1)


async def test_sequential_puts_commit_one_by_one_without_waiting(running, mock_clock):
    store = await running()
    t0 = trio.current_time()
    for i in range(20):
        await store.put(make_msg(i))
    assert trio.current_time() == t0
    assert store.stats()["commits"] == 20


async def test_puts_arriving_during_a_commit_share_the_next_one(running, mock_clock, nursery):
    store = await running(batch_rows=64)
    first, rest = make_msg(0), [make_msg(i) for i in range(1, 11)]
    async with store._committer._lock:  # the first commit is "in progress" until released
        p = Putter(store, nursery)
        p.start([first])
        await trio.testing.wait_all_tasks_blocked()
        assert store.stats()["batches"] == 1  # taken alone: nothing else was waiting
        p.start(rest)
        await trio.testing.wait_all_tasks_blocked()
        assert not p.done
    while len(p.done) < 11:
        await trio.sleep(0)
        await trio.to_thread.run_sync(lambda: None)
    st = store.stats()
    assert (st["batches"], st["commits"], st["ops_committed"]) == (2, 2, 11)
    assert all(p.done[m.hash] == p.done[first.hash] for m in rest)  # no virtual time passed


async def test_puts_queued_together_commit_together(running, mock_clock):
    store = await running(batch_rows=16)
    async with trio.open_nursery() as n:
        Putter(store, n).start([make_msg(i) for i in range(40)])
    st = store.stats()
    assert st["ops_committed"] == 40 and st["commits"] <= 4  # 16 + 16 + 8, give or take one
