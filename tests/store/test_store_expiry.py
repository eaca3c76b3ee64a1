"""Expiry: hidden at once, swept on time in small batches; eviction order for the storage guard.

These use a manual MockClock, not autojump: autojump treats a task waiting for a worker thread
(every commit) as idle and would jump to the sweeper's next wake-up mid-commit.
"""

import sqlite3

import trio

from .conftest import BASE_MS, make_msg, until


def rows(db_path) -> int:
    with sqlite3.connect(db_path) as c:
        return c.execute("SELECT count(*) FROM messages").fetchone()[0]


async def put_all(store, msgs):
    async with trio.open_nursery() as n:
        for m in msgs:
            n.start_soon(store.put, m)


async def test_expired_hidden_at_once_and_swept_on_time(running, mock_clock, db_path):
    store = await running(batch_ms=0, sweep_every_s=30)
    short = make_msg(1, expiry=BASE_MS + 10_000)
    long = make_msg(2, expiry=BASE_MS + 3_600_000)
    await put_all(store, [short, long])
    mock_clock.jump(9)
    assert len((await store.retrieve(b"R" * 32, 0, None, 10, 10**6))[0]) == 2
    mock_clock.jump(1)  # short has expired, the sweeper has not run yet
    assert (await store.retrieve(b"R" * 32, 0, None, 10, 10**6))[0] == [long]
    assert await store.hashes_for(b"R" * 32) == [(0, long.hash, long.expiry)]
    await trio.testing.wait_all_tasks_blocked()
    assert rows(db_path) == 2
    batches = store.stats()["batches"]
    mock_clock.jump(19.9)
    await trio.testing.wait_all_tasks_blocked()
    assert store.stats()["batches"] == batches  # no sweep yet
    mock_clock.jump(0.1)  # t = 30: the sweeper runs
    await until(lambda: store.stats()["commits"] == batches + 1)
    assert rows(db_path) == 1
    assert (store.stats()["count"], store.stats()["bytes"]) == (1, len(long.data))
    # retrieving after the swept message's hash starts over from the oldest
    assert (await store.retrieve(b"R" * 32, 0, short.hash, 10, 10**6))[0] == [long]


async def test_sweep_deletes_in_small_batches(running, mock_clock, db_path):
    store = await running(batch_ms=0, batch_rows=1000, sweep_every_s=3600, sweep_batch=100)
    msgs = [make_msg(i, size=10, expiry=BASE_MS + 1000 + i) for i in range(250)]
    keep = make_msg(999, expiry=BASE_MS + 10**9)
    await put_all(store, [*msgs, keep])
    mock_clock.jump(2)
    commits = store.stats()["commits"]
    assert await store.sweep_expired() == 250
    assert store.stats()["commits"] - commits == 3  # 100 + 100 + 50 rows
    assert rows(db_path) == 1
    assert store.stats()["count"] == 1


async def test_evict_removes_expired_then_soonest_to_expire(running, mock_clock):
    store = await running(batch_ms=0, sweep_every_s=3600, sweep_batch=2)
    expired = make_msg(1, size=100, expiry=BASE_MS + 1)
    soon = make_msg(2, size=100, expiry=BASE_MS + 60_000)
    later = make_msg(3, size=100, expiry=BASE_MS + 120_000)
    latest = make_msg(4, size=100, expiry=BASE_MS + 180_000)
    await put_all(store, [latest, soon, expired, later])
    mock_clock.jump(1)
    assert await store.evict(150) == (2, 200)  # expired, then soon
    assert await store.get_many(b"R" * 32, 0, [m.hash for m in (expired, soon, later, latest)]) \
        == [later, latest]
    assert await store.evict(10**6) == (2, 200)
    assert await store.evict(1) == (0, 0)
    assert store.stats()["bytes"] == 0


async def test_retrieve_skips_runs_of_expired_messages(running, mock_clock):
    store = await running(batch_ms=0, sweep_every_s=3600)
    # 7 expire at t=5 s, then 2 live, 4 expired, 3 live: more expired in a row than max_count
    plan = [5] * 7 + [100] * 2 + [5] * 4 + [100] * 3
    msgs = [make_msg(i, expiry=BASE_MS + s * 1000) for i, s in enumerate(plan)]
    for m in msgs:
        await store.put(m)
    mock_clock.jump(10)
    live = [m for m, s in zip(msgs, plan, strict=True) if s == 100]
    got, more = await store.retrieve(b"R" * 32, 0, None, 3, 10**6)
    assert got == live[:3] and more
    got, more = await store.retrieve(b"R" * 32, 0, got[-1].hash, 3, 10**6)
    assert got == live[3:] and not more
    got, more = await store.retrieve(b"R" * 32, 0, None, 5, 10**6)
    assert got == live and not more
